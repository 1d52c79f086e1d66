//! The upstream status of an object that runs on one or several targets (pure).
//!
//! With one target the upstream status is the downstream one. With several, each syncer records
//! its target's status in the annotation `status.tmc.kcp.io/<target key>` on the upstream object,
//! and the upstream `.status` is the aggregate of the annotations of the targets that should run
//! the object (assigned, and selected by their workload selector), by a rule per kind
//! ([`aggregate`]).
//!
//! The tenant can write these annotations too. An entry counts only when the object also carries
//! that target's syncer finalizer, the mark a syncer sets before it copies an object: a forged
//! entry of a target that does not run the object is read as "not reported", and a forged entry
//! of one that does is overwritten by that target's syncer at its next sync.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

pub use super::aggregate::aggregate;

/// Prefix of the per-target status annotations.
pub const STATUS_ANNOTATION_PREFIX: &str = "status.tmc.kcp.io/";

/// The per-target status annotation key of `target_key`.
pub fn status_annotation(target_key: &str) -> String {
    format!("{STATUS_ANNOTATION_PREFIX}{target_key}")
}

/// The per-target statuses to aggregate for an object with `annotations` and `finalizers`: for
/// each of `targets` (those that should run it), its recorded status if the object carries its
/// syncer finalizer and the entry parses, otherwise `Null` ("not reported").
pub fn recorded(
    annotations: &BTreeMap<String, String>,
    finalizers: &[String],
    targets: &BTreeSet<String>,
) -> BTreeMap<String, Value> {
    targets
        .iter()
        .map(|t| {
            let runs = finalizers.contains(&crate::syncer::engine::syncer_finalizer(t));
            let entry = annotations.get(&status_annotation(t)).filter(|_| runs);
            (t.clone(), entry.and_then(|r| serde_json::from_str(r).ok()).unwrap_or(Value::Null))
        })
        .collect()
}

/// The downstream status as it should read upstream. `observedGeneration` counts the cluster's
/// generations, not kcp's: it is replaced by the upstream generation when the cluster has
/// observed the object as last applied (`applied_current`), and dropped otherwise.
pub fn translate(downstream: &Value, applied_current: bool, upstream_generation: Option<i64>) -> Value {
    let mut status = downstream["status"].clone();
    let Some(map) = status.as_object_mut() else { return Value::Null };
    if map.contains_key("observedGeneration") {
        let observed = downstream["status"]["observedGeneration"].as_i64();
        let generation = downstream["metadata"]["generation"].as_i64();
        match (applied_current && observed >= generation, upstream_generation) {
            (true, Some(g)) => map.insert("observedGeneration".into(), json!(g)),
            _ => map.remove("observedGeneration"),
        };
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_observed_generation() {
        let down = |observed: i64, generation: i64| json!({"metadata": {"generation": generation}, "status": {"observedGeneration": observed, "replicas": 1}});
        let cases = [
            (down(3, 3), true, Some(7), Some(7)),
            (down(2, 3), true, Some(7), None),
            (down(3, 3), false, Some(7), None),
            (down(3, 3), true, None, None),
        ];
        for (d, applied, up_gen, want) in cases {
            let got = translate(&d, applied, up_gen);
            assert_eq!(got["observedGeneration"].as_i64(), want, "{d} {applied} {up_gen:?}");
            assert_eq!(got["replicas"], 1);
        }
        assert_eq!(translate(&json!({"metadata": {}}), true, Some(1)), Value::Null);
    }

    #[test]
    fn only_entries_of_targets_that_run_the_object_count() {
        let fin = |k: &str| crate::syncer::engine::syncer_finalizer(k);
        let entry = |n: i64| {
            let available = json!({"type": "Available", "status": "True"});
            json!({"replicas": n, "availableReplicas": n, "conditions": [available]}).to_string()
        };
        let annotations: BTreeMap<String, String> = [
            (status_annotation("a"), entry(1)),
            (status_annotation("b"), entry(100)),
            (status_annotation("c"), "{not json".to_string()),
            (status_annotation("other"), entry(1000)),
        ]
        .into();
        let targets: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        // (finalizers on the object, targets whose entry counts)
        let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
            (vec![fin("a")], vec!["a"]),
            (vec![fin("a"), fin("b")], vec!["a", "b"]),
            (vec![fin("a"), fin("c")], vec!["a"]),
            (vec![fin("a"), fin("other"), "example.com/x".into()], vec!["a"]),
            (vec![], vec![]),
        ];
        for (finalizers, want) in cases {
            let got = recorded(&annotations, &finalizers, &targets);
            assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "b", "c"], "one entry per target that should run it");
            let counted: Vec<&str> = got.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k.as_str()).collect();
            assert_eq!(counted, want, "{finalizers:?}");
        }
        // A forged entry of a target that does not run the object does not move the sum.
        let per = recorded(&annotations, &[fin("a")], &targets);
        let got = aggregate("Deployment", &per);
        assert_eq!(got["availableReplicas"], 1);
        assert_eq!(got["conditions"][0]["status"], "False", "b and c have not reported");
    }

    #[test]
    fn status_annotation_names() {
        assert_eq!(status_annotation("k"), "status.tmc.kcp.io/k");
    }
}
