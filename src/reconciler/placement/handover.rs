//! Make-before-break on evidence: when a namespace moves (drain, failover, a changed selector),
//! its old assignment label goes only once the new target has *applied* every object of the
//! namespace it should run, at the generation kcp holds now, and every such Deployment is
//! available there. The evidence is what the target's syncer records on each kcp object
//! ([`crate::apis::applied`]); the intent (the syncer's finalizer) is not enough, because a
//! cluster may still refuse the object (admission, quota, an invalid field for its version).
//!
//! The wait is bounded only in what it reports: after the move timeout the namespace keeps its
//! old target, the Placement says `MoveStalled` (naming the target and one object that lacks
//! evidence), and the check keeps running, so the move completes as soon as the evidence does.
//! Where a namespace started to wait is kept in memory: a restarted manager starts the clock
//! again, which only delays the condition, never the workload.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::Controller;
use super::reconcile::{is_ready, syncing_kinds};
use crate::apis::applied::{Applied, applied_annotation};
use crate::apis::names::syncer_finalizer;
use crate::kcp::{ClusterKey, LogicalClusterName};

/// What the decision knows of one object the new target should run.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// `Kind name`, for the condition.
    pub name: String,
    pub kind: String,
    /// The kcp object's current `metadata.generation`.
    pub generation: Option<i64>,
    /// The target's evidence, if any counts (it parses and the object carries the target's
    /// syncer finalizer).
    pub evidence: Option<Applied>,
}

/// Why a target does not run a namespace yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lacking {
    /// The manager's view of kcp has not listed every kind the target syncs, or has not seen
    /// the namespace's new assignment yet: nothing is concluded from a partial view.
    ViewNotSynced,
    TargetNotReady,
    NotApplied(String),
    OutOfDate(String),
    NotAvailable(String),
}

impl fmt::Display for Lacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lacking::ViewNotSynced => {
                write!(f, "the manager has not finished listing the namespace's objects and assignment")
            }
            Lacking::TargetNotReady => write!(f, "the target is not Ready"),
            Lacking::NotApplied(o) => write!(f, "{o} has not been applied there (see the object's Events)"),
            Lacking::OutOfDate(o) => write!(f, "the latest generation of {o} has not been applied there"),
            Lacking::NotAvailable(o) => write!(f, "{o} is not available there"),
        }
    }
}

/// Whether a target runs a namespace: `Ok` when it may replace the old one, otherwise the first
/// thing lacking. `ready`: the target is Ready; `view_synced`: the view of every kind it syncs
/// has listed; `objects`: what it should run of the namespace.
pub fn verdict(ready: bool, view_synced: bool, objects: impl IntoIterator<Item = Object>) -> Result<(), Lacking> {
    if !ready {
        return Err(Lacking::TargetNotReady);
    }
    if !view_synced {
        return Err(Lacking::ViewNotSynced);
    }
    for o in objects {
        let Some(evidence) = &o.evidence else { return Err(Lacking::NotApplied(o.name)) };
        if evidence.generation != o.generation {
            return Err(Lacking::OutOfDate(o.name));
        }
        if o.kind == "Deployment" && evidence.available != Some(true) {
            return Err(Lacking::NotAvailable(o.name));
        }
    }
    Ok(())
}

/// A namespace waiting for a new target, since `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub since: Instant,
    pub target_key: String,
    pub lacking: Lacking,
    /// What the Placements were last told of it: the target and what it lacks, once stalled.
    pub reported: Option<(String, Lacking)>,
}

impl Move {
    /// Whether the wait has outlasted `timeout` at `now`.
    pub fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(self.since) >= timeout
    }
}

/// The wait of a namespace after this reconcile, and whether what its Placements show of it
/// changes (a move became stalled, stopped waiting, or now lacks something else). `waiting` is
/// the target and what it lacks when stale labels are kept, `None` when the namespace no longer
/// waits. The clock starts with the first wait and runs on while the namespace waits, whichever
/// target it waits for.
pub fn track(
    previous: Option<&Move>,
    waiting: Option<(String, Lacking)>,
    now: Instant,
    timeout: Duration,
) -> (Option<Move>, bool) {
    let before = previous.and_then(|p| p.reported.clone());
    let Some((target_key, lacking)) = waiting else { return (None, before.is_some()) };
    let since = previous.map_or(now, |p| p.since);
    let mut m = Move { since, target_key, lacking, reported: None };
    m.reported = m.stalled(now, timeout).then(|| (m.target_key.clone(), m.lacking.clone()));
    let changed = m.reported != before;
    (Some(m), changed)
}

impl Controller {
    /// Whether the target `target` (key `tkey`) runs the kcp namespace `ns` (see [`verdict`]), as
    /// far as the manager's view of kcp holds the namespace's objects (a kind the view does not
    /// watch is judged by the target's Ready alone).
    pub(super) fn runs(&self, target: &ClusterKey, tkey: &str, ns: &ClusterKey) -> Result<(), Lacking> {
        let Ok(Some(t)) = self.directory.target(target) else { return Err(Lacking::TargetNotReady) };
        let syncing = syncing_kinds(&t);
        let slots: Vec<_> = (0..).map_while(|i| self.upstream.resource(i).map(|r| (i, r))).collect();
        let view_synced = slots
            .iter()
            .filter(|(_, r)| syncing.contains(&(r.api.group.clone(), r.api.kind.clone())))
            .all(|(i, _)| self.upstream.synced(*i));
        // The objects come from the namespaces the view has assigned to the target; a view that
        // has not seen the new assignment yet would offer none, and "no object lacks evidence"
        // would let the old target go at once (seen in e2e 65 ms after the label was added).
        let assigned = self.upstream.assigned_targets(&ns.cluster, &ns.name).contains(tkey);
        let view_synced = view_synced && assigned;
        let finalizer = syncer_finalizer(tkey);
        let annotation = applied_annotation(tkey);
        let mut objects: Vec<Object> = self
            .upstream
            .assigned_keys(tkey)
            .into_iter()
            .filter(|k| k.key.cluster == ns.cluster && k.key.namespace.as_deref() == Some(ns.name.as_str()))
            .filter_map(|k| Some((self.upstream.resource(k.resource?)?, self.upstream.object(k.resource?, &k.key)?)))
            .filter(|(r, _)| syncing.contains(&(r.api.group.clone(), r.api.kind.clone())))
            .filter(|(_, o)| o.metadata.deletion_timestamp.is_none())
            .filter(|(_, o)| {
                let labels = o.metadata.labels.clone().unwrap_or_default();
                self.upstream.selects(&ns.cluster, &ns.name, tkey, &labels)
            })
            .filter(|(r, o)| {
                let v = serde_json::to_value(o.as_ref()).unwrap_or_default();
                crate::syncer::transform::skip_reason(&r.api.kind, &v).is_none()
            })
            .map(|(r, o)| {
                let runs = o.metadata.finalizers.iter().flatten().any(|f| *f == finalizer);
                let recorded = o.metadata.annotations.as_ref().and_then(|a| a.get(&annotation));
                Object {
                    name: format!("{} {}", r.api.kind, o.metadata.name.as_deref().unwrap_or_default()),
                    kind: r.api.kind.clone(),
                    generation: o.metadata.generation,
                    evidence: recorded.filter(|_| runs).and_then(|v| Applied::decode(v)),
                }
            })
            .collect();
        // By name, so the object a stalled move names is the same at every reconcile.
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        verdict(is_ready(&t), view_synced, objects)
    }

    /// Records the wait of namespace `ns` after a reconcile; returns whether what the
    /// Placements show of it changed (a move started or stopped being stalled, or now lacks
    /// something else).
    pub(super) fn note_move(&self, ns: &ClusterKey, waiting: Option<(String, Lacking)>) -> bool {
        let mut moves = self.moves.lock().expect("moves poisoned");
        let (after, changed) = track(moves.get(ns), waiting, Instant::now(), self.settings.move_timeout);
        match after {
            Some(m) => moves.insert(ns.clone(), m),
            None => moves.remove(ns),
        };
        changed
    }

    /// The first stalled move among the namespaces `namespaces` of `cluster` to one of the
    /// targets `keys`: the target key and what it lacks.
    pub(super) fn stalled_move(
        &self,
        cluster: &LogicalClusterName,
        namespaces: &BTreeSet<String>,
        keys: &BTreeSet<String>,
    ) -> Option<(String, Lacking)> {
        let moves = self.moves.lock().expect("moves poisoned");
        let mut stalled: Vec<_> = moves
            .iter()
            .filter(|(ns, m)| ns.cluster == *cluster && namespaces.contains(&ns.name) && keys.contains(&m.target_key))
            .filter_map(|(ns, m)| Some((ns.name.clone(), m.reported.clone()?)))
            .collect();
        // The same one each time, so the condition does not flap between namespaces.
        stalled.sort_by(|a, b| a.0.cmp(&b.0));
        stalled.into_iter().next().map(|(_, reported)| reported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, generation: Option<i64>, evidence: Option<(Option<i64>, Option<bool>)>) -> Object {
        Object {
            name: format!("{kind} x"),
            kind: kind.into(),
            generation,
            evidence: evidence.map(|(generation, available)| Applied { generation, hash: "h".into(), available }),
        }
    }

    #[test]
    fn the_old_assignment_goes_only_on_evidence_for_every_object() {
        let applied = |g| Some((g, None));
        let up = |g| Some((g, Some(true)));
        let down = |g| Some((g, Some(false)));
        // (name, ready, view synced, objects, verdict)
        type Row = (&'static str, bool, bool, Vec<Object>, Result<(), Lacking>);
        let cases: Vec<Row> = vec![
            ("nothing to run", true, true, vec![], Ok(())),
            (
                "all applied",
                true,
                true,
                vec![obj("ConfigMap", None, applied(None)), obj("Deployment", Some(2), up(Some(2)))],
                Ok(()),
            ),
            ("target not Ready", false, true, vec![], Err(Lacking::TargetNotReady)),
            ("view not listed yet", true, false, vec![], Err(Lacking::ViewNotSynced)),
            (
                "refused by the cluster: finalizer but no evidence",
                true,
                true,
                vec![obj("ConfigMap", None, applied(None)), obj("Deployment", Some(1), None)],
                Err(Lacking::NotApplied("Deployment x".into())),
            ),
            (
                "evidence of an older generation",
                true,
                true,
                vec![obj("Deployment", Some(3), up(Some(2)))],
                Err(Lacking::OutOfDate("Deployment x".into())),
            ),
            (
                "deployment applied, not available",
                true,
                true,
                vec![obj("Deployment", Some(2), down(Some(2)))],
                Err(Lacking::NotAvailable("Deployment x".into())),
            ),
            (
                "deployment evidence without availability",
                true,
                true,
                vec![obj("Deployment", Some(2), applied(Some(2)))],
                Err(Lacking::NotAvailable("Deployment x".into())),
            ),
            ("other kinds need no availability", true, true, vec![obj("Service", Some(1), applied(Some(1)))], Ok(())),
        ];
        for (name, ready, synced, objects, want) in cases {
            assert_eq!(verdict(ready, synced, objects), want, "{name}");
        }
    }

    #[test]
    fn the_wait_is_timed_from_its_start() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(60);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let lacking = Lacking::NotApplied("Deployment web".into());
        let waiting = |k: &str| Some((k.to_string(), lacking.clone()));
        let (first, changed) = track(None, waiting("b"), t0, timeout);
        let first = first.unwrap();
        assert_eq!((first.since, first.reported.clone(), changed), (t0, None, false), "a wait starts silently");
        let (later, changed) = track(Some(&first), waiting("c"), at(30), timeout);
        let later = later.unwrap();
        assert_eq!((later.since, later.target_key.as_str(), changed), (t0, "c", false), "the clock keeps running");
        let (stalled, changed) = track(Some(&later), waiting("c"), at(60), timeout);
        let stalled = stalled.unwrap();
        assert_eq!((stalled.reported.clone(), changed), (Some(("c".into(), lacking.clone())), true), "stalled: shown");
        let (again, changed) = track(Some(&stalled), waiting("c"), at(62), timeout);
        assert_eq!((again.unwrap().reported, changed), (Some(("c".into(), lacking.clone())), false), "shown once");
        let other = Lacking::NotAvailable("Deployment web".into());
        let (next, changed) = track(Some(&stalled), Some(("c".into(), other.clone())), at(64), timeout);
        assert_eq!((next.unwrap().reported, changed), (Some(("c".into(), other)), true), "now lacks something else");
        assert_eq!(track(Some(&stalled), None, at(90), timeout), (None, true), "done: forgotten, and shown so");
        assert_eq!(track(Some(&first), None, at(10), timeout), (None, false), "never shown: nothing to take back");
    }
}
