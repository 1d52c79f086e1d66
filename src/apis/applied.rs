//! Evidence of a successful apply: what a target's syncer records on a kcp object once the
//! target's cluster has accepted the object, and what the Placement reconciler reads before it
//! lets a moving namespace leave its old target (make-before-break on evidence, not on intent).
//!
//! The record is the annotation `applied.tmc.kcp.io/<target key>` on the kcp object, a small
//! JSON document: the kcp `generation` the applied copy was built from, the hash of what was
//! applied, and for Deployments whether the cluster reports the applied spec `Available`. The
//! syncer writes it only after the cluster answered the apply (or showed the copy already
//! matches), and only when it changes; it removes it with the object's other per-target
//! bookkeeping when the target no longer runs the object. Like the per-target status
//! annotations, an entry counts only while the object carries that target's syncer finalizer.
//! A tenant who forges one can only make its own namespace leave its old target early.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Prefix of the per-target evidence annotations.
pub const APPLIED_ANNOTATION_PREFIX: &str = "applied.tmc.kcp.io/";

/// The evidence annotation of `target_key`.
pub fn applied_annotation(target_key: &str) -> String {
    format!("{APPLIED_ANNOTATION_PREFIX}{target_key}")
}

/// One target's evidence for one object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// `metadata.generation` of the kcp object the applied copy was built from (absent for
    /// kinds kcp does not count generations of).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Hash of the object as applied to the cluster.
    pub hash: String,
    /// Deployments only: the cluster runs the applied spec and reports it `Available`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
}

impl Applied {
    /// The evidence for an apply of `hash`, built from generation `generation` of a `kind`
    /// object; `downstream` is the status view of the cluster's copy (see
    /// `syncer::downstream::status_view`) when one is known.
    pub fn new(kind: &str, generation: Option<i64>, hash: &str, downstream: Option<&Value>, hash_key: &str) -> Self {
        let available = (kind == "Deployment").then(|| downstream.is_some_and(|d| available(d, hash, hash_key)));
        Self { generation, hash: hash.to_string(), available }
    }

    /// The annotation value.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The evidence in an annotation value; `None` when it does not parse (read as "none").
    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// Whether the cluster's copy (`downstream`, a status view) runs the spec applied as `hash` and
/// is `Available`: its spec-hash annotation is `hash`, the controller has observed its latest
/// generation, and its `Available` condition is True.
fn available(downstream: &Value, hash: &str, hash_key: &str) -> bool {
    let applied = downstream["metadata"]["annotations"][hash_key].as_str() == Some(hash);
    let generation = downstream["metadata"]["generation"].as_i64();
    let observed = downstream["status"]["observedGeneration"].as_i64();
    let caught_up = matches!((observed, generation), (Some(o), Some(g)) if o >= g);
    let condition = downstream["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
        .is_some_and(|c| c["status"] == "True");
    applied && caught_up && condition
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const KEY: &str = "tmc.kcp.io/spec-hash";

    fn view(hash: &str, generation: i64, observed: i64, available: &str) -> Value {
        json!({
            "metadata": { "generation": generation, "annotations": { KEY: hash } },
            "status": { "observedGeneration": observed, "conditions": [{ "type": "Available", "status": available }] },
        })
    }

    #[test]
    fn deployments_count_as_available_only_on_the_applied_spec() {
        // (name, kind, downstream view, available)
        let cases = [
            ("configmap: no availability", "ConfigMap", Some(view("h", 1, 1, "True")), None),
            ("deployment available", "Deployment", Some(view("h", 2, 2, "True")), Some(true)),
            ("not available yet", "Deployment", Some(view("h", 2, 2, "False")), Some(false)),
            ("older spec still running", "Deployment", Some(view("old", 2, 2, "True")), Some(false)),
            ("new generation not observed", "Deployment", Some(view("h", 3, 2, "True")), Some(false)),
            ("just created, no view", "Deployment", None, Some(false)),
            ("no status at all", "Deployment", Some(json!({"metadata": {}})), Some(false)),
        ];
        for (name, kind, downstream, want) in cases {
            let a = Applied::new(kind, Some(4), "h", downstream.as_ref(), KEY);
            assert_eq!(a.available, want, "{name}");
            assert_eq!(Applied::decode(&a.encode()), Some(a), "{name}: round trip");
        }
    }

    #[test]
    fn the_record_is_small_and_garbage_reads_as_none() {
        let a = Applied::new("ConfigMap", None, "abcd", None, KEY);
        assert_eq!(a.encode(), r#"{"hash":"abcd"}"#);
        for text in ["", "yes", "{}", r#"{"hash": 3}"#] {
            assert_eq!(Applied::decode(text), None, "{text:?}");
        }
    }
}
