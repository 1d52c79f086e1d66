//! Why each SyncTarget of a Placement's location workspace is chosen or not: the rules of
//! `schedule.rs`, told per target, for `tmc placement preview`. Derived from the scheduler's own
//! [`Decision`], so a target shown as chosen is one [`schedule`](super::schedule::schedule)
//! chose; the reason only says which rule decided it (table-tested against every scheduling
//! case).

use serde::Serialize;

use super::schedule::{Decision, Input, TargetView};
use crate::apis::placement::selector;

/// The rule that decided one target, in the order the scheduler applies them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Why {
    /// Chosen now: Ready, schedulable, not draining, syncing every kind the namespaces hold.
    Chosen,
    /// Already selected (`status.selectedTargets`) and kept: a Placement stays where it runs.
    Kept,
    /// Already selected, not Ready, and kept: within the failover grace, or no replacement.
    KeptNotReady,
    /// Already selected and cordoned: cordon keeps what runs there.
    KeptCordoned,
    /// Another workspace's target that does not list this workspace in `spec.allowedWorkspaces`.
    NotAllowed,
    /// Its labels do not match `spec.locationSelector`.
    LabelsDoNotMatch,
    /// Already selected, `spec.evictAfter` has passed: moved off (drain).
    Drained,
    /// Already selected, not Ready past the failover grace, and a replacement is Ready: moved off.
    FailedOver,
    /// Its `Ready` condition is not True.
    NotReady,
    /// `spec.unschedulable`: takes nothing new.
    Cordoned,
    /// `spec.evictAfter` has passed: takes nothing new.
    Draining,
    /// It does not sync (`status.syncedResources` state `Syncing`) every kind the namespaces hold.
    ApisUnavailable,
    /// Eligible, but `spec.numberOfTargets` was filled by targets kept, in uncovered cells, or
    /// ranked first (a hash of Placement and target).
    NumberOfTargetsFilled,
}

impl Why {
    /// One line for a person.
    pub fn text(self) -> &'static str {
        match self {
            Why::Chosen => "Ready, matches, syncs the namespaces' kinds",
            Why::Kept => "already selected: stays",
            Why::KeptNotReady => "already selected, not Ready: kept within the failover grace or without a replacement",
            Why::KeptCordoned => "already selected, cordoned: cordon keeps what runs",
            Why::NotAllowed => "its spec.allowedWorkspaces does not list this workspace",
            Why::LabelsDoNotMatch => "labels do not match spec.locationSelector",
            Why::Drained => "spec.evictAfter has passed: moved off",
            Why::FailedOver => "not Ready past the failover grace: moved to a Ready target",
            Why::NotReady => "not Ready",
            Why::Cordoned => "cordoned (spec.unschedulable): takes nothing new",
            Why::Draining => "draining (spec.evictAfter passed): takes nothing new",
            Why::ApisUnavailable => "does not sync every kind the selected namespaces hold",
            Why::NumberOfTargetsFilled => {
                "spec.numberOfTargets filled by targets kept, spread over cells or ranked first"
            }
        }
    }
}

/// One target and the rule that decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub name: String,
    pub chosen: bool,
    pub why: Why,
}

/// Every target of `input`, sorted by name, with the rule that decided it in `decision`
/// (the result of `schedule(input)`).
pub fn explain(input: &Input<'_>, decision: &Decision) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = input.targets.iter().map(|t| candidate(input, decision, t)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn candidate(input: &Input<'_>, decision: &Decision, t: &TargetView) -> Candidate {
    let chosen = decision.selected.contains(&t.name);
    let current = input.current.contains(&t.name);
    let draining = t.evict_after.is_some_and(|at| at <= input.now);
    let why = if chosen {
        match (current, t.ready, t.unschedulable) {
            (false, _, _) => Why::Chosen,
            (true, false, _) => Why::KeptNotReady,
            (true, true, true) => Why::KeptCordoned,
            (true, true, false) => Why::Kept,
        }
    } else if !t.allows {
        Why::NotAllowed
    } else if !selector::matches(input.match_labels, input.match_expressions, &t.labels) {
        Why::LabelsDoNotMatch
    } else if decision.evicted.contains(&t.name) {
        if draining { Why::Drained } else { Why::FailedOver }
    } else if current {
        // Kept by the rules but trimmed to spec.numberOfTargets.
        Why::NumberOfTargetsFilled
    } else if !t.ready {
        Why::NotReady
    } else if t.unschedulable {
        Why::Cordoned
    } else if draining {
        Why::Draining
    } else if !t.apis_available {
        Why::ApisUnavailable
    } else {
        Why::NumberOfTargetsFilled
    };
    Candidate { name: t.name.clone(), chosen, why }
}
