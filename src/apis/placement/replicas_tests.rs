use serde_json::json;

use super::*;

fn weights(v: &[(&str, u32)]) -> BTreeMap<String, u32> {
    v.iter().map(|(k, w)| (k.to_string(), *w)).collect()
}

/// Every key's share, in key order.
fn shares(total: i64, w: &BTreeMap<String, u32>) -> Vec<i64> {
    w.keys().map(|k| share(total, w, k).unwrap()).collect()
}

/// (total, weights, shares in key order)
type Case = (i64, Vec<(&'static str, u32)>, Vec<i64>);

#[test]
fn shares_by_largest_remainder() {
    let cases: Vec<Case> = vec![
        (2, vec![("a", 1), ("b", 1)], vec![1, 1]),
        // The remainder goes to the smaller key on a tie.
        (3, vec![("a", 1), ("b", 1)], vec![2, 1]),
        (5, vec![("a", 1), ("b", 1)], vec![3, 2]),
        (1, vec![("a", 1), ("b", 1), ("c", 1)], vec![1, 0, 0]),
        // 5 × 3/4 = 3.75, 5 × 1/4 = 1.25: the larger fraction takes the one left.
        (5, vec![("a", 3), ("b", 1)], vec![4, 1]),
        (5, vec![("a", 1), ("b", 3)], vec![1, 4]),
        // 10 over 1:1:1 = 3.33 each: one extra, to the first key.
        (10, vec![("a", 1), ("b", 1), ("c", 1)], vec![4, 3, 3]),
        // A weight of 0 takes nothing; all 0 divides equally.
        (4, vec![("a", 0), ("b", 1)], vec![0, 4]),
        (4, vec![("a", 0), ("b", 0)], vec![2, 2]),
        (0, vec![("a", 1), ("b", 1)], vec![0, 0]),
        // A negative total is no replicas, not a negative share.
        (-3, vec![("a", 1)], vec![0]),
        (i64::MAX, vec![("a", 1000), ("b", 1000)], vec![i64::MAX / 2 + 1, i64::MAX / 2]),
    ];
    for (total, w, want) in cases {
        let w = weights(&w);
        assert_eq!(shares(total, &w), want, "{total} over {w:?}");
    }
    assert_eq!(share(3, &weights(&[("a", 1)]), "other"), None, "a target not listed runs every replica");
}

/// Whatever the weights, the shares add up to the total and none is negative.
#[test]
fn shares_always_add_up() {
    for total in 0..40 {
        for a in 0..6 {
            for b in 0..6 {
                for c in [0, 1, 7, 1000] {
                    let w = weights(&[("x", a), ("y", b), ("z", c)]);
                    let s = shares(total, &w);
                    assert_eq!(s.iter().sum::<i64>(), total, "{total} over {w:?}: {s:?}");
                    assert!(s.iter().all(|n| *n >= 0), "{s:?}");
                }
            }
        }
    }
}

fn target(spec: serde_json::Value, labels: serde_json::Value, ready: &str, since: &str) -> SyncTarget {
    serde_json::from_value(json!({
        "apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget",
        "metadata": {"name": "t", "labels": labels}, "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "R", "message": "",
                                   "lastTransitionTime": since}]},
    }))
    .unwrap()
}

#[test]
fn weights_of_targets() {
    let now: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
    let policy = |v: serde_json::Value| -> ReplicaPolicy { serde_json::from_value(v).unwrap() };
    let divide =
        policy(json!({"type": "Divide", "weightLabel": "tmc.example/weight", "weights": [{"name": "t", "weight": 7}]}));
    let by_label = policy(json!({"type": "Divide", "weightLabel": "tmc.example/weight"}));
    let plain = policy(json!({"type": "Divide"}));
    let duplicate = policy(json!({"type": "Duplicate"}));
    let ready = |labels| target(json!({}), labels, "True", "2026-01-01T00:00:00Z");
    let labelled = |v: &str| ready(json!({"tmc.example/weight": v}));
    // (name, policy, target, weight)
    let cases: Vec<(&str, &ReplicaPolicy, SyncTarget, Option<u32>)> = vec![
        ("duplicate has no weights", &duplicate, ready(json!({})), None),
        ("default weight", &plain, ready(json!({})), Some(1)),
        ("from the label", &by_label, labelled("3"), Some(3)),
        ("label not a number", &by_label, labelled("heavy"), Some(1)),
        ("label capped", &by_label, labelled("99999"), Some(MAX_WEIGHT)),
        ("label missing", &by_label, ready(json!({})), Some(1)),
        ("explicit beats label", &divide, labelled("3"), Some(7)),
        (
            "cordoned",
            &plain,
            target(json!({"unschedulable": true}), json!({}), "True", "2026-01-01T00:00:00Z"),
            Some(0),
        ),
        (
            "draining",
            &plain,
            target(json!({"evictAfter": "2026-01-01T00:30:00Z"}), json!({}), "True", "2026-01-01T00:00:00Z"),
            Some(0),
        ),
        (
            "drain later",
            &plain,
            target(json!({"evictAfter": "2026-01-01T02:00:00Z"}), json!({}), "True", "2026-01-01T00:00:00Z"),
            Some(1),
        ),
        ("out within grace", &plain, target(json!({}), json!({}), "False", "2026-01-01T00:59:00Z"), Some(1)),
        ("out past grace", &plain, target(json!({}), json!({}), "False", "2026-01-01T00:50:00Z"), Some(0)),
        ("out since the future", &plain, target(json!({}), json!({}), "Unknown", "2099-01-01T00:00:00Z"), Some(1)),
    ];
    for (name, policy, t, want) in cases {
        assert_eq!(weight(policy, &t, now, Duration::from_secs(120)), want, "{name}");
    }
}

#[test]
fn weights_annotation_round_trip() {
    let w = weights(&[("k1", 1), ("k2", 3)]);
    assert_eq!(parse_weights(&serde_json::to_string(&w).unwrap()), Some(w));
    for bad in ["", "[1]", r#"{"a": -1}"#, r#"{"a": "1"}"#, r#"{"a": 1.5}"#] {
        assert_eq!(parse_weights(bad), None, "{bad}");
    }
}
