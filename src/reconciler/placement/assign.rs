//! Which assignment labels a kcp namespace should carry, as a pure function.
//!
//! The desired set is the union of the targets chosen by every Placement of the workspace that
//! selects the namespace (two Placements selecting one namespace run it on both choices). The
//! controller owns only the labels it set itself, recorded in [`MANAGED_ANNOTATION`]; labels set
//! by hand are never removed or claimed. A label it set that is no longer desired is removed
//! only once every desired target runs the namespace (make before break), so a move never
//! leaves the workloads nowhere; with nothing desired (Placement deleted, namespace no longer
//! selected) that holds at once. Labels of *frozen* keys — chosen by a Placement whose selector
//! is invalid, so nobody knows what it wants — are neither added nor removed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::apis::names::{
    ASSIGNMENT_SYNC, AWAITING_EVIDENCE_ANNOTATION, WORKLOAD_SELECTOR_PREFIX, assigned_targets, assignment_label,
    key_list,
};
use crate::apis::placement::replicas::REPLICAS_ANNOTATION;

/// Annotation on a kcp namespace: the target keys whose assignment labels the Placement
/// controller set, comma-separated and sorted.
pub const MANAGED_ANNOTATION: &str = "placement.tmc.kcp.io/assigned";

/// The label change for one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: BTreeSet<String>,
    pub remove: BTreeSet<String>,
    /// The new value of [`MANAGED_ANNOTATION`].
    pub managed: BTreeSet<String>,
    /// The new value of [`AWAITING_EVIDENCE_ANNOTATION`]: while stale labels are kept until the
    /// new targets run the namespace, the desired targets, whose syncers then record evidence of
    /// their applies; empty otherwise, so a namespace that is not moving costs kcp no evidence
    /// writes, however many targets run it.
    pub awaiting: BTreeSet<String>,
}

impl Plan {
    /// Whether stale labels are kept until the new targets run the namespace (a move waits).
    pub fn waiting(&self) -> bool {
        !self.awaiting.is_empty()
    }

    /// The JSON merge patch of `metadata` for this plan, or `None` when nothing changes;
    /// `annotations` are the namespace's current ones.
    pub fn patch(&self, annotations: &BTreeMap<String, String>) -> Option<serde_json::Value> {
        let unchanged = self.managed == managed_keys(annotations) && self.awaiting == awaiting_keys(annotations);
        if self.add.is_empty() && self.remove.is_empty() && unchanged {
            return None;
        }
        let mut labels = serde_json::Map::new();
        for k in &self.add {
            labels.insert(assignment_label(k), ASSIGNMENT_SYNC.into());
        }
        for k in &self.remove {
            labels.insert(assignment_label(k), serde_json::Value::Null);
        }
        let list = |keys: &BTreeSet<String>| {
            if keys.is_empty() {
                serde_json::Value::Null
            } else {
                keys.iter().cloned().collect::<Vec<_>>().join(",").into()
            }
        };
        let annotations = serde_json::json!({
            MANAGED_ANNOTATION: list(&self.managed),
            AWAITING_EVIDENCE_ANNOTATION: list(&self.awaiting),
        });
        Some(serde_json::json!({ "labels": labels, "annotations": annotations }))
    }
}

/// The keys recorded in [`MANAGED_ANNOTATION`].
pub fn managed_keys(annotations: &BTreeMap<String, String>) -> BTreeSet<String> {
    annotations.get(MANAGED_ANNOTATION).map(|v| key_list(v)).unwrap_or_default()
}

/// The keys recorded in [`AWAITING_EVIDENCE_ANNOTATION`].
pub fn awaiting_keys(annotations: &BTreeMap<String, String>) -> BTreeSet<String> {
    annotations.get(AWAITING_EVIDENCE_ANNOTATION).map(|v| key_list(v)).unwrap_or_default()
}

/// Plans the labels of a namespace with `labels` and `annotations` that should run on
/// `desired`; `frozen` keys keep the label they have; `runs(key)` says whether the target `key`
/// already runs the namespace.
pub fn plan(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    desired: &BTreeSet<String>,
    frozen: &BTreeSet<String>,
    runs: impl Fn(&str) -> bool,
) -> Plan {
    let present = assigned_targets(&serde_json::json!({ "metadata": { "labels": labels } }));
    let managed = managed_keys(annotations);
    let by_hand: BTreeSet<String> = present.difference(&managed).cloned().collect();
    let add: BTreeSet<String> = desired.difference(&present).cloned().collect();
    let held: BTreeSet<String> = managed.intersection(frozen).filter(|k| present.contains(*k)).cloned().collect();
    let stale: BTreeSet<String> =
        managed.difference(desired).filter(|k| present.contains(*k) && !held.contains(*k)).cloned().collect();
    // `runs` reads the syncers' caches: ask only when a stale label waits on the answer.
    let all_run = stale.is_empty() || (add.is_empty() && desired.iter().all(|k| runs(k)));
    let (remove, kept) = if all_run { (stale, BTreeSet::new()) } else { (BTreeSet::new(), stale) };
    let mut owned: BTreeSet<String> = desired.difference(&by_hand).cloned().collect();
    owned.extend(kept.iter().cloned());
    owned.extend(held);
    let awaiting = if kept.is_empty() { BTreeSet::new() } else { desired.clone() };
    // Stale labels are kept only while some desired target does not run yet, so never with
    // nothing desired: a waiting move always names someone.
    Plan { add, remove, managed: owned, awaiting }
}

/// What one target runs of a namespace: every object (`None`: some Placement choosing it has no
/// `workloadSelector`), or the objects any of these selectors match.
pub type Workloads = Option<Vec<LabelSelector>>;

/// Adds one Placement's `workloadSelector` to what a target already runs of a namespace:
/// the union, where "every object" absorbs any selector.
pub fn widen(current: Option<&Workloads>, selector: Option<&LabelSelector>) -> Workloads {
    match (current, selector) {
        (Some(None), _) | (_, None) => None,
        (None, Some(s)) => Some(vec![s.clone()]),
        (Some(Some(list)), Some(s)) => {
            let mut list = list.clone();
            if !list.contains(s) {
                list.push(s.clone());
            }
            Some(list)
        }
    }
}

/// Merge-patch entries for the workload-selector annotations of a namespace: for targets in
/// `desired` the controller owns (`owned`), set to their selectors or removed when they run
/// everything; removed for `removed` targets. Other annotations are left alone (hand-set ones,
/// and those of stale targets still running until their replacement does).
pub fn selector_annotations(
    annotations: &BTreeMap<String, String>,
    desired: &BTreeMap<String, Workloads>,
    owned: &BTreeSet<String>,
    removed: &BTreeSet<String>,
) -> serde_json::Map<String, serde_json::Value> {
    let values = desired
        .iter()
        .map(|(k, w)| (k.clone(), w.as_ref().map(|list| serde_json::to_string(list).unwrap_or_default())))
        .collect();
    per_target_annotations(WORKLOAD_SELECTOR_PREFIX, annotations, &values, owned, removed)
}

/// Merge-patch entries for the annotations `<prefix><target key>` of a namespace: for targets
/// in `desired` the controller owns (`owned`), set to their value or removed when it is `None`;
/// removed for `removed` targets; unchanged ones left out. Other annotations are left alone.
pub fn per_target_annotations(
    prefix: &str,
    annotations: &BTreeMap<String, String>,
    desired: &BTreeMap<String, Option<String>>,
    owned: &BTreeSet<String>,
    removed: &BTreeSet<String>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    let want = desired.iter().filter(|(k, _)| owned.contains(*k)).map(|(k, v)| (k, v.as_ref()));
    let gone = removed.iter().map(|k| (k, None));
    for (key, value) in want.chain(gone) {
        let name = format!("{prefix}{key}");
        if annotations.get(&name) != value {
            out.insert(name, value.map_or(serde_json::Value::Null, |v| serde_json::Value::String(v.clone())));
        }
    }
    out
}

/// The merge-patch value of the namespace's replicas annotation (`REPLICAS_ANNOTATION`) when
/// it must change: the weights of the targets that divide, or `null` when none does; `None`
/// when it is right already. Left alone on a namespace the controller places nothing on (a
/// person's annotation), and while a Placement is stuck (`frozen`): nobody knows what it wants,
/// and what runs keeps its replicas.
pub fn replicas_annotation(
    annotations: &BTreeMap<String, String>,
    weights: &BTreeMap<String, u32>,
    placed: bool,
    frozen: bool,
) -> Option<serde_json::Value> {
    let want = (!weights.is_empty()).then(|| serde_json::to_string(weights).unwrap_or_default());
    if frozen || (!placed && want.is_none()) || annotations.get(REPLICAS_ANNOTATION) == want.as_ref() {
        return None;
    }
    Some(want.map_or(serde_json::Value::Null, serde_json::Value::String))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replicas_annotation_follows_the_dividing_targets() {
        let weights: BTreeMap<String, u32> = [("a".to_string(), 1), ("b".to_string(), 2)].into();
        let written: BTreeMap<String, String> =
            [(REPLICAS_ANNOTATION.to_string(), r#"{"a":1,"b":2}"#.to_string())].into();
        let (none, nobody) = (BTreeMap::new(), BTreeMap::new());
        let null = Some(serde_json::Value::Null);
        // (name, annotations, weights, placed, frozen, patch)
        let cases = [
            ("new", &none, &weights, true, false, Some(serde_json::json!(r#"{"a":1,"b":2}"#))),
            ("unchanged", &written, &weights, true, false, None),
            ("nobody divides any more", &written, &nobody, true, false, null),
            ("a person's annotation on a namespace placed by hand", &written, &nobody, false, false, None),
            ("a stuck Placement", &written, &nobody, true, true, None),
            ("nothing either way", &none, &nobody, true, false, None),
        ];
        for (name, annotations, weights, placed, frozen, want) in cases {
            assert_eq!(replicas_annotation(annotations, weights, placed, frozen), want, "{name}");
        }
    }

    #[test]
    fn workload_selectors_union_and_annotations() {
        let sel = |tier: &str| -> LabelSelector {
            serde_json::from_value(serde_json::json!({"matchLabels": {"tier": tier}})).unwrap()
        };
        // (current, placement's selector, result)
        let cases: Vec<(Option<Workloads>, Option<LabelSelector>, Workloads)> = vec![
            (None, None, None),
            (None, Some(sel("web")), Some(vec![sel("web")])),
            (Some(Some(vec![sel("web")])), Some(sel("db")), Some(vec![sel("web"), sel("db")])),
            (Some(Some(vec![sel("web")])), Some(sel("web")), Some(vec![sel("web")])),
            (Some(Some(vec![sel("web")])), None, None),
            (Some(None), Some(sel("web")), None),
        ];
        for (current, selector, want) in cases {
            assert_eq!(widen(current.as_ref(), selector.as_ref()), want);
        }
        let web = serde_json::to_string(&vec![sel("web")]).unwrap();
        let annotations: BTreeMap<String, String> =
            [("workload.tmc.kcp.io/a".to_string(), web.clone()), ("workload.tmc.kcp.io/h".to_string(), web.clone())]
                .into();
        let desired: BTreeMap<String, Workloads> = [
            ("a".to_string(), Some(vec![sel("web")])),
            ("b".to_string(), Some(vec![sel("db")])),
            ("c".to_string(), None),
        ]
        .into();
        let owned = set(&["a", "b", "c"]);
        let patch = selector_annotations(&annotations, &desired, &owned, &set(&["x"]));
        // a is already right, h is hand-set, c runs everything and has none, x has none to remove.
        assert_eq!(patch.len(), 1, "{patch:?}");
        assert!(patch["workload.tmc.kcp.io/b"].as_str().is_some_and(|s| s.contains("db")));
        let patch = selector_annotations(&annotations, &BTreeMap::new(), &owned, &set(&["a"]));
        assert_eq!(patch["workload.tmc.kcp.io/a"], serde_json::Value::Null);
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn labels(keys: &[&str]) -> BTreeMap<String, String> {
        let mut l: BTreeMap<String, String> = keys.iter().map(|k| (assignment_label(k), "Sync".into())).collect();
        l.insert("team".into(), "web".into());
        l
    }

    fn managed(keys: &[&str]) -> BTreeMap<String, String> {
        if keys.is_empty() {
            return BTreeMap::new();
        }
        [(MANAGED_ANNOTATION.to_string(), keys.join(","))].into()
    }

    #[test]
    fn table() {
        // (name, labelled, managed, desired, running, add, remove, managed after, waiting)
        type Row<'a> = (
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            bool,
        );
        let rows: &[Row] = &[
            ("fresh namespace", &[], &[], &["a"], &[], &["a"], &[], &["a"], false),
            ("settled", &["a"], &["a"], &["a"], &["a"], &[], &[], &["a"], false),
            ("hand-set label is left alone", &["h"], &[], &[], &[], &[], &[], &[], false),
            ("hand-set label not claimed when desired", &["h"], &[], &["h"], &["h"], &[], &[], &[], false),
            ("placement gone: own label removed", &["a", "h"], &["a"], &[], &[], &[], &["a"], &[], false),
            ("move waits for the new target", &["a", "b"], &["a", "b"], &["b"], &[], &[], &[], &["a", "b"], true),
            ("move: new label first", &["a"], &["a"], &["b"], &[], &["b"], &[], &["a", "b"], true),
            ("move completes once b runs", &["a", "b"], &["a", "b"], &["b"], &["b"], &[], &["a"], &["b"], false),
            ("own label removed by hand is re-added", &[], &["a"], &["a"], &[], &["a"], &[], &["a"], false),
            ("union of placements", &[], &[], &["a", "b"], &[], &["a", "b"], &[], &["a", "b"], false),
        ];
        for (name, labelled, own, desired, running, add, remove, after, waiting) in rows {
            let running = set(running);
            let p = plan(&labels(labelled), &managed(own), &set(desired), &set(&[]), |k| running.contains(k));
            // A waiting move asks every desired target for evidence; nothing else asks for any.
            let awaiting = if *waiting { set(desired) } else { set(&[]) };
            assert_eq!(p, Plan { add: set(add), remove: set(remove), managed: set(after), awaiting }, "{name}");
            assert_eq!(p.waiting(), *waiting, "{name}");
        }
    }

    /// A Placement with an invalid selector is stuck: what it placed stays placed.
    #[test]
    fn frozen_keys_are_neither_removed_nor_added() {
        // (name, labelled, managed, desired, frozen, add, remove, managed after)
        type Row<'a> = (
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let rows: &[Row] = &[
            ("the stuck Placement's label stays", &["a"], &["a"], &[], &["a"], &[], &[], &["a"]),
            ("a label removed by hand is not re-added", &[], &["a"], &[], &["a"], &[], &[], &[]),
            ("frozen does not claim a hand-set label", &["h"], &[], &[], &["h"], &[], &[], &[]),
            (
                "others still converge beside it",
                &["a", "b"],
                &["a", "b"],
                &["c"],
                &["a"],
                &["c"],
                &[],
                &["a", "b", "c"],
            ),
            ("a valid Placement may still add the key", &[], &[], &["a"], &["a"], &["a"], &[], &["a"]),
        ];
        for (name, labelled, own, desired, frozen, add, remove, after) in rows {
            let p = plan(&labels(labelled), &managed(own), &set(desired), &set(frozen), |_| true);
            assert_eq!((p.add, p.remove, p.managed), (set(add), set(remove), set(after)), "{name}");
        }
    }

    #[test]
    fn patch_only_when_something_changes() {
        let p = plan(&labels(&["a"]), &managed(&["a"]), &set(&["a"]), &set(&[]), |_| true);
        assert_eq!(p.patch(&managed(&["a"])), None);
        let p = plan(&labels(&["a"]), &managed(&["a"]), &set(&[]), &set(&[]), |_| true);
        let patch = p.patch(&managed(&["a"])).unwrap();
        assert_eq!(patch["labels"][assignment_label("a")], serde_json::Value::Null);
        assert_eq!(patch["annotations"][MANAGED_ANNOTATION], serde_json::Value::Null);
        // A move starts: the new label and the request for evidence go in one write...
        let mut moving = managed(&["a"]);
        let p = plan(&labels(&["a"]), &moving, &set(&["b"]), &set(&[]), |_| false);
        let patch = p.patch(&moving).unwrap();
        assert_eq!(patch["labels"][assignment_label("b")], ASSIGNMENT_SYNC);
        assert_eq!(patch["annotations"][AWAITING_EVIDENCE_ANNOTATION], "b");
        // ...nothing is written while it waits...
        moving.insert(MANAGED_ANNOTATION.into(), "a,b".into());
        moving.insert(AWAITING_EVIDENCE_ANNOTATION.into(), "b".into());
        let p = plan(&labels(&["a", "b"]), &moving, &set(&["b"]), &set(&[]), |_| false);
        assert_eq!(p.patch(&moving), None);
        // ...and the request goes with the old label.
        let p = plan(&labels(&["a", "b"]), &moving, &set(&["b"]), &set(&[]), |_| true);
        let patch = p.patch(&moving).unwrap();
        assert_eq!(patch["labels"][assignment_label("a")], serde_json::Value::Null);
        assert_eq!(patch["annotations"][AWAITING_EVIDENCE_ANNOTATION], serde_json::Value::Null);
    }
}
