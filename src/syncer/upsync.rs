//! Upsync's decisions, pure: the object written to kcp for an original found in the cluster,
//! and what to do about one name (write, delete, report a conflict, nothing). The I/O is in
//! `engine::upsync`.
//!
//! Conservative by construction: a copy in kcp is deleted only when it is one (labelled
//! [`UPSYNCED_FROM_LABEL`] with this target's key) and the cluster's watch has listed without
//! the original; an object in kcp that is not such a copy is never written or deleted, however
//! it came there — it is reported instead.

use kube::core::TypeMeta;
use serde_json::{Map, Value, json};

use super::naming::TARGET_LABEL;
use super::transform::{Skip, is_ours, skip_reason, string_map};
use crate::apis::names::UPSYNCED_FROM_LABEL;

/// Annotation on a copy in kcp: the hash of what was written, so an unchanged original writes
/// nothing.
pub const UPSYNC_HASH_ANNOTATION: &str = "tmc.kcp.io/upsync-hash";

/// Annotations of an original that are the cluster's bookkeeping, not the object's.
const DROPPED_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration", "kcp.io/cluster"];

/// Whether an object found in the cluster is an original to copy back: not one kcp-tmc wrote
/// (labelled with a target), and not one every namespace gets from its cluster
/// (`kube-root-ca.crt`, service-account token Secrets).
pub fn copyable(kind: &str, original: &Value) -> bool {
    let ours = original["metadata"]["labels"].get(TARGET_LABEL).is_some();
    !ours && skip_reason(kind, original) != Some(Skip::ClusterProvided)
}

/// The object to apply in kcp for `original` of the kind `types`: its labels and annotations
/// without kcp-tmc's own, labelled with `target_key`, every field but `metadata` and `status`,
/// and the hash of all that in [`UPSYNC_HASH_ANNOTATION`].
///
/// `apiVersion` and `kind` come from `types`, not from the original: the items of a list carry
/// none (a watch's events do), and an original first seen in a list — every original, after a
/// restart — would otherwise be sent without them and refused.
pub fn desired(original: &Value, types: &TypeMeta, target_key: &str) -> Value {
    let meta = &original["metadata"];
    let mut labels = string_map(&meta["labels"]);
    labels.retain(|k, _| !is_ours(k));
    labels.insert(UPSYNCED_FROM_LABEL.into(), target_key.into());
    let mut annotations = string_map(&meta["annotations"]);
    annotations.retain(|k, _| !is_ours(k) && !DROPPED_ANNOTATIONS.contains(&k.as_str()));
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(types.api_version));
    out.insert("kind".into(), json!(types.kind));
    if let Some(fields) = original.as_object() {
        let copied = |k: &str| !matches!(k, "apiVersion" | "kind" | "metadata" | "status");
        for (k, v) in fields.iter().filter(|(k, _)| copied(k)) {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("metadata".into(), json!({ "name": meta["name"], "labels": labels, "annotations": annotations }));
    let mut out = Value::Object(out);
    let hash = crate::json::sha256_hex(out.to_string().as_bytes(), 8);
    out["metadata"]["annotations"][UPSYNC_HASH_ANNOTATION] = json!(hash);
    out
}

/// What kcp holds under an original's name, as far as upsync is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InKcp {
    Absent,
    /// A copy this target wrote, with the hash it recorded.
    Copy {
        hash: Option<String>,
    },
    /// Anything else: the tenant's own object, or another target's copy.
    Other {
        from: Option<String>,
    },
}

/// Reads what kcp holds (`obj`, its metadata suffices) for the target `target_key`.
pub fn in_kcp(obj: Option<&Value>, target_key: &str) -> InKcp {
    let Some(obj) = obj else { return InKcp::Absent };
    let from = obj["metadata"]["labels"][UPSYNCED_FROM_LABEL].as_str();
    match from {
        Some(key) if key == target_key => {
            InKcp::Copy { hash: obj["metadata"]["annotations"][UPSYNC_HASH_ANNOTATION].as_str().map(str::to_string) }
        }
        _ => InKcp::Other { from: from.map(str::to_string) },
    }
}

/// What to do about one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Apply the desired object in kcp.
    Write,
    /// Delete the copy in kcp: its original is gone.
    Delete,
    /// kcp holds an object of that name that is not this target's copy: leave it, say so.
    Conflict,
}

/// Decides for one name: `desired` is the object for the cluster's original (`None` when the
/// cluster holds none, as far as its watch knows), `listed` whether that watch has listed (its
/// absence proves nothing until then), `kcp` what kcp holds.
pub fn decide(desired: Option<&Value>, listed: bool, kcp: &InKcp) -> Step {
    match (desired, kcp) {
        (Some(_), InKcp::Absent) => Step::Write,
        (Some(d), InKcp::Copy { hash }) => {
            let want = d["metadata"]["annotations"][UPSYNC_HASH_ANNOTATION].as_str();
            if hash.as_deref() == want { Step::Nothing } else { Step::Write }
        }
        (Some(_), InKcp::Other { .. }) => Step::Conflict,
        (None, InKcp::Copy { .. }) if listed => Step::Delete,
        (None, _) => Step::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> TypeMeta {
        TypeMeta { api_version: "v1".into(), kind: "Secret".into() }
    }

    fn secret() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db-conn", "namespace": "kcp-abc", "uid": "u1", "resourceVersion": "9",
                         "labels": {"app": "db", "tmc.kcp.io/origin-cluster": "x"},
                         "annotations": {"operator": "pg", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "ownerReferences": [{"name": "pg"}]},
            "data": {"url": "cG9zdGdyZXM="},
        })
    }

    #[test]
    fn the_copy_keeps_the_object_and_names_its_target() {
        let got = desired(&secret(), &secrets(), "k1");
        let hash = got["metadata"]["annotations"][UPSYNC_HASH_ANNOTATION].clone();
        assert!(hash.as_str().is_some_and(|h| h.len() == 16), "{hash}");
        assert_eq!(
            got,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "db-conn", "labels": {"app": "db", "tmc.kcp.io/upsynced-from": "k1"},
                             "annotations": {"operator": "pg", "tmc.kcp.io/upsync-hash": hash}},
                "data": {"url": "cG9zdGdyZXM="},
            })
        );
        // Same original, same hash; a changed one, another.
        assert_eq!(desired(&secret(), &secrets(), "k1"), got);
        let mut changed = secret();
        changed["data"]["url"] = json!("eA==");
        assert_ne!(desired(&changed, &secrets(), "k1")["metadata"]["annotations"][UPSYNC_HASH_ANNOTATION], hash);
    }

    /// An original from a list (no apiVersion or kind, as after a restart) is copied with its
    /// kind's, and hashes as the same original from a watch event does: no rewrite after a relist.
    #[test]
    fn an_original_from_a_list_gets_its_kind() {
        let from_watch = desired(&secret(), &secrets(), "k1");
        let mut listed = secret();
        let fields = listed.as_object_mut().unwrap();
        fields.remove("apiVersion");
        fields.remove("kind");
        assert_eq!(desired(&listed, &secrets(), "k1"), from_watch);
        // The kind is the one watched, whatever the original says.
        let mut odd = secret();
        odd["kind"] = json!("ConfigMap");
        assert_eq!(desired(&odd, &secrets(), "k1")["kind"], "Secret");
    }

    #[test]
    fn only_originals_are_copied_back() {
        // (kind, object, copyable)
        let cases = [
            ("Secret", secret(), true),
            ("Secret", json!({"metadata": {"name": "s", "labels": {"tmc.kcp.io/target": "k1"}}}), false),
            ("ConfigMap", json!({"metadata": {"name": "kube-root-ca.crt"}}), false),
            ("Secret", json!({"metadata": {"name": "t"}, "type": "kubernetes.io/service-account-token"}), false),
            ("ConfigMap", json!({"metadata": {"name": "leader-election"}}), true),
        ];
        for (kind, obj, want) in cases {
            assert_eq!(copyable(kind, &obj), want, "{obj}");
        }
    }

    #[test]
    fn decisions_never_touch_what_is_not_a_copy() {
        let want = desired(&secret(), &secrets(), "k1");
        let hash = want["metadata"]["annotations"][UPSYNC_HASH_ANNOTATION].as_str().map(str::to_string);
        let copy = |h: Option<String>| InKcp::Copy { hash: h };
        let other = |from: Option<&str>| InKcp::Other { from: from.map(str::to_string) };
        // (name, desired, listed, in kcp, step)
        let cases = [
            ("new original", Some(&want), true, InKcp::Absent, Step::Write),
            ("new, watch not listed yet", Some(&want), false, InKcp::Absent, Step::Write),
            ("unchanged", Some(&want), true, copy(hash.clone()), Step::Nothing),
            ("changed", Some(&want), true, copy(Some("old".into())), Step::Write),
            ("copy without a hash", Some(&want), true, copy(None), Step::Write),
            ("the tenant's own object", Some(&want), true, other(None), Step::Conflict),
            ("another target's copy", Some(&want), true, other(Some("k2")), Step::Conflict),
            ("original gone", None, true, copy(hash.clone()), Step::Delete),
            ("original unknown: watch not listed", None, false, copy(hash.clone()), Step::Nothing),
            ("no original, the tenant's object", None, true, other(None), Step::Nothing),
            ("no original, another target's copy", None, true, other(Some("k2")), Step::Nothing),
            ("nothing anywhere", None, true, InKcp::Absent, Step::Nothing),
        ];
        for (name, desired, listed, kcp, step) in cases {
            assert_eq!(decide(desired, listed, &kcp), step, "{name}");
        }
    }

    #[test]
    fn what_kcp_holds_is_read_from_its_label() {
        let labelled = |v: &str| json!({"metadata": {"labels": {"tmc.kcp.io/upsynced-from": v}, "annotations": {"tmc.kcp.io/upsync-hash": "h"}}});
        assert_eq!(in_kcp(None, "k1"), InKcp::Absent);
        assert_eq!(in_kcp(Some(&labelled("k1")), "k1"), InKcp::Copy { hash: Some("h".into()) });
        assert_eq!(in_kcp(Some(&labelled("k2")), "k1"), InKcp::Other { from: Some("k2".into()) });
        assert_eq!(in_kcp(Some(&json!({"metadata": {"name": "x"}})), "k1"), InKcp::Other { from: None });
    }
}
