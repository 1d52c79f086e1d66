//! The reconcilers' pure functions: label selectors, the Placement schedule and status, and
//! the SyncTarget's conditions.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, LabelSelectorRequirement, Time};
use proptest::prelude::*;

use super::{config, duration, labels, text, timestamp};
use crate::apis::placement::selector::{matches, matches_selector};
use crate::apis::placement::v1alpha1::SelectedTarget;
use crate::apis::sync::v1alpha1::{SyncTargetSpec, SyncTargetStatus, SyncedResourceState, SyncedResourceStatus};
use crate::reconciler::placement::schedule::{Input, Outcome, TargetView, schedule};
use crate::reconciler::placement::status as placement_status;
use crate::reconciler::synctarget::status::{Credentials, MAX_CLOCK_SKEW, Observed, desired, malformed};

fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
    let operator = prop_oneof![Just("In"), Just("NotIn"), Just("Exists"), Just("DoesNotExist"), Just("Gt"), Just("")];
    (
        prop_oneof!["[a-c]", text()],
        operator,
        prop::option::of(prop::collection::vec(prop_oneof!["[x-z]", text()], 0..4)),
    )
        .prop_map(|(key, op, values)| LabelSelectorRequirement { key, operator: op.into(), values })
}

fn condition() -> impl Strategy<Value = Condition> {
    let type_ = prop_oneof![
        Just("Ready"),
        Just("SyncerReady"),
        Just("HeartbeatHealthy"),
        Just("Schedulable"),
        Just("Scheduled")
    ];
    (type_, prop_oneof![Just("True"), Just("False"), Just("Unknown")], text(), timestamp(), any::<Option<i64>>())
        .prop_map(|(type_, status, reason, at, generation)| Condition {
            type_: type_.into(),
            status: status.into(),
            reason,
            message: String::new(),
            observed_generation: generation,
            last_transition_time: Time(at),
        })
}

fn target() -> impl Strategy<Value = TargetView> {
    let name = prop_oneof![Just("a"), Just("b"), Just("c"), Just("d"), Just("e")];
    (
        name,
        labels(),
        prop::collection::vec("[p-r]", 0..3),
        any::<bool>(),
        prop::option::of(timestamp()),
        any::<bool>(),
        prop::option::of(timestamp()),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(|(name, labels, cells, ready, ready_since, unschedulable, evict_after, (apis, allows))| {
            TargetView {
                name: name.into(),
                labels,
                cells,
                ready,
                ready_since,
                unschedulable,
                evict_after,
                apis_available: apis,
                allows,
            }
        })
}

fn credentials() -> impl Strategy<Value = Credentials> {
    prop_oneof![
        Just(Credentials::PullMode),
        text().prop_map(|server| Credentials::Loaded { server, warning: None }),
        text().prop_map(|message| Credentials::Problem { reason: "KubeconfigInvalid", message }),
    ]
}

fn synced_resource() -> impl Strategy<Value = SyncedResourceStatus> {
    let state = prop_oneof![
        Just(SyncedResourceState::Syncing),
        Just(SyncedResourceState::MissingOnCluster),
        Just(SyncedResourceState::NotServedByKcp),
    ];
    (text(), text(), state, prop::option::of(text()), any::<i64>()).prop_map(|(group, kind, state, message, n)| {
        SyncedResourceStatus { group, kind, state, message, synced_objects: n, ..Default::default() }
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn selectors_are_total_and_fail_closed(
        match_labels in labels(),
        expressions in prop::collection::vec(requirement(), 0..4),
        object in labels(),
    ) {
        let got = matches(&match_labels, &expressions, &object);
        let unknown = expressions.iter().any(|r| !["In", "NotIn", "Exists", "DoesNotExist"].contains(&r.operator.as_str()));
        if unknown {
            prop_assert!(!got, "an unknown operator never matches");
        }
        let selector = LabelSelector { match_labels: Some(match_labels), match_expressions: Some(expressions) };
        prop_assert_eq!(matches_selector(&selector, &object), got);
        prop_assert!(matches_selector(&LabelSelector::default(), &object));
    }

    /// Any targets, times, graces and budgets: a decision, never a panic, and one that keeps
    /// its promises (only known targets, at most the number asked for, moves only of current
    /// targets and within the budget).
    #[test]
    fn schedule_is_total(
        targets in prop::collection::vec(target(), 0..6),
        current in prop::collection::btree_set(prop_oneof![Just("a"), Just("c"), Just("z")], 0..3),
        number in prop::option::of(prop_oneof![any::<i32>(), -2..5i32]),
        now in timestamp(),
        grace in duration(),
        budget in 0usize..4,
        selector in labels(),
        foreign in any::<bool>(),
    ) {
        let current: BTreeSet<String> = current.into_iter().map(str::to_string).collect();
        let d = schedule(&Input {
            placement: "ws|p",
            match_labels: &selector,
            match_expressions: &[],
            number_of_targets: number,
            targets: &targets,
            current: &current,
            now,
            failover_grace: grace,
            evictions_allowed: budget,
            foreign,
        });
        let names: BTreeSet<String> = targets.iter().map(|t| t.name.clone()).collect();
        prop_assert!(d.selected.is_subset(&names));
        prop_assert!(d.evicted.is_subset(&current) && d.evicted.len() <= budget);
        if let Some(n) = number {
            prop_assert!(d.selected.len() <= n.max(1) as usize);
        }
        prop_assert_eq!(d.outcome == Outcome::Scheduled, !d.selected.is_empty());
    }

    /// Whatever a tenant wrote into its SyncTarget's spec and status, the conditions come out,
    /// and none of them claims a transition from the future.
    #[test]
    fn synctarget_conditions_are_total(
        evict_after in prop::option::of(timestamp()),
        unschedulable in any::<bool>(),
        last_sync in prop::option::of(timestamp()),
        conditions in prop::collection::vec(condition(), 0..6),
        synced in prop::collection::vec(synced_resource(), 0..3),
        generation in any::<Option<i64>>(),
        credentials in credentials(),
        now in timestamp(),
        threshold in duration(),
        error in text(),
    ) {
        let spec = SyncTargetSpec { evict_after: evict_after.map(Time), unschedulable, ..Default::default() };
        let status = SyncTargetStatus {
            last_sync_time: last_sync.map(Time),
            conditions: conditions.clone(),
            synced_resources: synced,
            ..Default::default()
        };
        let d = desired(&Observed {
            spec: &spec,
            status: Some(&status),
            generation,
            credentials,
            now,
            heartbeat_threshold: threshold,
        });
        for c in &d.conditions {
            let ahead = std::time::Duration::try_from(c.last_transition_time.0.duration_since(now)).unwrap_or_default();
            prop_assert!(ahead <= MAX_CLOCK_SKEW, "{} at {} with now {}", c.type_, c.last_transition_time.0, now);
        }
        let _ = d.differs_from(Some(&status));
        let m = malformed(&conditions, generation, &error, now);
        prop_assert!(m.conditions.iter().all(|c| c.reason == "InvalidSpec"));
    }

    #[test]
    fn placement_status_is_total(
        previous in prop::collection::vec(condition(), 0..4),
        selected in prop::collection::vec(text(), 0..3),
        deferred in any::<usize>(),
        placed in any::<i32>(),
        generation in any::<Option<i64>>(),
        now in timestamp(),
    ) {
        let facts = placement_status::Facts {
            outcome: Ok(if selected.is_empty() { Outcome::NoReadyTargets } else { Outcome::Scheduled }),
            workspace: "root:x",
            selected: selected.iter().map(|n| SelectedTarget { workspace: "root:x".into(), name: n.clone() }).collect(),
            not_ready: selected.clone(),
            deferred,
            placed_namespaces: placed,
            generation,
            previous: &previous,
            now,
            held: None,
            overrides: vec![],
        };
        let s = placement_status::desired(&facts);
        let _ = placement_status::differs(&s, None);
        for c in &s.conditions {
            let ahead = std::time::Duration::try_from(c.last_transition_time.0.duration_since(now)).unwrap_or_default();
            prop_assert!(ahead <= MAX_CLOCK_SKEW);
        }
    }
}
