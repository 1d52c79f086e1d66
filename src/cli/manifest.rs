//! `tmc syncer-manifest`: what a cluster admin applies to run a pull-mode syncer beside a
//! physical cluster, in the spirit of `kubectl kcp workload sync`.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use super::{CliError, parse_workspace};
use crate::kcp::WorkspacePath;
use crate::syncer::resources::default_resources;

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Name of the SyncTarget the syncer serves.
    #[arg(env = "TMC_SYNC_TARGET_NAME")]
    pub sync_target_name: String,

    /// Path of the workspace holding the SyncTarget.
    #[arg(long, env = "TMC_WORKSPACE", value_parser = parse_workspace)]
    pub workspace: WorkspacePath,

    /// Kubeconfig the syncer uses to reach kcp; it is embedded in a Secret of the manifest.
    #[arg(long, env = "TMC_SYNCER_KCP_KUBECONFIG")]
    pub kcp_kubeconfig: PathBuf,

    /// Container image that holds the `tmc` binary.
    #[arg(long, env = "TMC_SYNCER_IMAGE")]
    pub image: String,

    /// Namespace in the physical cluster for the syncer.
    #[arg(long, env = "TMC_SYNCER_NAMESPACE", default_value = "kcp-tmc-syncer")]
    pub namespace: String,

    /// An API beyond the defaults that the SyncTarget's spec.supportedAPIs lists, as
    /// `<plural>.<group>` (for example `widgets.example.dev`): the syncer's ClusterRole gets
    /// access to it. Repeat for several.
    #[arg(long = "resource", env = "TMC_SYNCER_RESOURCES", value_delimiter = ',', value_parser = parse_resource)]
    pub resources: Vec<(String, String)>,
}

/// `<plural>.<group>` → (group, plural); a bare plural is the core group.
fn parse_resource(s: &str) -> Result<(String, String), String> {
    let (plural, group) = s.split_once('.').unwrap_or((s, ""));
    let valid = |part: &str| part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if plural.is_empty() || !valid(plural) || !valid(group) {
        return Err(format!("{s:?} is not <plural>.<group> (lower case), e.g. widgets.example.dev"));
    }
    Ok((group.to_string(), plural.to_string()))
}

/// The objects of the manifest, in apply order.
pub fn manifest(args: &ManifestArgs, kcp_kubeconfig: &str) -> Vec<Value> {
    let name = format!("syncer-{}", args.sync_target_name);
    let ns = args.namespace.as_str();
    let labels = json!({ "app.kubernetes.io/name": "kcp-tmc-syncer", "tmc.kcp.io/sync-target": args.sync_target_name });
    // Least privilege: namespaces it creates and removes, the synced APIs, and reading the
    // autoscalers whose Deployments' replica counts it must leave alone; nothing else.
    let mut rules = vec![
        json!({
            "apiGroups": [""], "resources": ["namespaces"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        }),
        json!({ "apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["get", "list", "watch"] }),
    ];
    let extra = args.resources.iter().cloned();
    for (group, plural) in default_resources().into_iter().map(|r| (r.api.group, r.api.plural)).chain(extra) {
        rules.push(json!({
            "apiGroups": [group], "resources": [plural],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }));
    }
    vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels } }),
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name, "namespace": ns, "labels": labels } }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": { "name": format!("kcp-tmc-{name}"), "labels": labels }, "rules": rules }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": { "name": format!("kcp-tmc-{name}"), "labels": labels },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("kcp-tmc-{name}") },
                "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }] }),
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": format!("{name}-kcp"), "namespace": ns, "labels": labels },
                "type": "Opaque", "stringData": { "kubeconfig": kcp_kubeconfig } }),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": name, "namespace": ns, "labels": labels },
                "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": labels },
                    "template": {
                        "metadata": { "labels": labels },
                        "spec": {
                            "serviceAccountName": name,
                            "containers": [{
                                "name": "syncer",
                                "image": args.image,
                                "args": ["syncer", "--kubeconfig=/etc/tmc/kcp/kubeconfig",
                                         format!("--workspace={}", args.workspace),
                                         format!("--sync-target-name={}", args.sync_target_name)],
                                "volumeMounts": [{ "name": "kcp", "mountPath": "/etc/tmc/kcp", "readOnly": true }],
                                "ports": [{ "name": "metrics", "containerPort": 8080 }, { "name": "health", "containerPort": 8081 }],
                                "livenessProbe": { "httpGet": { "path": "/healthz", "port": "health" } },
                                "readinessProbe": { "httpGet": { "path": "/readyz", "port": "health" } },
                                "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                                     "runAsNonRoot": true, "capabilities": { "drop": ["ALL"] } },
                            }],
                            "volumes": [{ "name": "kcp", "secret": { "secretName": format!("{name}-kcp") } }],
                        },
                    },
                },
        }),
    ]
}

pub fn run(args: &ManifestArgs) -> Result<(), CliError> {
    let kubeconfig = std::fs::read_to_string(&args.kcp_kubeconfig).map_err(|e| {
        CliError::Failed(format!(
            "cannot read {}: {e}\n  fix: pass --kcp-kubeconfig with the kubeconfig the syncer should use for kcp",
            args.kcp_kubeconfig.display()
        ))
    })?;
    for object in manifest(args, &kubeconfig) {
        let yaml = serde_yaml::to_string(&object).map_err(|e| CliError::Failed(e.to_string()))?;
        super::emit(&format!("---\n{yaml}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ManifestArgs {
        ManifestArgs {
            sync_target_name: "east".into(),
            workspace: "root:team".parse().unwrap(),
            kcp_kubeconfig: "/dev/null".into(),
            image: "registry.example/tmc:v1".into(),
            namespace: "kcp-tmc-syncer".into(),
            resources: vec![],
        }
    }

    #[test]
    fn manifest_shape_and_least_privilege() {
        let objects = manifest(&args(), "kubeconfig-text");
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret", "Deployment"]);
        let rules = objects[2]["rules"].as_array().unwrap();
        let resources: Vec<&str> = rules.iter().map(|r| r["resources"][0].as_str().unwrap()).collect();
        assert_eq!(
            resources,
            ["namespaces", "horizontalpodautoscalers", "deployments", "services", "configmaps", "secrets"]
        );
        assert!(rules.iter().all(|r| !r["verbs"].to_string().contains('*')), "no wildcard verbs");
        let container = &objects[5]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example/tmc:v1");
        let argv = container["args"].to_string();
        assert!(argv.contains("--workspace=root:team") && argv.contains("--sync-target-name=east"), "{argv}");
        assert_eq!(objects[4]["stringData"]["kubeconfig"], "kubeconfig-text");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    }

    #[test]
    fn extra_resources_get_rules() {
        let cases = [
            ("widgets.example.dev", Ok(("example.dev", "widgets"))),
            ("serviceaccounts", Ok(("", "serviceaccounts"))),
            ("Widgets.example.dev", Err(())),
            (".example.dev", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_resource(input);
            assert_eq!(got.as_ref().map(|(g, p)| (g.as_str(), p.as_str())).map_err(|_| ()), want, "{input}");
        }
        let mut a = args();
        a.resources = vec![("example.dev".into(), "widgets".into())];
        let objects = manifest(&a, "k");
        let last = objects[2]["rules"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (last["apiGroups"][0].as_str(), last["resources"][0].as_str()),
            (Some("example.dev"), Some("widgets"))
        );
    }
}
