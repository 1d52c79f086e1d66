//! The syncer's pure functions: transform, JSON comparison, status aggregation, naming and
//! the scrubbing of Secret values.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{config, json, object, text};
use crate::json::{first_difference, is_subset};
use crate::kcp::LogicalClusterName;
use crate::syncer::naming::{Locator, Observed, Record, TARGET_LABEL, TargetRef, ownership, target_key};
use crate::syncer::redact::{MIN_SCRUBBED, scrub};
use crate::syncer::status::{aggregate, translate};
use crate::syncer::transform::{Destination, desired, leave_replicas_to_autoscaler, skip_reason};

fn dest() -> Destination<'static> {
    Destination { namespace: "kcp-0123456789abcdef", target_key: "0123456789abcdef0123", origin_cluster: "ws1" }
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the upstream object holds, the copy goes to our namespace with our label, and
    /// never carries a status or kcp's bookkeeping.
    #[test]
    fn transform_never_panics_and_owns_the_copy(upstream in prop_oneof![object(), json()]) {
        let kind = upstream["kind"].as_str().unwrap_or_default().to_string();
        let _ = skip_reason(&kind, &upstream);
        let mut copy = desired(&upstream, &dest());
        prop_assert_eq!(&copy["metadata"]["namespace"], "kcp-0123456789abcdef");
        prop_assert_eq!(&copy["metadata"]["labels"][TARGET_LABEL], "0123456789abcdef0123");
        prop_assert!(copy.get("status").is_none());
        prop_assert!(copy["metadata"].get("uid").is_none());
        prop_assert!(copy["metadata"]["annotations"].get("kcp.io/cluster").is_none());
        prop_assert!(is_subset(&copy, &copy));
        prop_assert_eq!(first_difference(&copy, &copy), None);
        leave_replicas_to_autoscaler(&mut copy);
    }

    /// The comparison behind compare-before-write agrees with itself on any pair.
    #[test]
    fn subset_and_first_difference_agree(want in json(), have in json()) {
        prop_assert_eq!(is_subset(&want, &have), first_difference(&want, &have).is_none());
    }

    /// Per-target statuses are annotations a tenant can forge: sums saturate, nothing panics.
    #[test]
    fn status_aggregation_never_panics(
        kind in prop_oneof![Just("Deployment"), Just("Service")],
        per_target in prop::collection::btree_map("[a-d]", prop_oneof![json(), deployment_status()], 0..4),
        downstream in prop_oneof![json(), object()],
        applied in any::<bool>(),
        generation in any::<Option<i64>>(),
    ) {
        let _ = translate(&downstream, applied, generation);
        let got = aggregate(kind, &per_target);
        if kind == "Deployment" && per_target.len() > 1 {
            let sum = per_target.values().filter_map(|s| s["replicas"].as_i64()).fold(0i64, i64::saturating_add);
            if per_target.values().any(|s| !s["replicas"].is_null()) && per_target.values().any(Value::is_object) {
                prop_assert_eq!(got["replicas"].as_i64(), Some(sum));
            }
        }
    }

    /// Names derived from tenant-chosen names are always valid, whatever the name.
    #[test]
    fn naming_is_total(cluster in "[a-z0-9]{1,20}", name in text(), namespace in text(), annotation in text()) {
        let Ok(cluster) = LogicalClusterName::new(cluster) else { return Ok(()) };
        let key = target_key(&cluster, &name);
        prop_assert!(key.len() == 20 && key.bytes().all(|b| b.is_ascii_hexdigit()));
        let locator = Locator::new(TargetRef { cluster: cluster.to_string(), name }, &cluster, &namespace);
        let ns = locator.downstream_namespace();
        prop_assert!(ns.len() == 20 && ns.starts_with("kcp-"));
        prop_assert!(ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        prop_assert_eq!(Locator::from_annotation(&locator.to_annotation()), Some(locator.clone()));
        let _ = Locator::from_annotation(&annotation);
        let record = Record::parse(Some(annotation.as_str()));
        let observed = Observed { uid: &annotation, locator: Some(&annotation), claim: Some(&annotation) };
        let _ = ownership(&locator, &record, Some(observed));
    }

    /// A Secret value of scrubbable length never survives in what is repeated of a refusal.
    #[test]
    fn scrubbing_removes_every_value(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), MIN_SCRUBBED..40), 1..4),
        before in text(),
        after in text(),
        which in any::<prop::sample::Index>(),
    ) {
        let data: serde_json::Map<String, Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i}"), serde_json::to_value(ByteString(v.clone())).unwrap()))
            .collect();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "data": data});
        let value = String::from_utf8_lossy(which.get::<Vec<u8>>(&values)).into_owned();
        let said = format!("{before}{value}{after}");
        let got = scrub(&secret, &said);
        prop_assert!(!got.contains(&value), "{:?} → {:?}", said, got);
    }

    #[test]
    fn scrubbing_never_panics(obj in prop_oneof![object(), json()], said in text()) {
        let _ = scrub(&obj, &said);
    }
}

/// A Deployment status with counts anywhere in `i64`.
fn deployment_status() -> impl Strategy<Value = Value> {
    (any::<i64>(), prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>()], any::<Option<i64>>(), "True|False|x")
        .prop_map(|(replicas, available, observed, cond)| {
            json!({
                "replicas": replicas, "availableReplicas": available, "observedGeneration": observed,
                "conditions": [{"type": "Available", "status": cond}, {"type": "Progressing"}, 3],
            })
        })
}

#[test]
fn sums_of_forged_counts_saturate() {
    let big = json!({"replicas": i64::MAX});
    let per: BTreeMap<String, Value> = [("a".to_string(), big.clone()), ("b".to_string(), big)].into();
    assert_eq!(aggregate("Deployment", &per)["replicas"], i64::MAX);
}
