//! `tmc syncer-manifest`: what a cluster admin applies to run a pull-mode syncer beside a
//! physical cluster, in the spirit of `kubectl kcp workload sync`.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use super::{CliError, parse_workspace};
use crate::kcp::WorkspacePath;
use crate::syncer::access;
use crate::syncer::resources::default_resources;
use kube::core::{ApiResource, GroupVersionKind};

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
    /// `<plural>.<group>` (for example `widgets.example.dev`): the syncer's ClusterRoles get
    /// access to it (cluster-wide list and watch, writes in its own namespaces). Repeat for
    /// several.
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

/// A namespaced API the syncer syncs: (group, plural, whether it is watched per namespace).
type SyncedApi = (String, String, bool);

/// The default APIs and `extra` ones, without duplicates, in order.
fn synced_apis(extra: &[(String, String)]) -> Vec<SyncedApi> {
    let defaults = default_resources().into_iter().map(|r| (r.api.group.clone(), r.api.plural.clone(), r.api));
    let extra = extra
        .iter()
        .map(|(g, p)| (g.clone(), p.clone(), ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, "", ""), p)));
    let mut seen = std::collections::HashSet::new();
    defaults
        .chain(extra)
        .filter(|(g, p, _)| seen.insert((g.clone(), p.clone())))
        .map(|(g, p, api)| (g, p, access::watched_per_namespace(&api)))
        .collect()
}

/// What the syncer may do anywhere in the cluster: create namespaces (and read them: its
/// namespace watch, ownership checks, heartbeat probe), bind itself to its namespace role,
/// and watch what it syncs except Secrets plus the autoscalers it must not fight. No write
/// of any existing object, and no Secret read: both would reach far beyond its namespaces.
fn cluster_rules(resources: &[SyncedApi], namespace_role: &str) -> Vec<Value> {
    let mut rules = vec![
        json!({ "apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch", "create"] }),
        json!({ "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"] }),
        json!({ "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"],
                "resourceNames": [namespace_role] }),
        json!({ "apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list", "watch"] }),
    ];
    for (group, plural, _) in resources.iter().filter(|(_, _, per_namespace)| !per_namespace) {
        rules.push(json!({ "apiGroups": [group], "resources": [plural], "verbs": ["list", "watch"] }));
    }
    rules
}

/// What the syncer may do inside each namespace it created (bound there by a RoleBinding it
/// creates): write what it syncs, read Secrets, and delete the namespace itself (a RoleBinding
/// in a namespace covers `DELETE /api/v1/namespaces/<it>`).
fn namespace_rules(resources: &[SyncedApi]) -> Vec<Value> {
    let mut rules = vec![json!({ "apiGroups": [""], "resources": ["namespaces"], "verbs": ["delete"] })];
    for (group, plural, per_namespace) in resources {
        let mut verbs = vec!["get", "create", "patch", "delete"];
        if *per_namespace {
            verbs.extend(["list", "watch"]);
        }
        rules.push(json!({ "apiGroups": [group], "resources": [plural], "verbs": verbs }));
    }
    rules
}

/// The admission policy that confines RoleBindings to the namespace role to namespaces whose
/// identity annotation names the requester: only namespaces the syncer itself created (it may
/// create namespaces but not update them). Without it, `bind` plus cluster-wide
/// `create rolebindings` would let a stolen syncer token grant itself Secrets anywhere.
fn binding_policy(name: &str, namespace_role: &str, labels: &Value) -> Value {
    let annotation = access::IDENTITY_ANNOTATION;
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["rolebindings"],
            }] },
            "matchConditions": [{
                "name": "binds-the-namespace-role",
                "expression": format!("object.roleRef.kind == 'ClusterRole' && object.roleRef.name == '{namespace_role}'"),
            }],
            "validations": [{
                "expression": format!(
                    "has(namespaceObject.metadata.annotations) && '{annotation}' in namespaceObject.metadata.annotations \
                     && namespaceObject.metadata.annotations['{annotation}'] == request.userInfo.username"
                ),
                "message": format!("{namespace_role} may be bound only in a namespace the syncer created (annotation {annotation} naming the requester)"),
                "reason": "Forbidden",
            }],
        },
    })
}

/// The objects of the manifest, in apply order.
pub fn manifest(args: &ManifestArgs, kcp_kubeconfig: &str) -> Vec<Value> {
    let name = format!("syncer-{}", args.sync_target_name);
    let ns = args.namespace.as_str();
    let labels = json!({ "app.kubernetes.io/name": "kcp-tmc-syncer", "tmc.kcp.io/sync-target": args.sync_target_name });
    let resources = synced_apis(&args.resources);
    let cluster_role = format!("kcp-tmc-{name}");
    let namespace_role = access::namespace_role(&args.sync_target_name);
    vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels } }),
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name, "namespace": ns, "labels": labels } }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": { "name": cluster_role, "labels": labels }, "rules": cluster_rules(&resources, &namespace_role) }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": { "name": namespace_role, "labels": labels }, "rules": namespace_rules(&resources) }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": { "name": cluster_role, "labels": labels },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role },
                "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }] }),
        binding_policy(&cluster_role, &namespace_role, &labels),
        json!({ "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": { "name": cluster_role, "labels": labels },
                "spec": { "policyName": cluster_role, "validationActions": ["Deny"] } }),
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
                                // An environment variable, so an overlay that replaces the args keeps it.
                                "env": [{ "name": "TMC_SYNCER_NAMESPACE_ROLE", "value": namespace_role }],
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

    /// A rule as one line: "group/resource verbs [names]".
    fn flat(rules: &Value) -> Vec<String> {
        let list =
            |v: &Value| v.as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(",");
        rules
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let names = if r["resourceNames"].is_null() {
                    String::new()
                } else {
                    format!(" [{}]", list(&r["resourceNames"]))
                };
                format!("{}/{} {}{names}", list(&r["apiGroups"]), list(&r["resources"]), list(&r["verbs"]))
            })
            .collect()
    }

    #[test]
    fn manifest_shape() {
        let objects = manifest(&args(), "kubeconfig-text");
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRole",
                "ClusterRoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "Secret",
                "Deployment"
            ]
        );
        let container = &objects[8]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example/tmc:v1");
        let argv = container["args"].to_string();
        assert!(argv.contains("--workspace=root:team") && argv.contains("--sync-target-name=east"), "{argv}");
        assert_eq!(objects[7]["stringData"]["kubeconfig"], "kubeconfig-text");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        // The syncer binds the very role the manifest creates.
        assert_eq!(
            container["env"],
            json!([{ "name": "TMC_SYNCER_NAMESPACE_ROLE", "value": objects[3]["metadata"]["name"] }])
        );
    }

    #[test]
    fn cluster_role_is_the_minimum_and_reads_no_secret() {
        let objects = manifest(&args(), "k");
        assert_eq!(objects[2]["metadata"]["name"], "kcp-tmc-syncer-east");
        assert_eq!(
            flat(&objects[2]["rules"]),
            [
                "/namespaces get,list,watch,create",
                "rbac.authorization.k8s.io/rolebindings create",
                "rbac.authorization.k8s.io/clusterroles bind [kcp-tmc-syncer-east:namespace]",
                "autoscaling/horizontalpodautoscalers list,watch",
                "apps/deployments list,watch",
                "/services list,watch",
                "/configmaps list,watch",
            ]
        );
        // Bound cluster-wide to exactly that role, for the syncer's ServiceAccount.
        let binding = &objects[4];
        assert_eq!(binding["roleRef"]["name"], "kcp-tmc-syncer-east");
        assert_eq!(
            binding["subjects"],
            json!([{ "kind": "ServiceAccount", "name": "syncer-east", "namespace": "kcp-tmc-syncer" }])
        );
    }

    #[test]
    fn namespace_role_holds_the_writes_and_secret_reads() {
        let objects = manifest(&args(), "k");
        assert_eq!(objects[3]["metadata"]["name"], access::namespace_role("east"));
        assert_eq!(
            flat(&objects[3]["rules"]),
            [
                "/namespaces delete",
                "apps/deployments get,create,patch,delete",
                "/services get,create,patch,delete",
                "/configmaps get,create,patch,delete",
                "/secrets get,create,patch,delete,list,watch",
            ]
        );
    }

    #[test]
    fn binding_policy_confines_the_namespace_role() {
        let objects = manifest(&args(), "k");
        let (policy, binding) = (&objects[5], &objects[6]);
        assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        let condition = policy["spec"]["matchConditions"][0]["expression"].as_str().unwrap();
        assert!(condition.contains("object.roleRef.name == 'kcp-tmc-syncer-east:namespace'"), "{condition}");
        let check = policy["spec"]["validations"][0]["expression"].as_str().unwrap();
        assert!(
            check.contains(
                "namespaceObject.metadata.annotations['tmc.kcp.io/syncer-identity'] == request.userInfo.username"
            ),
            "{check}"
        );
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
        // A default named again gets no second rule.
        a.resources = vec![("example.dev".into(), "widgets".into()), ("".into(), "secrets".into())];
        let objects = manifest(&a, "k");
        let (cluster, namespace) = (flat(&objects[2]["rules"]), flat(&objects[3]["rules"]));
        assert_eq!(cluster.last().map(String::as_str), Some("example.dev/widgets list,watch"));
        assert_eq!(namespace.last().map(String::as_str), Some("example.dev/widgets get,create,patch,delete"));
        assert_eq!(namespace.iter().filter(|r| r.starts_with("/secrets")).count(), 1);
    }
}
