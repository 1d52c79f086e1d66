//! The Placement's desired status, as a pure function of the decision. Messages name targets
//! but never ages or counters that move on their own, so an unchanged world writes nothing.
//! Nothing here depends on another workspace beyond the targets that consent to this one: a
//! location workspace that does not exist and one that does not allow this workspace give the
//! same reason and message (only the path the tenant wrote appears), and no count of another
//! workspace's targets is ever shown.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::schedule::Outcome;
use crate::apis::placement::selector::Invalid;
use crate::apis::placement::v1alpha1::{OverrideStatus, PlacementPhase, PlacementStatus, SelectedTarget};
use crate::reconciler::synctarget::status::{corrected_times, same_conditions, transition_time};

/// What the status is computed from.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// `Err` when a selector is invalid: no decision is made, and `selected` and
    /// `placed_namespaces` are what the status said before (the Placement is stuck, not undone).
    pub outcome: Result<Outcome, Invalid>,
    /// Workspace path of the location workspace, as the tenant wrote it.
    pub workspace: &'a str,
    pub selected: Vec<SelectedTarget>,
    /// Selected targets that are not Ready.
    pub not_ready: Vec<String>,
    /// Moves due but held back by the eviction rate limit.
    pub deferred: usize,
    pub placed_namespaces: i32,
    pub generation: Option<i64>,
    pub previous: &'a [Condition],
    pub now: Timestamp,
    /// Why the namespaces keep their current targets for now, if they do.
    pub held: Option<Held>,
    /// Where each override applies (`status.overrides`).
    pub overrides: Vec<OverrideStatus>,
}

/// Why a Placement whose selectors are valid keeps what it placed instead of acting on its
/// choice. Either one is shown only about a workspace the Placement already had assignments
/// in, so it tells the tenant nothing new about other workspaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// The location workspace is not ready, or resolving its path failed for a moment.
    LocationNotReady,
    /// A namespace has waited longer than the move timeout for `target` to run it.
    MoveStalled { target: String, lacking: String },
}

/// Computes the status.
pub fn desired(f: &Facts<'_>) -> PlacementStatus {
    let (scheduled, reason, message) = match &f.outcome {
        Ok(Outcome::Scheduled) => {
            let names: Vec<&str> = f.selected.iter().map(|t| t.name.as_str()).collect();
            let mut m = format!("placed on {} in {}", names.join(", "), f.workspace);
            if f.deferred > 0 {
                m.push_str("; moves off unhealthy or draining targets wait for the eviction rate limit");
            }
            (true, "Scheduled", m)
        }
        Ok(Outcome::NoMatchingTargets) => (
            false,
            "NoMatchingTargets",
            format!("no SyncTarget in {} available to this workspace matches the location selector", f.workspace),
        ),
        Ok(Outcome::WorkspaceNotAllowed) => (false, "WorkspaceNotAllowed", not_allowed(f.workspace)),
        Ok(Outcome::NoReadyTargets) => (
            false,
            "TargetsNotReady",
            format!("SyncTargets in {} match but none is Ready and schedulable", f.workspace),
        ),
        Err(invalid) => (
            false,
            "InvalidSelector",
            format!(
                "{invalid}; the Placement is stuck until this is fixed: the namespaces it placed keep their \
                 targets, and nothing is added, moved or removed"
            ),
        ),
    };
    let (scheduled, reason, message) = match (&f.outcome, &f.held) {
        (Ok(_), Some(Held::LocationNotReady)) => (
            false,
            "LocationWorkspaceNotReady",
            format!(
                "location workspace {} is not ready or could not be resolved; the namespaces placed there keep \
                 their targets until it can be",
                f.workspace
            ),
        ),
        (Ok(_), Some(Held::MoveStalled { target, lacking })) => (
            false,
            "MoveStalled",
            format!(
                "moving to {target} waits: {lacking}; the namespaces keep running on their current targets, and \
                 the move completes once {target} runs everything"
            ),
        ),
        _ => (scheduled, reason, message),
    };
    let ready = if !scheduled {
        (false, reason, message.clone())
    } else if f.not_ready.is_empty() {
        (true, "Ready", "every chosen SyncTarget is Ready".to_string())
    } else {
        (false, "TargetsNotReady", format!("chosen SyncTargets not Ready: {}", f.not_ready.join(", ")))
    };
    let mut conditions =
        vec![condition("Ready", ready.0, ready.1, ready.2, f), condition("Scheduled", scheduled, reason, message, f)];
    if !f.overrides.is_empty() {
        let (ok, reason, message) = overrides_valid(&f.overrides);
        conditions.push(condition("OverridesValid", ok, reason, message, f));
    }
    PlacementStatus {
        phase: Some(if f.selected.is_empty() { PlacementPhase::Pending } else { PlacementPhase::Bound }),
        selected_targets: f.selected.clone(),
        conditions,
        observed_generation: f.generation,
        placed_namespaces: Some(f.placed_namespaces),
        target_names: Some(f.selected.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(",")),
        overrides: f.overrides.clone(),
    }
}

/// The `OverridesValid` condition: the first invalid override and why, naming what it does
/// meanwhile (its objects are held, not synced without it).
fn overrides_valid(overrides: &[OverrideStatus]) -> (bool, &'static str, String) {
    let invalid: Vec<&OverrideStatus> = overrides.iter().filter(|o| o.invalid.is_some()).collect();
    match invalid.first() {
        None => (true, "Valid", format!("{} override(s) valid", overrides.len())),
        Some(first) => (
            false,
            "InvalidOverride",
            format!(
                "override {} is invalid: {}{}; the objects it selects are not synced to its targets until it is \
                 fixed, and their copies there are left as they are",
                first.name,
                first.invalid.as_deref().unwrap_or_default(),
                match invalid.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            ),
        ),
    }
}

/// The one message for a location workspace that is not this one's to use: the same whether
/// the workspace is missing, has no SyncTargets, or has some (matching or not) without consent.
pub fn not_allowed(workspace: &str) -> String {
    format!(
        "no SyncTarget in workspace {workspace} lists this workspace in spec.allowedWorkspaces, \
         or {workspace} does not exist"
    )
}

/// Whether writing `desired` would change `current` (condition timestamps ignored).
pub fn differs(desired: &PlacementStatus, current: Option<&PlacementStatus>) -> bool {
    let empty = PlacementStatus::default();
    let c = current.unwrap_or(&empty);
    c.phase != desired.phase
        || c.selected_targets != desired.selected_targets
        || c.observed_generation != desired.observed_generation
        || c.placed_namespaces != desired.placed_namespaces
        || c.target_names.as_deref().unwrap_or_default() != desired.target_names.as_deref().unwrap_or_default()
        || c.overrides != desired.overrides
        || !same_conditions(&c.conditions, &desired.conditions)
        || corrected_times(&c.conditions, &desired.conditions)
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, f: &Facts<'_>) -> Condition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status flips (and never lies in the future).
    let kept = f.previous.iter().find(|p| p.type_ == type_ && p.status == status).map(|p| &p.last_transition_time);
    let last_transition_time = transition_time(kept, f.now);
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: f.generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(outcome: Result<Outcome, Invalid>, selected: &[&str], not_ready: &[&str]) -> Facts<'static> {
        Facts {
            outcome,
            workspace: "root:clusters",
            selected: selected
                .iter()
                .map(|n| SelectedTarget { workspace: "root:clusters".into(), name: n.to_string() })
                .collect(),
            not_ready: not_ready.iter().map(|n| n.to_string()).collect(),
            deferred: 0,
            placed_namespaces: 2,
            generation: Some(3),
            previous: &[],
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
            held: None,
            overrides: vec![],
        }
    }

    fn cond<'a>(s: &'a PlacementStatus, t: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn table() {
        let cases = [
            (
                "bound and ready",
                facts(Ok(Outcome::Scheduled), &["a"], &[]),
                PlacementPhase::Bound,
                ("True", "Ready"),
                ("True", "Scheduled"),
            ),
            (
                "bound, target down",
                facts(Ok(Outcome::Scheduled), &["a"], &["a"]),
                PlacementPhase::Bound,
                ("False", "TargetsNotReady"),
                ("True", "Scheduled"),
            ),
            (
                "no match",
                facts(Ok(Outcome::NoMatchingTargets), &[], &[]),
                PlacementPhase::Pending,
                ("False", "NoMatchingTargets"),
                ("False", "NoMatchingTargets"),
            ),
            (
                "no consent",
                facts(Ok(Outcome::WorkspaceNotAllowed), &[], &[]),
                PlacementPhase::Pending,
                ("False", "WorkspaceNotAllowed"),
                ("False", "WorkspaceNotAllowed"),
            ),
            (
                "none ready",
                facts(Ok(Outcome::NoReadyTargets), &[], &[]),
                PlacementPhase::Pending,
                ("False", "TargetsNotReady"),
                ("False", "TargetsNotReady"),
            ),
            (
                "invalid selector before anything was placed",
                facts(Err(invalid()), &[], &[]),
                PlacementPhase::Pending,
                ("False", "InvalidSelector"),
                ("False", "InvalidSelector"),
            ),
            (
                "invalid selector keeps what was placed",
                facts(Err(invalid()), &["a"], &[]),
                PlacementPhase::Bound,
                ("False", "InvalidSelector"),
                ("False", "InvalidSelector"),
            ),
        ];
        let held = |f: Facts<'static>, held: Held| Facts { held: Some(held), ..f };
        let stalled = Held::MoveStalled { target: "b".into(), lacking: "Deployment web is not available there".into() };
        let cases = cases.into_iter().chain([
            (
                "location workspace not ready: what was placed stays",
                held(facts(Ok(Outcome::Scheduled), &["a"], &[]), Held::LocationNotReady),
                PlacementPhase::Bound,
                ("False", "LocationWorkspaceNotReady"),
                ("False", "LocationWorkspaceNotReady"),
            ),
            (
                "move stalled",
                held(facts(Ok(Outcome::Scheduled), &["b"], &[]), stalled.clone()),
                PlacementPhase::Bound,
                ("False", "MoveStalled"),
                ("False", "MoveStalled"),
            ),
            (
                "an invalid selector wins over a stalled move",
                held(facts(Err(invalid()), &["b"], &[]), stalled),
                PlacementPhase::Bound,
                ("False", "InvalidSelector"),
                ("False", "InvalidSelector"),
            ),
        ]);
        for (name, f, phase, ready, scheduled) in cases {
            let s = desired(&f);
            assert_eq!(s.phase, Some(phase), "{name}");
            assert_eq!(cond(&s, "Ready"), ready, "{name}");
            assert_eq!(cond(&s, "Scheduled"), scheduled, "{name}");
            assert_eq!(s.placed_namespaces, Some(2), "{name}");
            let names: Vec<String> = f.selected.iter().map(|t| t.name.clone()).collect();
            assert_eq!(s.target_names.as_deref(), Some(names.join(",").as_str()), "{name}");
        }
        // Every chosen target shows in the Targets column, not only the first.
        let two = desired(&facts(Ok(Outcome::Scheduled), &["a", "b"], &[]));
        assert_eq!(two.target_names.as_deref(), Some("a,b"));
    }

    fn invalid() -> Invalid {
        Invalid {
            field: "spec.namespaceSelector.matchExpressions[0].values".into(),
            problem: crate::apis::placement::selector::Problem::Values("Exists"),
        }
    }

    fn message(s: &PlacementStatus, t: &str) -> String {
        s.conditions.iter().find(|c| c.type_ == t).map(|c| c.message.clone()).unwrap_or_default()
    }

    /// Whatever the location workspace holds, a tenant without consent reads one message, in
    /// which only the path it wrote itself appears.
    #[test]
    fn not_allowed_reads_the_same_for_every_workspace() {
        let at = |ws: &'static str| {
            let mut f = facts(Ok(Outcome::WorkspaceNotAllowed), &[], &[]);
            f.workspace = ws;
            let s = desired(&f);
            (s.clone(), message(&s, "Scheduled").replace(ws, "<ws>"), message(&s, "Ready").replace(ws, "<ws>"))
        };
        let (missing, m1, r1) = at("root:does-not-exist");
        let (private, m2, r2) = at("root:private");
        assert_eq!((&m1, &r1), (&m2, &r2));
        assert!(!m1.chars().any(|c| c.is_ascii_digit()), "no counts: {m1}");
        assert_eq!(missing.selected_targets, private.selected_targets);
        assert_eq!(missing.phase, Some(PlacementPhase::Pending));
        assert_eq!(missing.target_names.as_deref(), Some(""));
    }

    #[test]
    fn invalid_selector_names_the_field_and_says_it_is_stuck() {
        let s = desired(&facts(Err(invalid()), &["a"], &[]));
        let m = message(&s, "Scheduled");
        assert!(
            m.starts_with("spec.namespaceSelector.matchExpressions[0].values: operator Exists takes no values"),
            "{m}"
        );
        assert!(m.contains("stuck") && m.contains("keep their targets"), "{m}");
        assert_eq!(s.selected_targets.len(), 1, "the earlier choice stays in status");
    }

    #[test]
    fn unchanged_world_is_not_rewritten() {
        let first = desired(&facts(Ok(Outcome::Scheduled), &["a"], &[]));
        let mut later = facts(Ok(Outcome::Scheduled), &["a"], &[]);
        later.now = "2026-01-02T00:00:00Z".parse().unwrap();
        later.previous = &[];
        let second = desired(&later);
        assert!(!differs(&second, Some(&first)), "only timestamps differ");
        let moved = desired(&facts(Ok(Outcome::Scheduled), &["b"], &[]));
        assert!(differs(&moved, Some(&first)));
    }

    #[test]
    fn overrides_show_where_they_apply_and_name_the_first_invalid_one() {
        let valid = OverrideStatus { name: "eu".into(), targets: vec!["a".into()], invalid: None };
        let bad = |n: &str| OverrideStatus {
            name: n.into(),
            targets: vec![],
            invalid: Some("mergePatch may not set kind".into()),
        };
        // (overrides, OverridesValid (status, reason), message starts with)
        let cases = [
            (vec![], None, ""),
            (vec![valid.clone()], Some(("True", "Valid")), "1 override(s) valid"),
            (
                vec![valid.clone(), bad("x"), bad("y")],
                Some(("False", "InvalidOverride")),
                "override x is invalid: mergePatch may not set kind (and 1 more); the objects it selects are not synced",
            ),
        ];
        for (overrides, want, start) in cases {
            let mut f = facts(Ok(Outcome::Scheduled), &["a"], &[]);
            f.overrides = overrides.clone();
            let s = desired(&f);
            assert_eq!(s.overrides, overrides);
            let got = s.conditions.iter().find(|c| c.type_ == "OverridesValid");
            assert_eq!(got.map(|c| (c.status.as_str(), c.reason.as_str())), want);
            assert!(got.is_none_or(|c| c.message.starts_with(start)), "{got:?}");
            let without = desired(&facts(Ok(Outcome::Scheduled), &["a"], &[]));
            assert_eq!(differs(&s, Some(&without)), !overrides.is_empty(), "a change of status.overrides is written");
        }
    }
}
