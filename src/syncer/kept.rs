//! What the shared view of kcp ([`super::upstream`]) keeps of each upstream object (pure).
//!
//! The view watches every object of every synced kind in every bound workspace, but only objects
//! of placed namespaces are ever copied anywhere. So it keeps an object whole only when its
//! namespace is assigned to some target and its encoding is at most a limit; of every other
//! object it keeps the metadata that routing, finalizer clean-up and Placement read. A tenant's
//! unplaced namespaces then cost the manager a few hundred bytes per object whatever their
//! contents, and no single object costs more than the limit. A sync that needs a metadata-only
//! object whole reads it from kcp.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::{DynamicObject, ObjectMeta};

use super::transform::is_ours;
use crate::kcp::cluster::CLUSTER_ANNOTATION;

/// Default for the largest encoded object (bytes of JSON, managedFields dropped) the view keeps
/// whole: above typical Deployments, Services and configuration, far below the 1 MiB objects
/// that kcp accepts.
pub const DEFAULT_WHOLE_OBJECT_LIMIT: usize = 64 * 1024;

/// Top-level fields besides metadata that a metadata-only object keeps: what
/// [`super::transform::skip_reason`] reads (a Secret's `type`), so that Placement can tell which
/// kinds a namespace needs without the objects' contents.
const KEPT_FIELDS: &[&str] = &["type"];
/// A kept top-level string longer than this is dropped (a Secret type is a short name).
const KEPT_FIELD_MAX_LEN: usize = 256;

/// One upstream object as the shared view holds it.
#[derive(Clone, Debug)]
pub struct Held {
    /// The object, or only its metadata when `whole` is false.
    pub object: Arc<DynamicObject>,
    pub whole: bool,
}

impl Held {
    /// Keeps `obj` whole when its namespace is `placed` and it `fits` under the limit; its
    /// metadata only otherwise.
    pub fn new(obj: DynamicObject, placed: bool, fits: bool) -> Self {
        if placed && fits {
            Self { object: Arc::new(obj), whole: true }
        } else {
            Self { object: Arc::new(metadata_only(&obj)), whole: false }
        }
    }

    /// The metadata-only form of this (itself when it is one already).
    pub fn slimmed(&self) -> Self {
        if self.whole { Self { object: Arc::new(metadata_only(&self.object)), whole: false } } else { self.clone() }
    }
}

/// Drops managedFields and the last-applied-configuration annotation (the one definition, which
/// every watch applies too): what nothing upstream reads and that only costs memory.
pub use crate::runtime::reflector::strip;

/// Whether `obj`, encoded as JSON, is at most `limit` bytes. Counts without allocating and stops
/// counting at the limit.
pub fn fits(obj: &DynamicObject, limit: usize) -> bool {
    let mut counter = Counter { count: 0, limit };
    // The counter refuses to go past the limit, which ends serialisation with an error.
    serde_json::to_writer(&mut counter, obj).is_ok() && counter.count <= limit
}

struct Counter {
    count: usize,
    limit: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.count += buf.len();
        if self.count > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The part of `obj` that routing, deletion, finalizer release and Placement read: identity,
/// versions, deletion state, labels (workload selectors), finalizers, the `kcp.io/cluster`
/// annotation and kcp-tmc's own annotations, and [`KEPT_FIELDS`]. Everything a tenant chose to
/// put in it (data, spec, status, other annotations, owner references) is left out.
pub fn metadata_only(obj: &DynamicObject) -> DynamicObject {
    let m = &obj.metadata;
    let annotations: BTreeMap<String, String> = m
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() == CLUSTER_ANNOTATION || is_ours(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let metadata = ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        generation: m.generation,
        creation_timestamp: m.creation_timestamp.clone(),
        deletion_timestamp: m.deletion_timestamp.clone(),
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        labels: m.labels.clone(),
        finalizers: m.finalizers.clone(),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..ObjectMeta::default()
    };
    let mut data = serde_json::Map::new();
    for field in KEPT_FIELDS {
        if let Some(v) = obj.data.get(field).filter(|v| v.as_str().is_some_and(|s| s.len() <= KEPT_FIELD_MAX_LEN)) {
            data.insert(field.to_string(), v.clone());
        }
    }
    DynamicObject { types: obj.types.clone(), metadata, data: serde_json::Value::Object(data) }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::syncer::transform::skip_reason;

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("test objects parse")
    }

    fn secret(name: &str, kind: &str, data_len: usize) -> DynamicObject {
        object(json!({
            "apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {
                "name": name, "namespace": "app", "uid": "u1", "resourceVersion": "42", "generation": 3,
                "labels": {"app": "web"},
                "finalizers": ["tmc.kcp.io/syncer-abc"],
                "annotations": {
                    "kcp.io/cluster": "ws1",
                    "status.tmc.kcp.io/abc": "{}",
                    "tmc.kcp.io/adopt": "true",
                    "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(data_len),
                    "team": "blue",
                },
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "o1"}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "data": {"blob": "A".repeat(data_len)},
        }))
    }

    #[test]
    fn what_is_kept_whole() {
        let obj = secret("s", "Opaque", 10);
        // (placed, fits) → whole
        for (placed, fits, whole) in
            [(true, true, true), (true, false, false), (false, true, false), (false, false, false)]
        {
            let held = Held::new(obj.clone(), placed, fits);
            assert_eq!(held.whole, whole, "placed {placed} fits {fits}");
            assert_eq!(held.object.data.get("data").is_some(), whole, "placed {placed} fits {fits}");
        }
    }

    #[test]
    fn metadata_only_keeps_what_routing_and_clean_up_read() {
        let slim = metadata_only(&strip(secret("s", "Opaque", 1000)));
        let m = &slim.metadata;
        assert_eq!(m.name.as_deref(), Some("s"));
        assert_eq!(m.namespace.as_deref(), Some("app"));
        assert_eq!(m.uid.as_deref(), Some("u1"));
        assert_eq!(m.resource_version.as_deref(), Some("42"));
        assert_eq!(m.generation, Some(3));
        assert_eq!(m.labels.as_ref().unwrap()["app"], "web");
        assert_eq!(m.finalizers.as_deref(), Some(&["tmc.kcp.io/syncer-abc".to_string()][..]));
        let keys: Vec<&str> = m.annotations.as_ref().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["kcp.io/cluster", "status.tmc.kcp.io/abc", "tmc.kcp.io/adopt"]);
        assert!(m.owner_references.is_none() && m.managed_fields.is_none());
        assert_eq!(slim.data, json!({"type": "Opaque"}));
        assert_eq!(crate::kcp::ClusterKey::of(&slim).unwrap().to_string(), "ws1|app/s");
        assert!(serde_json::to_vec(&slim).unwrap().len() < 1024, "a metadata-only object is small");
    }

    #[test]
    fn metadata_only_decides_skipping_like_the_whole_object() {
        let token = secret("t", "kubernetes.io/service-account-token", 10);
        let opaque = secret("o", "Opaque", 10);
        let root_ca = object(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": "app"}, "data": {"ca.crt": "pem"}}));
        for (kind, obj) in [("Secret", token), ("Secret", opaque), ("ConfigMap", root_ca)] {
            let whole = serde_json::to_value(&obj).unwrap();
            let slim = serde_json::to_value(metadata_only(&obj)).unwrap();
            assert_eq!(skip_reason(kind, &slim), skip_reason(kind, &whole), "{}", whole["metadata"]["name"]);
        }
    }

    #[test]
    fn an_overlong_kept_field_is_dropped() {
        let slim = metadata_only(&secret("s", &"t".repeat(KEPT_FIELD_MAX_LEN + 1), 10));
        assert_eq!(slim.data, json!({}));
    }

    #[test]
    fn strip_drops_managed_fields_and_last_applied_only() {
        let stripped = strip(secret("s", "Opaque", 10));
        assert!(stripped.metadata.managed_fields.is_none());
        let annotations = stripped.metadata.annotations.unwrap();
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(annotations["team"], "blue");
        assert_eq!(stripped.data["data"]["blob"], "A".repeat(10));
    }

    #[test]
    fn the_limit_is_on_the_encoded_size() {
        let obj = strip(secret("s", "Opaque", 1000));
        let len = serde_json::to_vec(&obj).unwrap().len();
        assert!(fits(&obj, len), "exactly at the limit fits");
        assert!(!fits(&obj, len - 1), "one byte over does not");
        assert!(!fits(&obj, 0));
        assert!(fits(&obj, DEFAULT_WHOLE_OBJECT_LIMIT));
        let big = strip(secret("s", "Opaque", DEFAULT_WHOLE_OBJECT_LIMIT));
        assert!(!fits(&big, DEFAULT_WHOLE_OBJECT_LIMIT), "a 64 KiB value plus metadata is over 64 KiB");
    }

    #[test]
    fn slimming_is_idempotent() {
        let held = Held::new(strip(secret("s", "Opaque", 10)), true, true);
        let slim = held.slimmed();
        assert!(!slim.whole && slim.object.data.get("data").is_none());
        let again = slim.slimmed();
        assert!(Arc::ptr_eq(&slim.object, &again.object), "a metadata-only object is not copied again");
    }
}
