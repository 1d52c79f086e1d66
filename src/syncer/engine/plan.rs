//! What one sync of an object does, decided from what the syncer knows — no I/O here.
//!
//! The rule this module exists for: a downstream copy is deleted, or a finalizer released, only
//! when every view involved is authoritative. Before the kcp view of the resource has listed
//! (`Upstream::synced`), an object or assignment missing from it means "not known yet"; before
//! the cluster's view has listed, a copy missing from it is asked for with a live GET. Until the
//! truth is known the plan waits and the key is looked at again.

use std::time::Duration;

/// How long a key waits for an unsynced view before it is looked at again.
pub const WAIT_FOR_VIEW: Duration = Duration::from_secs(2);

/// The kcp object behind a key, as the shared view holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamObject {
    /// Not in the view (authoritative only when the view has synced).
    Absent,
    /// In the view: whether it is being deleted and whether it carries this target's finalizer.
    Present { deleting: bool, our_finalizer: bool },
}

/// The downstream copy, as far as the syncer knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownstreamCopy {
    /// Not cached and the cluster's view of its namespace has not listed: not asked yet.
    Unknown,
    /// Asked, and the cluster could not answer.
    Unreachable,
    /// Not there (an authoritative cache miss, a 404, or a 403: no rights, so never written).
    Absent,
    /// There and labelled for this target.
    Ours,
    /// There, and not written by this target: never deleted.
    Foreign,
}

/// Everything the decision depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub upstream: UpstreamObject,
    /// `Upstream::synced(index)`: the namespace watch and the resource's watch have listed.
    pub upstream_synced: bool,
    /// The resource is synced now (wanted by the SyncTarget's spec and served on both sides).
    pub active: bool,
    /// The object's workspace is this target's own or one it allows.
    pub consented: bool,
    /// The object's namespace is assigned to this target.
    pub assigned: bool,
    /// The namespace's workload selector for this target (if any) selects the object.
    pub selected: bool,
    /// The object is of a kind or shape that is never copied (`transform::skip_reason`).
    pub skipped: bool,
    pub downstream: DownstreamCopy,
    /// The object has waited in deletion longer than the deletion timeout.
    pub deletion_timed_out: bool,
}

/// What the sync does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Not this target's business: nothing at all.
    Nothing,
    /// Add the finalizer, make sure the namespace, and apply the copy.
    Apply,
    /// A view is not authoritative yet: touch nothing and look again after the delay.
    Wait(Duration),
    /// Ask the cluster (live GET) whether a copy exists, then plan again.
    LookDownstream,
    /// Delete the copy; its delete event queues the key again to release the finalizer.
    DeleteCopy,
    /// Nothing is left downstream: drop the status and the finalizer from the kcp object (if
    /// there is one) and look at the namespace again.
    Release,
    /// The cluster cannot be reached and the deletion timed out: release the finalizer anyway
    /// and say so on the object (the copy is deleted when the cluster is back).
    ReleaseOrphaned,
    /// The cluster cannot be reached: fail, and be retried with backoff.
    Retry,
}

impl Action {
    /// Whether the action deletes or releases something.
    #[cfg(test)]
    pub fn destructive(self) -> bool {
        matches!(self, Action::DeleteCopy | Action::Release | Action::ReleaseOrphaned)
    }
}

/// See the module docs.
pub fn plan(f: &Facts) -> Action {
    let (present, deleting, our_finalizer) = match f.upstream {
        UpstreamObject::Absent => (false, false, false),
        UpstreamObject::Present { deleting, our_finalizer } => (true, deleting, our_finalizer),
    };
    // Another workspace writing this target's assignment label gets nothing, and nothing of it
    // is touched — unless it carries our finalizer (synced while allowed): then it is cleaned up.
    if !f.consented && !our_finalizer {
        return Action::Nothing;
    }
    let wanted = f.consented && f.active && present && !deleting && f.assigned && f.selected && !f.skipped;
    if wanted {
        return Action::Apply;
    }
    if !f.upstream_synced {
        return Action::Wait(WAIT_FOR_VIEW);
    }
    match f.downstream {
        DownstreamCopy::Unknown => Action::LookDownstream,
        DownstreamCopy::Ours => Action::DeleteCopy,
        DownstreamCopy::Absent | DownstreamCopy::Foreign => Action::Release,
        DownstreamCopy::Unreachable if present && f.deletion_timed_out => Action::ReleaseOrphaned,
        DownstreamCopy::Unreachable => Action::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use DownstreamCopy as D;
    use UpstreamObject::*;

    const LIVE: UpstreamObject = Present { deleting: false, our_finalizer: true };
    const NEW: UpstreamObject = Present { deleting: false, our_finalizer: false };
    const DELETING: UpstreamObject = Present { deleting: true, our_finalizer: true };

    /// A synced, consented, assigned, selected live object with our copy downstream.
    fn base() -> Facts {
        Facts {
            upstream: LIVE,
            upstream_synced: true,
            active: true,
            consented: true,
            assigned: true,
            selected: true,
            skipped: false,
            downstream: D::Ours,
            deletion_timed_out: false,
        }
    }

    #[test]
    fn rows() {
        let rows: Vec<(&str, Facts, Action)> = vec![
            ("new object is applied", Facts { upstream: NEW, downstream: D::Absent, ..base() }, Apply),
            ("synced object is kept applied", base(), Apply),
            ("apply does not wait for the view", Facts { upstream_synced: false, ..base() }, Apply),
            (
                "apply over a foreign copy is decided by the take-over check",
                Facts { downstream: D::Foreign, ..base() },
                Apply,
            ),
            (
                "restart: object not listed yet, copy ours",
                Facts { upstream: Absent, upstream_synced: false, ..base() },
                Wait(WAIT_FOR_VIEW),
            ),
            (
                "restart: namespace not listed yet",
                Facts { assigned: false, upstream_synced: false, ..base() },
                Wait(WAIT_FOR_VIEW),
            ),
            (
                "restart: selector not known yet",
                Facts { selected: false, upstream_synced: false, ..base() },
                Wait(WAIT_FOR_VIEW),
            ),
            (
                "restart: copy not cached either",
                Facts { upstream: Absent, upstream_synced: false, downstream: D::Unknown, ..base() },
                Wait(WAIT_FOR_VIEW),
            ),
            (
                "deleted in kcp before the view listed",
                Facts { upstream: DELETING, upstream_synced: false, ..base() },
                Wait(WAIT_FOR_VIEW),
            ),
            ("deleted in kcp: copy deleted", Facts { upstream: DELETING, ..base() }, DeleteCopy),
            ("gone from kcp: copy deleted", Facts { upstream: Absent, ..base() }, DeleteCopy),
            ("unassigned: copy deleted", Facts { assigned: false, ..base() }, DeleteCopy),
            ("no longer selected: copy deleted", Facts { selected: false, ..base() }, DeleteCopy),
            ("kind retired by the spec: copy deleted", Facts { active: false, ..base() }, DeleteCopy),
            ("now skipped: copy deleted", Facts { skipped: true, ..base() }, DeleteCopy),
            ("consent withdrawn, synced before: cleaned up", Facts { consented: false, ..base() }, DeleteCopy),
            (
                "consent withdrawn, copy gone: finalizer released",
                Facts { consented: false, downstream: D::Absent, ..base() },
                Release,
            ),
            ("other workspace, never synced: untouched", Facts { consented: false, upstream: NEW, ..base() }, Nothing),
            (
                "other workspace, gone from kcp: untouched",
                Facts { consented: false, upstream: Absent, ..base() },
                Nothing,
            ),
            (
                "copy not cached, cluster view not listed: ask",
                Facts { assigned: false, downstream: D::Unknown, ..base() },
                LookDownstream,
            ),
            ("copy absent: finalizer released", Facts { upstream: DELETING, downstream: D::Absent, ..base() }, Release),
            (
                "foreign object of that name: never deleted",
                Facts { upstream: DELETING, downstream: D::Foreign, ..base() },
                Release,
            ),
            ("gone from kcp, nothing downstream", Facts { upstream: Absent, downstream: D::Absent, ..base() }, Release),
            ("cluster unreachable: retry", Facts { upstream: DELETING, downstream: D::Unreachable, ..base() }, Retry),
            (
                "cluster unreachable, deletion timed out: released, orphan reported",
                Facts { upstream: DELETING, downstream: D::Unreachable, deletion_timed_out: true, ..base() },
                ReleaseOrphaned,
            ),
            (
                "cluster unreachable, gone from kcp: nothing to release",
                Facts { upstream: Absent, downstream: D::Unreachable, deletion_timed_out: true, ..base() },
                Retry,
            ),
        ];
        for (case, facts, want) in rows {
            assert_eq!(plan(&facts), want, "{case}");
        }
    }

    /// Every combination: nothing destructive unless the kcp view has synced and the copy's
    /// state is known; nothing at all for a workspace without consent and without our finalizer.
    #[test]
    fn destructive_only_from_authoritative_views() {
        let bools = [false, true];
        let ups = [Absent, NEW, LIVE, DELETING, Present { deleting: true, our_finalizer: false }];
        let downs = [D::Unknown, D::Unreachable, D::Absent, D::Ours, D::Foreign];
        let mut seen = 0;
        for upstream in ups {
            for downstream in downs {
                for bits in 0..(1u32 << 7) {
                    let b = |i: u32| bools[((bits >> i) & 1) as usize];
                    let f = Facts {
                        upstream,
                        upstream_synced: b(0),
                        active: b(1),
                        consented: b(2),
                        assigned: b(3),
                        selected: b(4),
                        skipped: b(5),
                        downstream,
                        deletion_timed_out: b(6),
                    };
                    let action = plan(&f);
                    seen += 1;
                    if action.destructive() {
                        assert!(f.upstream_synced, "{f:?} → {action:?} from an unsynced kcp view");
                        assert!(downstream != D::Unknown, "{f:?} → {action:?} without knowing the copy");
                    }
                    if action == DeleteCopy {
                        assert_eq!(downstream, D::Ours, "{f:?}: deletes only our copy");
                    }
                    if action == ReleaseOrphaned {
                        assert!(f.deletion_timed_out && downstream == D::Unreachable, "{f:?}");
                    }
                    let our_finalizer = matches!(upstream, Present { our_finalizer: true, .. });
                    if !f.consented && !our_finalizer {
                        assert_eq!(action, Nothing, "{f:?}: another workspace's object");
                    }
                }
            }
        }
        assert_eq!(seen, 5 * 5 * 128);
    }
}
