//! Choosing the SyncTargets of one Placement: a pure function of the candidates, the current
//! choice (`status.selectedTargets`, the stickiness input), the clock and the eviction budget.
//!
//! Rules, in order:
//! - targets of another workspace count only with their consent (`spec.allowedWorkspaces`);
//!   the others are invisible: without any consenting target the answer is
//!   `WorkspaceNotAllowed` whether or not the workspace has matching targets, or exists, so a
//!   Placement cannot probe another tenant's SyncTargets;
//! - only targets matching the location selector count; a current target that stops matching
//!   is dropped at once (the user changed their mind);
//! - a current target is kept while healthy, cordoned (cordon keeps what runs) or not Ready for
//!   less than the failover grace; it is moved off when `evictAfter` has passed (drain), or,
//!   with `numberOfTargets` set, when it has been not Ready longer than the grace and a fresh
//!   candidate can replace it. Moves spend the eviction budget; what exceeds it waits;
//! - the remaining places go to fresh candidates (Ready, schedulable, not draining, APIs
//!   available), preferring cells not covered yet, then a rank that is a hash of (placement,
//!   target): deterministic, and spreading different Placements over different targets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use crate::apis::placement::selector;

/// What the scheduler needs to know about one SyncTarget of the location workspace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub cells: Vec<String>,
    /// `Ready` condition is True.
    pub ready: bool,
    /// When `Ready` last changed (its `lastTransitionTime`); with `ready == false` the start of
    /// the outage.
    pub ready_since: Option<Timestamp>,
    pub unschedulable: bool,
    pub evict_after: Option<Timestamp>,
    /// `APIsAvailable` is not False.
    pub apis_available: bool,
    /// The target accepts namespaces of the Placement's workspace.
    pub allows: bool,
}

/// Inputs of one decision.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// Stable identity of the Placement (cluster|name), for ranking.
    pub placement: &'a str,
    pub match_labels: &'a BTreeMap<String, String>,
    pub match_expressions: &'a [LabelSelectorRequirement],
    pub number_of_targets: Option<i32>,
    pub targets: &'a [TargetView],
    /// Names of the currently selected targets in the location workspace.
    pub current: &'a BTreeSet<String>,
    /// The targets are another workspace's (only those with `allows` may be seen).
    pub foreign: bool,
    pub now: Timestamp,
    pub failover_grace: Duration,
    /// Moves (drain or failover) allowed now.
    pub evictions_allowed: usize,
}

/// Why nothing or something was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Scheduled,
    NoMatchingTargets,
    /// Another workspace, and none of its targets consents (or it has none, or does not exist).
    WorkspaceNotAllowed,
    /// Targets match but none is Ready and schedulable.
    NoReadyTargets,
}

/// The result of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Chosen target names, sorted.
    pub selected: BTreeSet<String>,
    pub outcome: Outcome,
    /// Current targets moved off now (counted against the eviction budget).
    pub evicted: BTreeSet<String>,
    /// Moves that were due but exceeded the budget.
    pub deferred: usize,
    /// When the clock alone would change the decision (grace expiry, `evictAfter`).
    pub requeue_after: Option<Duration>,
}

fn rank(placement: &str, target: &str) -> String {
    crate::json::sha256_hex(format!("{placement}/{target}").as_bytes(), 8)
}

fn until(now: Timestamp, at: Timestamp) -> Option<Duration> {
    Duration::try_from(at.duration_since(now)).ok().filter(|d| !d.is_zero())
}

/// When the failover grace of a target not Ready since `since` ends. `since` comes from a
/// `lastTransitionTime` its tenant can write: one from the future counts as now (an outage
/// cannot have started later than now), and an end past jiff's range (year 9999) is `None`
/// instead of the panic `+` would raise.
fn grace_ends(since: Timestamp, now: Timestamp, grace: Duration) -> Option<Timestamp> {
    since.min(now).checked_add(grace).ok()
}

/// See the module docs.
pub fn schedule(input: &Input<'_>) -> Decision {
    // Consent first: what a target without it looks like must not shape the answer.
    let visible: Vec<&TargetView> = input.targets.iter().filter(|t| t.allows).collect();
    let consenting: Vec<&TargetView> = visible
        .iter()
        .copied()
        .filter(|t| selector::matches(input.match_labels, input.match_expressions, &t.labels))
        .collect();
    let empty = |outcome| Decision {
        selected: BTreeSet::new(),
        outcome,
        evicted: BTreeSet::new(),
        deferred: 0,
        requeue_after: None,
    };
    if visible.is_empty() && input.foreign {
        return empty(Outcome::WorkspaceNotAllowed);
    }
    if consenting.is_empty() {
        return empty(Outcome::NoMatchingTargets);
    }
    let now = input.now;
    let draining = |t: &TargetView| t.evict_after.is_some_and(|at| at <= now);
    let fresh: Vec<&TargetView> = consenting
        .iter()
        .copied()
        .filter(|t| !input.current.contains(&t.name))
        .filter(|t| t.ready && !t.unschedulable && !draining(t) && t.apis_available)
        .collect();
    let want = input.number_of_targets.map(|n| n.max(1) as usize);

    let mut kept: Vec<&TargetView> = vec![];
    let mut evicted = BTreeSet::new();
    let (mut budget, mut deferred, mut replacements) = (input.evictions_allowed, 0, fresh.len());
    let mut wake: Vec<Duration> = vec![];
    for t in consenting.iter().copied().filter(|t| input.current.contains(&t.name)) {
        let failed_over = !t.ready
            && match t.ready_since.map(|since| grace_ends(since, now, input.failover_grace)) {
                Some(Some(due)) if due > now => {
                    wake.extend(until(now, due));
                    false
                }
                // The grace would end past the last representable time: not yet, ever.
                Some(None) => false,
                _ => want.is_some() && replacements > 0,
            };
        if let Some(at) = t.evict_after.filter(|at| *at > now) {
            wake.extend(until(now, at));
        }
        if draining(t) || failed_over {
            if budget > 0 {
                budget -= 1;
                replacements = replacements.saturating_sub(usize::from(failed_over));
                evicted.insert(t.name.clone());
                continue;
            }
            deferred += 1;
        }
        kept.push(t);
    }
    // Ranks are hashes: computed once per target, not once per comparison.
    let by_rank = |t: &&TargetView| rank(input.placement, &t.name);
    if let Some(n) = want
        && kept.len() > n
    {
        kept.sort_by_cached_key(by_rank);
        kept.truncate(n);
    }
    let mut selected: BTreeSet<String> = kept.iter().map(|t| t.name.clone()).collect();
    let mut cells: BTreeSet<&str> = kept.iter().flat_map(|t| t.cells.iter().map(String::as_str)).collect();
    let mut pool = fresh;
    let Some(want) = want else {
        // Every candidate is wanted: nothing to rank or spread.
        selected.extend(pool.iter().map(|t| t.name.clone()));
        let outcome = if selected.is_empty() { Outcome::NoReadyTargets } else { Outcome::Scheduled };
        return Decision { selected, outcome, evicted, deferred, requeue_after: wake.into_iter().min() };
    };
    pool.sort_by_cached_key(by_rank);
    while selected.len() < want && !pool.is_empty() {
        // Prefer a candidate whose cells are all uncovered yet; otherwise the best ranked.
        let spreads = |t: &&TargetView| !t.cells.is_empty() && t.cells.iter().all(|c| !cells.contains(c.as_str()));
        let pick = pool.iter().position(spreads).unwrap_or(0);
        let t = pool.remove(pick);
        cells.extend(t.cells.iter().map(String::as_str));
        selected.insert(t.name.clone());
    }
    let outcome = if selected.is_empty() { Outcome::NoReadyTargets } else { Outcome::Scheduled };
    Decision { selected, outcome, evicted, deferred, requeue_after: wake.into_iter().min() }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
