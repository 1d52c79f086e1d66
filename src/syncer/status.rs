//! The upstream status of an object that runs on one or several targets (pure).
//!
//! With one target the upstream status is the downstream one. With several, each syncer records
//! its target's status in the annotation `status.tmc.kcp.io/<target key>` on the upstream object,
//! and the upstream `.status` is the aggregate of the annotations of the targets that should run
//! the object (assigned, and selected by their workload selector): for Deployments the replica
//! counts are summed (saturating) and `Available` / `Progressing` are True only when they are
//! True everywhere; for other kinds the status of the first target (by target key) is shown.
//!
//! The tenant can write these annotations too. An entry counts only when the object also carries
//! that target's syncer finalizer, the mark a syncer sets before it copies an object: a forged
//! entry of a target that does not run the object is read as "not reported", and a forged entry
//! of one that does is overwritten by that target's syncer at its next sync.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

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

/// The aggregate upstream status of `kind` from per-target statuses, ordered by target key.
pub fn aggregate(kind: &str, per_target: &BTreeMap<String, Value>) -> Value {
    let mut statuses = per_target.values().filter(|s| s.is_object());
    let Some(first) = statuses.next() else { return Value::Null };
    if kind != "Deployment" || per_target.len() == 1 {
        return first.clone();
    }
    let mut out: Map<String, Value> = first.as_object().cloned().unwrap_or_default();
    for field in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
        "unavailableReplicas",
        "terminatingReplicas",
    ] {
        // Saturating: the per-target statuses are annotations a tenant can write, and a forged
        // entry of i64::MAX must not overflow (a panic in debug builds).
        let sum = per_target.values().filter_map(|s| s[field].as_i64()).fold(0i64, i64::saturating_add);
        if per_target.values().any(|s| !s[field].is_null()) {
            out.insert(field.into(), json!(sum));
        }
    }
    // The cluster-wide generation is only "observed" once every target has observed it.
    let observed: Vec<Option<i64>> = per_target.values().map(|s| s["observedGeneration"].as_i64()).collect();
    match observed.iter().min().copied().flatten() {
        Some(g) if observed.iter().all(Option::is_some) => out.insert("observedGeneration".into(), json!(g)),
        _ => out.remove("observedGeneration"),
    };
    if let Some(conditions) = out.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conditions.iter_mut() {
            let Some(type_) = c["type"].as_str().map(str::to_string) else { continue };
            if type_ != "Available" && type_ != "Progressing" {
                continue;
            }
            let failing: Vec<&String> = per_target
                .iter()
                .filter(|(_, s)| condition_status(s, &type_) != Some("True"))
                .map(|(k, _)| k)
                .collect();
            if !failing.is_empty() {
                c["status"] = json!("False");
                c["reason"] = json!("NotOnAllTargets");
                let keys: Vec<&str> = failing.iter().map(|k| k.as_str()).collect();
                c["message"] = json!(format!("{type_} is not True on targets {}", keys.join(", ")));
            }
        }
    }
    Value::Object(out)
}

fn condition_status<'a>(status: &'a Value, type_: &str) -> Option<&'a str> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?["status"].as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy_status(replicas: i64, available: i64, available_cond: &str, observed: Option<i64>) -> Value {
        let mut s = json!({
            "replicas": replicas, "availableReplicas": available, "readyReplicas": available,
            "conditions": [
                {"type": "Available", "status": available_cond, "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        });
        if let Some(o) = observed {
            s["observedGeneration"] = json!(o);
        }
        s
    }

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
    fn deployments_sum_and_require_availability_everywhere() {
        let per: BTreeMap<String, Value> = [
            ("a".to_string(), deploy_status(2, 2, "True", Some(4))),
            ("b".to_string(), deploy_status(2, 1, "False", Some(4))),
        ]
        .into();
        let got = aggregate("Deployment", &per);
        assert_eq!((got["replicas"].clone(), got["availableReplicas"].clone()), (json!(4), json!(3)));
        assert_eq!(got["observedGeneration"], 4);
        let available = &got["conditions"][0];
        assert_eq!(
            (available["status"].as_str(), available["reason"].as_str()),
            (Some("False"), Some("NotOnAllTargets"))
        );
        assert!(available["message"].as_str().unwrap().contains('b'));
        assert_eq!(got["conditions"][1]["status"], "True", "Progressing is True everywhere");

        let all_up: BTreeMap<String, Value> = [
            ("a".to_string(), deploy_status(2, 2, "True", Some(4))),
            ("b".to_string(), deploy_status(2, 2, "True", None)),
        ]
        .into();
        let got = aggregate("Deployment", &all_up);
        assert_eq!(got["conditions"][0]["status"], "True");
        assert!(got.get("observedGeneration").is_none(), "not observed everywhere yet");
    }

    #[test]
    fn only_entries_of_targets_that_run_the_object_count() {
        let fin = |k: &str| crate::syncer::engine::syncer_finalizer(k);
        let entry = |n: i64| deploy_status(n, n, "True", Some(1)).to_string();
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
    fn forged_huge_counts_saturate() {
        let per: BTreeMap<String, Value> = [
            ("a".to_string(), json!({"replicas": i64::MAX, "availableReplicas": i64::MAX})),
            ("b".to_string(), json!({"replicas": i64::MAX, "availableReplicas": -5})),
        ]
        .into();
        let got = aggregate("Deployment", &per);
        assert_eq!(got["replicas"], i64::MAX);
        assert_eq!(got["availableReplicas"], i64::MAX - 5);
    }

    #[test]
    fn single_targets_and_other_kinds_pass_through() {
        let one: BTreeMap<String, Value> = [("a".to_string(), deploy_status(2, 1, "False", Some(1)))].into();
        assert_eq!(aggregate("Deployment", &one), deploy_status(2, 1, "False", Some(1)));
        let svc: BTreeMap<String, Value> = [
            ("b".to_string(), json!({"loadBalancer": {"ingress": [{"ip": "2.2.2.2"}]}})),
            ("a".to_string(), json!({"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}})),
        ]
        .into();
        assert_eq!(aggregate("Service", &svc)["loadBalancer"]["ingress"][0]["ip"], "1.1.1.1", "first by target key");
        assert_eq!(aggregate("Service", &BTreeMap::new()), Value::Null);
        assert_eq!(status_annotation("k"), "status.tmc.kcp.io/k");
    }
}
