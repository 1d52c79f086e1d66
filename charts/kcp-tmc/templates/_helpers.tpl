{{/* The release's full name: the release name when it already says kcp-tmc. */}}
{{- define "kcp-tmc.fullname" -}}
{{- if contains "kcp-tmc" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kcp-tmc" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selects the manager's pods. The name label is also Prometheus' job (the TmcManagerDown alert matches job="tmc-manager"). */}}
{{- define "kcp-tmc.selectorLabels" -}}
app.kubernetes.io/name: tmc-manager
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kcp-tmc.labels" -}}
{{ include "kcp-tmc.selectorLabels" . }}
app.kubernetes.io/part-of: kcp-tmc
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kcp-tmc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kcp-tmc.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
