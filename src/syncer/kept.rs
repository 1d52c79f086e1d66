//! What the shared view of kcp ([`super::upstream`]) keeps of each upstream object (pure).
//!
//! The view watches every object of every synced kind in every bound workspace, but only objects
//! of placed namespaces are ever copied anywhere. So it keeps an object whole only when its
//! namespace is assigned to some target and its encoding is at most a limit; of every other
//! object it keeps the metadata that routing, finalizer clean-up and Placement read. A tenant's
//! unplaced namespaces then cost the manager a few hundred bytes per object whatever their
//! contents (~680 bytes for a ConfigMap from kcp, see `heap_tests`), and no single object costs more than the limit. A sync that needs a metadata-only
//! object whole reads it from kcp.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DynamicObject, ObjectMeta};

use super::transform::is_ours;

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

/// One upstream object as the shared view holds it: whole, or only what routing, deletion,
/// finalizer release and Placement read of it.
#[derive(Clone)]
pub struct Held(Repr);

#[derive(Clone)]
enum Repr {
    Whole(Arc<Encoded>),
    Metadata(Slim),
}

/// A whole object kept as its JSON encoding, with its metadata-only form beside it for what is
/// read often (namespace, version, markers). Decoded, a 200-byte ConfigMap from kcp takes
/// ~3.5 KB of heap (every string and map entry its own allocation); encoded it takes its length
/// plus the slim form. Decoding again costs microseconds, once per sync of the object.
struct Encoded {
    slim: Slim,
    json: Box<[u8]>,
}

impl Encoded {
    fn of(obj: &DynamicObject) -> Self {
        // A `DynamicObject` is JSON already (string keys, JSON values): encoding cannot fail.
        let json = serde_json::to_vec(obj).expect("a DynamicObject encodes as JSON").into_boxed_slice();
        Self { slim: Slim::of(obj), json }
    }

    fn decode(&self) -> DynamicObject {
        // What `of` wrote decodes: the same types, and no deeper nesting than the object the
        // watch already decoded with the same limits.
        serde_json::from_slice(&self.json).expect("a kept encoding decodes")
    }
}

/// Names the object, never its contents: a held Secret's data must not reach a log line.
impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("namespace", &self.namespace())
            .field("resource_version", &self.resource_version())
            .field("whole", &self.is_whole())
            .finish_non_exhaustive()
    }
}

impl Held {
    /// Keeps `obj` whole when its namespace is `placed` and it `fits` under the limit; its
    /// metadata only otherwise.
    pub fn new(obj: DynamicObject, placed: bool, fits: bool) -> Self {
        if placed && fits { Self::whole(&obj) } else { Self(Repr::Metadata(Slim::of(&obj))) }
    }

    /// `obj` kept whole.
    pub fn whole(obj: &DynamicObject) -> Self {
        Self(Repr::Whole(Arc::new(Encoded::of(obj))))
    }

    pub fn is_whole(&self) -> bool {
        matches!(self.0, Repr::Whole(_))
    }

    /// The metadata-only form of this (itself when it is one already).
    pub fn slimmed(&self) -> Self {
        Self(Repr::Metadata(self.slim().clone()))
    }

    fn slim(&self) -> &Slim {
        match &self.0 {
            Repr::Whole(encoded) => &encoded.slim,
            Repr::Metadata(slim) => slim,
        }
    }

    /// The object: whole (decoded), or (metadata only) rebuilt from what is kept, without its
    /// apiVersion and kind, its contents and any annotation but kcp-tmc's own.
    pub fn object(&self) -> Arc<DynamicObject> {
        match &self.0 {
            Repr::Whole(encoded) => Arc::new(encoded.decode()),
            Repr::Metadata(slim) => Arc::new(slim.object()),
        }
    }

    /// The object's metadata-only form, whether or not it is kept whole: what routing and
    /// [`super::transform::skip_reason`] read, without decoding the contents.
    pub fn metadata_object(&self) -> DynamicObject {
        self.slim().object()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.slim().namespace.as_deref()
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.slim().resource_version.as_deref()
    }

    /// The object's finalizers and kcp-tmc's own annotation keys, where the markers of syncers
    /// are.
    pub fn markers(&self) -> (Vec<&str>, Vec<&str>) {
        let slim = self.slim();
        (slim.finalizers.iter().map(|f| &**f).collect(), slim.annotations.iter().map(|(k, _)| &**k).collect())
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

/// Sorted (key, value) pairs: what a one-entry `BTreeMap` holds in ~40 bytes instead of the
/// ~540 of the B-tree leaf it allocates (room for eleven entries).
type Pairs = Box<[(Box<str>, Box<str>)]>;

/// The metadata-only form: identity, versions, deletion state, labels (workload selectors),
/// finalizers, kcp-tmc's own annotations, and [`KEPT_FIELDS`]. Everything a tenant chose to put
/// in the object (data, spec, status, other annotations, owner references) is left out, and so
/// are its apiVersion and kind (the view's slot names them) and its `kcp.io/cluster` annotation
/// (the view's key holds the logical cluster).
#[derive(Clone, Debug, PartialEq)]
struct Slim {
    name: Option<Box<str>>,
    namespace: Option<Box<str>>,
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    generation: Option<i64>,
    deletion_timestamp: Option<Time>,
    labels: Pairs,
    finalizers: Box<[Box<str>]>,
    annotations: Pairs,
    fields: Pairs,
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

fn pairs<'a>(entries: impl Iterator<Item = (&'a String, &'a String)>) -> Pairs {
    entries.map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str()))).collect()
}

fn map(pairs: &Pairs) -> Option<BTreeMap<String, String>> {
    (!pairs.is_empty()).then(|| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

impl Slim {
    fn of(obj: &DynamicObject) -> Self {
        let m = &obj.metadata;
        let fields = KEPT_FIELDS
            .iter()
            .filter_map(|field| {
                let value = obj.data.get(field)?.as_str().filter(|s| s.len() <= KEPT_FIELD_MAX_LEN)?;
                Some((Box::from(*field), Box::from(value)))
            })
            .collect();
        Self {
            name: boxed(&m.name),
            namespace: boxed(&m.namespace),
            uid: boxed(&m.uid),
            resource_version: boxed(&m.resource_version),
            generation: m.generation,
            deletion_timestamp: m.deletion_timestamp.clone(),
            labels: pairs(m.labels.iter().flatten()),
            finalizers: m.finalizers.iter().flatten().map(|f| Box::from(f.as_str())).collect(),
            annotations: pairs(m.annotations.iter().flatten().filter(|(k, _)| is_ours(k))),
            fields,
        }
    }

    fn object(&self) -> DynamicObject {
        let string = |s: &Option<Box<str>>| s.as_deref().map(str::to_string);
        let metadata = ObjectMeta {
            name: string(&self.name),
            namespace: string(&self.namespace),
            uid: string(&self.uid),
            resource_version: string(&self.resource_version),
            generation: self.generation,
            deletion_timestamp: self.deletion_timestamp.clone(),
            labels: map(&self.labels),
            finalizers: (!self.finalizers.is_empty()).then(|| self.finalizers.iter().map(|f| f.to_string()).collect()),
            annotations: map(&self.annotations),
            ..ObjectMeta::default()
        };
        let data = self.fields.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(&**v))).collect();
        DynamicObject { types: None, metadata, data: serde_json::Value::Object(data) }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::syncer::transform::skip_reason;

    /// The metadata-only form of `obj`, as [`Held`] rebuilds it.
    fn metadata_only(obj: &DynamicObject) -> DynamicObject {
        Slim::of(obj).object()
    }

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
            assert_eq!(held.is_whole(), whole, "placed {placed} fits {fits}");
            assert_eq!(held.object().data.get("data").is_some(), whole, "placed {placed} fits {fits}");
            assert_eq!((held.namespace(), held.resource_version()), (Some("app"), Some("42")));
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
        assert_eq!(keys, ["status.tmc.kcp.io/abc", "tmc.kcp.io/adopt"], "kcp-tmc's own, not kcp.io/cluster");
        assert!(m.owner_references.is_none() && m.managed_fields.is_none());
        assert_eq!(slim.data, json!({"type": "Opaque"}));
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
    fn slimming_is_idempotent_and_keeps_the_markers() {
        let held = Held::new(strip(secret("s", "Opaque", 10)), true, true);
        let slim = held.slimmed();
        assert!(!slim.is_whole() && slim.object().data.get("data").is_none());
        let again = slim.slimmed();
        assert_eq!(slim.object(), again.object());
        assert_eq!(slim.markers(), (vec!["tmc.kcp.io/syncer-abc"], vec!["status.tmc.kcp.io/abc", "tmc.kcp.io/adopt"]));
        assert_eq!(held.markers(), slim.markers(), "whole or not, the same markers");
        assert_eq!(held.object().data["data"]["blob"], "A".repeat(10), "whole: decoded with its contents");
    }

    #[test]
    fn whole_objects_decode_as_they_came() {
        let obj = strip(secret("s", "Opaque", 100));
        let held = Held::new(obj.clone(), true, true);
        assert_eq!(*held.object(), obj);
        assert_eq!(held.metadata_object(), metadata_only(&obj), "the metadata form without decoding");
    }

    #[test]
    fn rebuilt_like_the_object_it_was_taken_from() {
        let mut obj = strip(secret("s", "Opaque", 10));
        obj.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let labels = BTreeMap::from([("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())]);
        obj.metadata.labels = Some(labels.clone());
        let rebuilt = Held::new(obj.clone(), false, true).object();
        let m = &rebuilt.metadata;
        assert_eq!(m.labels.as_ref(), Some(&labels));
        assert_eq!(m.deletion_timestamp, obj.metadata.deletion_timestamp);
        assert_eq!((m.uid.as_deref(), m.generation), (Some("u1"), Some(3)));
        // Empty collections come back absent, as the API server would send them.
        obj.metadata.labels = Some(BTreeMap::new());
        obj.metadata.finalizers = Some(vec![]);
        let rebuilt = Held::new(obj, false, true).object();
        assert!(rebuilt.metadata.labels.is_none() && rebuilt.metadata.finalizers.is_none());
    }
}
