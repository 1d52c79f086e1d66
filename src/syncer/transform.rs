//! The downstream object a syncer applies, built from scratch out of the upstream one.
//!
//! Only what the user declared goes down: kcp's bookkeeping (`kcp.io/cluster`, uid,
//! resourceVersion, managedFields, ownerReferences, finalizers) and the status stay behind, and
//! fields the physical cluster owns are left out so server-side apply never fights over them.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::naming::{ORIGIN_CLUSTER_LABEL, PREFIX, TARGET_LABEL};
use crate::apis::names::UPSYNCED_FROM_LABEL;
use crate::apis::placement::overrides::{self, TargetOverride};
use crate::kcp::cluster::CLUSTER_ANNOTATION;

/// Metadata annotations that never go downstream.
const DROPPED_ANNOTATIONS: &[&str] = &[CLUSTER_ANNOTATION, "kubectl.kubernetes.io/last-applied-configuration"];

/// Where the copy goes and who writes it.
#[derive(Clone, Debug)]
pub struct Destination<'a> {
    pub namespace: &'a str,
    pub target_key: &'a str,
    pub origin_cluster: &'a str,
}

/// Why an upstream object is not synced at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Created by kcp or by the cluster in every namespace (e.g. `kube-root-ca.crt`).
    ClusterProvided,
    /// Copied back from a cluster (`tmc.kcp.io/upsynced-from`): its original is there already,
    /// and syncing it down again would loop.
    Upsynced,
}

/// Objects every namespace gets from its own cluster (syncing kcp's copy would clash), and
/// objects copied back from a cluster.
pub fn skip_reason(kind: &str, upstream: &Value) -> Option<Skip> {
    let name = upstream["metadata"]["name"].as_str().unwrap_or_default();
    if upstream["metadata"]["labels"].get(UPSYNCED_FROM_LABEL).is_some() {
        return Some(Skip::Upsynced);
    }
    match kind {
        "ConfigMap" if name == "kube-root-ca.crt" => Some(Skip::ClusterProvided),
        "Secret" if upstream["type"] == "kubernetes.io/service-account-token" => Some(Skip::ClusterProvided),
        _ => None,
    }
}

/// The object to server-side apply downstream for `upstream`.
pub fn desired(upstream: &Value, dest: &Destination<'_>) -> Value {
    let meta = &upstream["metadata"];
    let mut metadata = json!({ "name": meta["name"], "namespace": dest.namespace, "labels": meta["labels"] });
    metadata["annotations"] = meta["annotations"].clone();
    let mut out = Map::new();
    out.insert("apiVersion".into(), upstream["apiVersion"].clone());
    out.insert("kind".into(), upstream["kind"].clone());
    out.insert("metadata".into(), metadata);
    if let Some(fields) = upstream.as_object() {
        for (k, v) in fields {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let mut out = Value::Object(out);
    seal(&mut out, dest);
    out
}

/// Makes a desired copy carry what every copy must and nothing a copy may not: our labels
/// (target, origin workspace) and no other `tmc.kcp.io` keys, no kcp annotations, no fields the
/// cluster owns. Run when the copy is built and again after overrides changed it.
pub fn seal(copy: &mut Value, dest: &Destination<'_>) {
    let meta = &copy["metadata"];
    let mut labels = string_map(&meta["labels"]);
    labels.retain(|k, _| !is_ours(k));
    labels.insert(TARGET_LABEL.into(), dest.target_key.into());
    labels.insert(ORIGIN_CLUSTER_LABEL.into(), dest.origin_cluster.into());
    let mut annotations = string_map(&meta["annotations"]);
    annotations.retain(|k, _| !DROPPED_ANNOTATIONS.contains(&k.as_str()) && !is_ours(k));
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("labels".into(), json!(labels));
        match annotations.is_empty() {
            true => meta.remove("annotations"),
            false => meta.insert("annotations".into(), json!(annotations)),
        };
    }
    drop_cluster_owned(copy);
}

/// Applies the per-target overrides in `list` that select the object (`group`/`kind` named
/// `name`) to its desired copy, then seals it again ([`seal`]). Returns the overrides applied,
/// or why the copy must not be written: an override failed, or `list` is unknown (its
/// annotation is unreadable). The copy is then as it was.
pub fn override_copy(
    copy: &mut Value,
    list: Result<&[TargetOverride], String>,
    (group, kind, name): (&str, &str, &str),
    dest: &Destination<'_>,
) -> Result<Vec<String>, String> {
    let applied = overrides::apply(copy, list?, group, kind, name).map_err(|e| e.to_string())?;
    if !applied.is_empty() {
        seal(copy, dest);
    }
    Ok(applied)
}

/// Sets `spec.replicas` of a desired object of a scalable kind to `share(total)` when that is
/// divided (`Some`), where `total` is what the tenant asked for: `spec.replicas`, or 1 for the
/// `apps` kinds, whose API defaults it. A custom kind without the field is left alone (its
/// default is its API's business).
pub fn divide_replicas(desired: &mut Value, group: &str, share: impl FnOnce(i64) -> Option<i64>) {
    let asked = desired["spec"]["replicas"].as_i64().or((group == "apps").then_some(1));
    if let Some(part) = asked.and_then(share)
        && let Some(spec) = desired.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("replicas".into(), part.into());
    }
}

/// Drops `spec.replicas` from a desired Deployment whose replicas an autoscaler in the cluster
/// manages: without the field, server-side apply leaves its ownership to the autoscaler.
pub fn leave_replicas_to_autoscaler(desired: &mut Value) {
    if let Some(spec) = desired.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("replicas");
    }
}

/// Removes fields the physical cluster assigns itself.
fn drop_cluster_owned(obj: &mut Value) {
    let is_service = obj["kind"] == "Service" && obj["apiVersion"] == "v1";
    if is_service && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        // Allocated by the cluster; kcp has no allocator, and an IP from one cluster means
        // nothing in another.
        for field in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
            spec.remove(field);
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            ports.iter_mut().filter_map(Value::as_object_mut).for_each(|p| {
                p.remove("nodePort");
            });
        }
    }
}

/// Keys kcp-tmc itself sets (`tmc.kcp.io/…`, `status.tmc.kcp.io/…`): bookkeeping, not part of
/// the user's object, so never copied down.
pub(crate) fn is_ours(key: &str) -> bool {
    key.split_once('/').is_some_and(|(prefix, _)| prefix == PREFIX || prefix.ends_with(&format!(".{PREFIX}")))
}

/// The string entries of a JSON object (labels, annotations); anything else is empty.
pub(crate) fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest() -> Destination<'static> {
        Destination { namespace: "kcp-abc", target_key: "t1", origin_cluster: "ws1" }
    }

    #[test]
    fn strips_kcp_metadata_and_status_and_keeps_user_metadata() {
        let upstream = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "default", "uid": "u", "resourceVersion": "7", "generation": 3,
                "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{}], "finalizers": ["x"],
                "ownerReferences": [{"name": "o"}],
                "labels": {"app": "web", "tmc.kcp.io/target-old": "x"},
                "annotations": {"kcp.io/cluster": "ws1", "team": "a", "kubectl.kubernetes.io/last-applied-configuration": "{}",
                                "status.tmc.kcp.io/t2": "{}", "tmc.kcp.io/adopt": "true", "nottmc.kcp.io/x": "kept"},
            },
            "spec": {"replicas": 2},
            "status": {"availableReplicas": 2},
        });
        let got = desired(&upstream, &dest());
        assert_eq!(
            got,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {
                    "name": "web", "namespace": "kcp-abc",
                    "labels": {"app": "web", "tmc.kcp.io/target": "t1", "tmc.kcp.io/origin-cluster": "ws1"},
                    "annotations": {"team": "a", "nottmc.kcp.io/x": "kept"},
                },
                "spec": {"replicas": 2},
            })
        );
    }

    #[test]
    fn service_leaves_cluster_owned_fields_to_the_cluster() {
        let upstream = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "type": "NodePort",
                     "ports": [{"port": 80, "nodePort": 30080}], "selector": {"app": "web"}},
        });
        let got = desired(&upstream, &dest());
        assert_eq!(got["spec"], json!({"type": "NodePort", "ports": [{"port": 80}], "selector": {"app": "web"}}));
        assert!(got["metadata"].get("annotations").is_none(), "no empty annotations map");
    }

    #[test]
    fn configmap_and_secret_payloads_go_down() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}, "binaryData": {"b": "AA=="}});
        let got = desired(&cm, &dest());
        assert_eq!((got["data"].clone(), got["binaryData"].clone()), (json!({"k": "v"}), json!({"b": "AA=="})));
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        let got = desired(&secret, &dest());
        assert_eq!((got["type"].clone(), got["data"].clone()), (json!("Opaque"), json!({"k": "dg=="})));
    }

    #[test]
    fn autoscaled_deployments_leave_replicas_alone() {
        let mut d = json!({"kind": "Deployment", "spec": {"replicas": 2, "paused": false}});
        leave_replicas_to_autoscaler(&mut d);
        assert_eq!(d["spec"], json!({"paused": false}));
    }

    #[test]
    fn divided_replicas_replace_what_was_asked() {
        let half = |n: i64| Some(n / 2);
        // (group, desired, spec after)
        let cases = [
            ("apps", json!({"spec": {"replicas": 4}}), json!({"replicas": 2})),
            ("apps", json!({"spec": {"paused": false}}), json!({"paused": false, "replicas": 0})),
            ("example.dev", json!({"spec": {"replicas": 6}}), json!({"replicas": 3})),
            ("example.dev", json!({"spec": {"size": 6}}), json!({"size": 6})),
            ("apps", json!({"metadata": {}}), Value::Null),
        ];
        for (group, mut d, want) in cases {
            divide_replicas(&mut d, group, half);
            assert_eq!(d["spec"], want, "{group}");
        }
        // Not divided for this target: what was asked goes down untouched.
        let mut d = json!({"spec": {"paused": false}});
        divide_replicas(&mut d, "apps", |_| None);
        assert_eq!(d["spec"], json!({"paused": false}));
    }

    #[test]
    fn overrides_change_the_copy_but_never_its_own_labels() {
        let upstream = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"app": "a"}}, "data": {"k": "v"}});
        let mut copy = desired(&upstream, &dest());
        let list: Vec<TargetOverride> = serde_json::from_value(json!([{
            "placement": "p", "name": "o", "objects": {"kind": "ConfigMap"},
            "mergePatch": {"metadata": {"labels": null, "annotations": {"tmc.kcp.io/adopt": "true", "region": "eu"}}, "data": {"k": "eu"}},
        }]))
        .unwrap();
        let object = ("", "ConfigMap", "c");
        assert_eq!(override_copy(&mut copy, Ok(&list), object, &dest()), Ok(vec!["p/o".to_string()]));
        let labels = json!({"tmc.kcp.io/target": "t1", "tmc.kcp.io/origin-cluster": "ws1"});
        let metadata = json!({"name": "c", "namespace": "kcp-abc", "labels": labels, "annotations": {"region": "eu"}});
        assert_eq!((copy["metadata"].clone(), copy["data"].clone()), (metadata, json!({"k": "eu"})));
        // Overrides unknown (an unreadable annotation): nothing to write.
        let before = copy.clone();
        assert_eq!(override_copy(&mut copy, Err("unreadable".into()), object, &dest()), Err("unreadable".into()));
        assert_eq!(copy, before);
        // None selects it: the copy as built.
        let mut plain = desired(&upstream, &dest());
        assert_eq!(override_copy(&mut plain, Ok(&list), ("", "Secret", "c"), &dest()), Ok(vec![]));
        assert_eq!(plain, desired(&upstream, &dest()));
    }

    #[test]
    fn cluster_provided_objects_are_skipped() {
        let cases = [
            ("ConfigMap", json!({"metadata": {"name": "kube-root-ca.crt"}}), Some(Skip::ClusterProvided)),
            ("ConfigMap", json!({"metadata": {"name": "app-config"}}), None),
            (
                "Secret",
                json!({"metadata": {"name": "t"}, "type": "kubernetes.io/service-account-token"}),
                Some(Skip::ClusterProvided),
            ),
            ("Secret", json!({"metadata": {"name": "t"}, "type": "Opaque"}), None),
            ("Deployment", json!({"metadata": {"name": "kube-root-ca.crt"}}), None),
            (
                "Secret",
                json!({"metadata": {"name": "db", "labels": {"tmc.kcp.io/upsynced-from": "k"}}}),
                Some(Skip::Upsynced),
            ),
            (
                "Widget",
                json!({"metadata": {"name": "w", "labels": {"tmc.kcp.io/upsynced-from": ""}}}),
                Some(Skip::Upsynced),
            ),
        ];
        for (kind, obj, want) in cases {
            assert_eq!(skip_reason(kind, &obj), want, "{kind} {obj}");
        }
    }
}
