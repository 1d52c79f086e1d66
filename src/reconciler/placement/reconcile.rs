//! The Placement reconcile: validate its selectors, choose targets, write status. (The
//! namespace reconcile, which writes the assignment labels, is in `namespaces.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::Resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::json;

use super::schedule::{self, TargetView};
use super::{Controller, FIELD_MANAGER, ReconcileError, selector, status};
use crate::apis::condition::{ConditionStatus, condition_status};
use crate::apis::placement::v1alpha1::{Placement, PlacementSpec, PlacementStatus, SelectedTarget};
use crate::apis::sync::v1alpha1::{CONDITION_READY, SyncTarget, SyncedResourceState};
use crate::kcp::paths::PathError;
use crate::kcp::workspace::WorkspaceError;
use crate::kcp::{ClusterKey, LogicalClusterName, WorkspacePath};

/// What the scheduler sees of a SyncTarget; `needed` are the (group, kind)s of the objects in
/// the namespaces to place, which a fresh target must report as `Syncing`.
fn view(t: &SyncTarget, allows: bool, needed: &BTreeSet<(String, String)>) -> TargetView {
    let conditions = t.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let ready = conditions.iter().find(|c| c.type_ == CONDITION_READY);
    let syncing = syncing_kinds(t);
    TargetView {
        name: t.metadata.name.clone().unwrap_or_default(),
        labels: t.metadata.labels.clone().unwrap_or_default(),
        cells: t.spec.cells.clone(),
        ready: ready.is_some_and(|c| c.status == "True"),
        ready_since: ready.map(|c| c.last_transition_time.0),
        unschedulable: t.spec.unschedulable,
        evict_after: t.spec.evict_after.as_ref().map(|t| t.0),
        apis_available: needed.is_subset(&syncing),
        allows,
    }
}

/// The (group, kind)s the target's syncer reports as `Syncing` in `status.syncedResources`.
pub(super) fn syncing_kinds(t: &SyncTarget) -> BTreeSet<(String, String)> {
    t.status
        .iter()
        .flat_map(|s| s.synced_resources.iter())
        .filter(|r| r.state == SyncedResourceState::Syncing)
        .map(|r| (r.group.clone(), r.kind.clone()))
        .collect()
}

/// Whether the target lists the workspace `path` in `spec.allowedWorkspaces`.
pub(super) fn consents(t: &SyncTarget, path: &WorkspacePath) -> bool {
    t.spec.allowed_workspaces.iter().any(|w| w == path.as_str())
}

pub(super) fn is_ready(t: &SyncTarget) -> bool {
    let conditions = t.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    condition_status(conditions, CONDITION_READY) == Some(ConditionStatus::True)
}

/// What one Placement reconcile decided, before it becomes status.
struct Choice {
    /// The location workspace's path, as the tenant wrote it (or the Placement's own).
    workspace: String,
    outcome: Result<schedule::Outcome, selector::Invalid>,
    selected: Vec<SelectedTarget>,
    not_ready: Vec<String>,
    deferred: usize,
    placed: i32,
    requeue: Option<Duration>,
    held: Option<status::Held>,
}

impl Choice {
    /// Nothing chosen, for a reason that is not the tenant's to know more about.
    fn not_allowed(workspace: String) -> Self {
        let outcome = Ok(schedule::Outcome::WorkspaceNotAllowed);
        Self {
            workspace,
            outcome,
            selected: vec![],
            not_ready: vec![],
            deferred: 0,
            placed: 0,
            requeue: None,
            held: None,
        }
    }

    /// The location workspace cannot be used right now, but the Placement has assignments
    /// there: the status keeps them (so the namespace reconcile keeps the labels) and says why.
    /// Retried while it lasts.
    fn location_not_ready(workspace: String, current: &PlacementStatus) -> Self {
        Self {
            workspace,
            outcome: Ok(schedule::Outcome::Scheduled),
            selected: current.selected_targets.clone(),
            not_ready: vec![],
            deferred: 0,
            placed: current.placed_namespaces.unwrap_or_default(),
            requeue: Some(Duration::from_secs(5)),
            held: Some(status::Held::LocationNotReady),
        }
    }

    /// An invalid selector: the status keeps the earlier choice, so neither the Placement nor
    /// the namespace reconcile undoes what was placed (see `namespaces.rs`).
    fn stuck(invalid: selector::Invalid, current: &PlacementStatus, spec: &PlacementSpec) -> Self {
        Self {
            workspace: spec.location_selector.workspace.clone().unwrap_or_default(),
            outcome: Err(invalid),
            selected: current.selected_targets.clone(),
            not_ready: vec![],
            deferred: 0,
            placed: current.placed_namespaces.unwrap_or_default(),
            requeue: None,
            held: None,
        }
    }
}

/// Whether a failed lookup of the location workspace means "not there for you" rather than "try
/// again". kcp answers a path under a missing parent with 403 or 404; a workspace not ready yet
/// reads as missing too, so that its existence does not show. Anything else (kcp unreachable,
/// 5xx) is transient.
fn location_absent(e: &PathError) -> bool {
    match e {
        PathError::Workspace(WorkspaceError::NotFound { .. } | WorkspaceError::NotReady(_)) => true,
        PathError::Workspace(WorkspaceError::Invalid { .. }) => true,
        PathError::Workspace(WorkspaceError::Api { source: kube::Error::Api(s), .. }) => matches!(s.code, 403 | 404),
        _ => false,
    }
}

/// What a failed lookup of the location workspace does to a Placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LocationFailure {
    /// `WorkspaceNotAllowed`, nothing placed there: the tenant learns nothing of a workspace
    /// it has no assignments in.
    NotAllowed,
    /// Keep what is placed there and say `LocationWorkspaceNotReady`: the Placement has
    /// assignments there, so the tenant knew the workspace, and a workspace that is not ready or
    /// a moment of kcp trouble must not unassign anything.
    KeepAssignments,
    /// Fail the reconcile and retry; the status stays as it was.
    Retry,
}

fn location_failure(e: &PathError, has_assignments_there: bool) -> LocationFailure {
    let not_ready = matches!(e, PathError::Workspace(WorkspaceError::NotReady(_)));
    match (location_absent(e), has_assignments_there) {
        // Gone for good (deleted, or never there): its targets are gone with it.
        (true, _) if !not_ready => LocationFailure::NotAllowed,
        (_, true) => LocationFailure::KeepAssignments,
        (true, false) => LocationFailure::NotAllowed,
        (false, false) => LocationFailure::Retry,
    }
}

/// Whether `selected` (a Placement's tenant-writable `selectedTargets`) names a target of the
/// workspace `path` that the Placement of `own` (at `own_path`) may use: one of `last_known`
/// (the logical cluster `path` last resolved to) that is its own workspace's or consents to it
/// (`consenting(target)`). Only then may a failed lookup of `path` say more than
/// `WorkspaceNotAllowed`: a forged entry naming a workspace that never consented tells nothing.
fn placed_there(
    selected: &[SelectedTarget],
    path: &WorkspacePath,
    own: &LogicalClusterName,
    last_known: Option<&LogicalClusterName>,
    consenting: impl Fn(&ClusterKey) -> bool,
) -> bool {
    let Some(cluster) = last_known else { return false };
    selected
        .iter()
        .filter(|t| t.workspace == path.as_str())
        .any(|t| cluster == own || consenting(&ClusterKey::new(cluster.clone(), None, t.name.clone())))
}

/// The Placement's `locationSelector.workspace`, parsed; `None` means its own workspace.
pub(super) fn location_path(spec: &PlacementSpec) -> Result<Option<WorkspacePath>, selector::Invalid> {
    let Some(text) = spec.location_selector.workspace.as_deref() else { return Ok(None) };
    text.parse().map(Some).map_err(|_| selector::Invalid {
        field: "spec.locationSelector.workspace".into(),
        problem: selector::Problem::WorkspacePath(selector::Shown::of(text)),
    })
}

impl Controller {
    pub(super) async fn reconcile_placement(&self, key: &ClusterKey) -> Result<Option<Duration>, ReconcileError> {
        // Whatever happens, the namespaces of this workspace recompute from the caches.
        self.enqueue_namespaces_of(&key.cluster);
        let Some(placement) = self.placements.get(key) else { return Ok(None) };
        if placement.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let current = placement.status.clone().unwrap_or_default();
        let choice = match selector::validate_spec(&placement.spec).and_then(|()| location_path(&placement.spec)) {
            Err(invalid) => Choice::stuck(invalid, &current, &placement.spec),
            Ok(location) => self.choose(key, &placement.spec, location, &current).await?,
        };
        let desired = status::desired(&status::Facts {
            outcome: choice.outcome,
            workspace: &choice.workspace,
            selected: choice.selected.clone(),
            not_ready: choice.not_ready,
            deferred: choice.deferred,
            placed_namespaces: choice.placed,
            generation: placement.metadata.generation,
            previous: &current.conditions,
            now: jiff::Timestamp::now(),
            held: choice.held,
        });
        if !status::differs(&desired, Some(&current)) {
            return Ok(choice.requeue);
        }
        let mut status = serde_json::to_value(&desired).unwrap_or_default();
        // An empty list is sent, not omitted: kcp kept the old selectedTargets when the applied
        // status left the field out (seen in the consent e2e test).
        status["selectedTargets"] = json!(desired.selected_targets);
        let patch =
            json!({ "apiVersion": Placement::api_version(&()), "kind": Placement::kind(&()), "status": status });
        let api: Api<DynamicObject> =
            Api::all_with(self.clients.cluster(&key.cluster), &ApiResource::erase::<Placement>(&()));
        match api.patch_status(&key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(ReconcileError::WriteStatus(e)),
        }
        let before: Vec<&str> = current.selected_targets.iter().map(|t| t.name.as_str()).collect();
        let after: Vec<&str> = choice.selected.iter().map(|t| t.name.as_str()).collect();
        let reason = desired.conditions.iter().find(|c| c.type_ == "Scheduled").map(|c| c.reason.clone());
        tracing::info!(?before, ?after, reason = ?reason, "placement status updated");
        if before != after {
            let note = format!("targets in {}: [{}] -> [{}]", choice.workspace, before.join(", "), after.join(", "));
            self.events.normal(&key.cluster, &placement, "TargetsChanged", note).await;
        }
        Ok(choice.requeue)
    }

    /// See [`placed_there`].
    fn placed_with_consent(
        &self,
        own: &LogicalClusterName,
        own_path: &WorkspacePath,
        path: &WorkspacePath,
        current: &PlacementStatus,
    ) -> bool {
        let last_known = self.paths.last_known_cluster(path);
        placed_there(&current.selected_targets, path, own, last_known.as_ref(), |k| {
            self.targets.get(k).is_some_and(|t| consents(&t, own_path))
        })
    }

    /// Chooses targets for a Placement whose selectors are valid.
    async fn choose(
        &self,
        key: &ClusterKey,
        spec: &PlacementSpec,
        location: Option<WorkspacePath>,
        current_status: &PlacementStatus,
    ) -> Result<Choice, ReconcileError> {
        let own_path = self.paths.path_of(&key.cluster).await?;
        let (loc_path, loc_cluster) = match location {
            None => (own_path.clone(), key.cluster.clone()),
            Some(path) => match self.paths.cluster_of(&path).await {
                Ok(cluster) => (path, cluster),
                Err(e) => {
                    let placed_there = self.placed_with_consent(&key.cluster, &own_path, &path, current_status);
                    // The operator's log tells the cases apart; the tenant's status does not.
                    tracing::debug!(workspace = %path, error = %e, placed_there, "location workspace not usable");
                    return match location_failure(&e, placed_there) {
                        LocationFailure::NotAllowed => Ok(Choice::not_allowed(path.to_string())),
                        LocationFailure::KeepAssignments => {
                            Ok(Choice::location_not_ready(path.to_string(), current_status))
                        }
                        LocationFailure::Retry => Err(e.into()),
                    };
                }
            },
        };
        let foreign = loc_cluster != key.cluster;
        let targets: Vec<_> =
            self.targets.keys_in(&loc_cluster, |_| true).into_iter().filter_map(|k| self.targets.get(&k)).collect();
        let ns_selector = &spec.namespace_selector;
        let selected_namespaces: BTreeSet<String> = self
            .namespaces
            .keys_in(&key.cluster, |n| {
                selector::matches_selector(ns_selector, &n.metadata.labels.clone().unwrap_or_default())
            })
            .into_iter()
            .map(|k| k.name)
            .collect();
        let needed = self.upstream.kinds_in(&key.cluster, &selected_namespaces);
        let views: Vec<TargetView> =
            targets.iter().map(|t| view(t, !foreign || consents(t, &own_path), &needed)).collect();
        let current: BTreeSet<String> = current_status
            .selected_targets
            .iter()
            .filter(|t| t.workspace == loc_path.as_str())
            .map(|t| t.name.clone())
            .collect();
        let placement_id = key.to_string();
        let decision = schedule::schedule(&schedule::Input {
            placement: &placement_id,
            match_labels: &spec.location_selector.match_labels,
            match_expressions: &spec.location_selector.match_expressions,
            number_of_targets: spec.number_of_targets,
            targets: &views,
            current: &current,
            foreign,
            now: jiff::Timestamp::now(),
            failover_grace: self.settings.failover_grace,
            evictions_allowed: self.eviction_budget(&key.cluster),
        });
        self.spend_evictions(&key.cluster, decision.evicted.len());
        let not_ready: Vec<String> = targets
            .iter()
            .filter(|t| t.metadata.name.as_ref().is_some_and(|n| decision.selected.contains(n)) && !is_ready(t))
            .filter_map(|t| t.metadata.name.clone())
            .collect();
        let selected: Vec<SelectedTarget> = decision
            .selected
            .iter()
            .map(|n| SelectedTarget { workspace: loc_path.to_string(), name: n.clone() })
            .collect();
        // A deferred move is retried once the rate limit may allow it.
        let retry = (decision.deferred > 0).then_some(Duration::from_secs(10));
        let requeue = [decision.requeue_after, retry].into_iter().flatten().min();
        let placed = if selected.is_empty() { 0 } else { selected_namespaces.len() as i32 };
        let keys: BTreeMap<String, &String> =
            decision.selected.iter().map(|n| (crate::apis::names::target_key(&loc_cluster, n), n)).collect();
        let held = self.stalled_move(&key.cluster, &selected_namespaces, &keys.keys().cloned().collect()).and_then(
            |(k, lacking)| {
                Some(status::Held::MoveStalled { target: keys.get(&k)?.to_string(), lacking: lacking.to_string() })
            },
        );
        Ok(Choice {
            workspace: loc_path.to_string(),
            outcome: Ok(decision.outcome),
            selected,
            not_ready,
            deferred: decision.deferred,
            placed,
            requeue,
            held,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which failed lookups of a location workspace read as "not allowed" (and are written to
    /// status) and which are transient (retried, the status kept as it was).
    #[test]
    fn missing_and_unreachable_workspaces() {
        let path: WorkspacePath = "root:elsewhere".parse().unwrap();
        let api = |code: u16| {
            let status = kube::core::Status::failure("x", "y").with_code(code).boxed();
            PathError::Workspace(WorkspaceError::Api { path: path.clone(), source: kube::Error::Api(status) })
        };
        let not_found =
            WorkspaceError::NotFound { path: path.clone(), parent: "root".parse().unwrap(), name: "x".into() };
        let cases = [
            ("no such workspace", PathError::Workspace(not_found), true),
            ("not ready yet", PathError::Workspace(WorkspaceError::NotReady(path.clone())), true),
            ("parent missing: forbidden", api(403), true),
            ("parent missing: not found", api(404), true),
            ("kcp failing", api(503), false),
            ("throttled", api(429), false),
            (
                "logical cluster unreadable",
                PathError::Api { cluster: crate::kcp::LogicalClusterName::new("c").unwrap(), message: "x".into() },
                false,
            ),
        ];
        for (name, e, absent) in cases {
            assert_eq!(location_absent(&e), absent, "{name}");
        }
    }

    /// A workspace that is not ready, or a moment of kcp trouble, keeps what a Placement placed
    /// there; without assignments there nothing is said that the tenant did not know.
    #[test]
    fn failed_location_lookups_keep_existing_assignments() {
        use LocationFailure::{KeepAssignments, NotAllowed, Retry};
        let path: WorkspacePath = "root:elsewhere".parse().unwrap();
        let api = |code: u16| {
            let status = kube::core::Status::failure("x", "y").with_code(code).boxed();
            PathError::Workspace(WorkspaceError::Api { path: path.clone(), source: kube::Error::Api(status) })
        };
        let not_found =
            || WorkspaceError::NotFound { path: path.clone(), parent: "root".parse().unwrap(), name: "x".into() };
        let not_ready = || PathError::Workspace(WorkspaceError::NotReady(path.clone()));
        // (name, error, assignments there, what happens)
        let cases = [
            ("not ready, placed there", not_ready(), true, KeepAssignments),
            ("not ready, nothing placed: as if absent", not_ready(), false, NotAllowed),
            ("kcp failing, placed there", api(503), true, KeepAssignments),
            ("kcp failing, nothing placed: retried", api(503), false, Retry),
            ("throttled, placed there", api(429), true, KeepAssignments),
            ("deleted while placed there", PathError::Workspace(not_found()), true, NotAllowed),
            ("no such workspace", PathError::Workspace(not_found()), false, NotAllowed),
            ("forbidden", api(403), false, NotAllowed),
        ];
        for (name, e, placed_there, want) in cases {
            assert_eq!(location_failure(&e, placed_there), want, "{name}");
        }
    }

    /// A tenant can write `selectedTargets`; an entry counts as "placed there" only for a
    /// workspace the manager has resolved and a target that takes this workspace's namespaces.
    #[test]
    fn placed_there_needs_a_known_workspace_and_consent() {
        let lc = |s: &str| LogicalClusterName::new(s).unwrap();
        let (own, shared, private) = (lc("own"), lc("shared"), lc("private"));
        let path: WorkspacePath = "root:elsewhere".parse().unwrap();
        let entry = |ws: &str, name: &str| SelectedTarget { workspace: ws.into(), name: name.into() };
        let consenting = |k: &ClusterKey| k.cluster.as_str() == "shared" && k.name == "t";
        // (name, selected, last known cluster of the path, placed there)
        let cases = [
            ("consenting target", vec![entry("root:elsewhere", "t")], Some(&shared), true),
            ("own workspace", vec![entry("root:elsewhere", "x")], Some(&own), true),
            ("never resolved", vec![entry("root:elsewhere", "t")], None, false),
            ("forged: no consent", vec![entry("root:elsewhere", "t")], Some(&private), false),
            ("forged: other target name", vec![entry("root:elsewhere", "u")], Some(&shared), false),
            ("entry of another workspace", vec![entry("root:other", "t")], Some(&shared), false),
            ("nothing selected", vec![], Some(&shared), false),
        ];
        for (name, selected, last_known, want) in cases {
            assert_eq!(placed_there(&selected, &path, &own, last_known, consenting), want, "{name}");
        }
    }

    #[test]
    fn a_location_path_that_does_not_parse_is_an_invalid_selector() {
        let spec = |ws: Option<&str>| -> PlacementSpec {
            serde_json::from_value(json!({"namespaceSelector": {}, "locationSelector": {"workspace": ws}})).unwrap()
        };
        assert_eq!(location_path(&spec(None)), Ok(None));
        assert_eq!(location_path(&spec(Some("root:a"))).unwrap().unwrap().as_str(), "root:a");
        let e = location_path(&spec(Some("Root::A"))).unwrap_err();
        assert_eq!(e.field, "spec.locationSelector.workspace");
    }

    #[test]
    fn a_fresh_target_must_sync_the_kinds_the_namespaces_use() {
        let target: SyncTarget = serde_json::from_value(json!({
            "apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget", "metadata": {"name": "t"}, "spec": {},
            "status": {"syncedResources": [
                {"group": "apps", "kind": "Deployment", "state": "Syncing", "syncedObjects": 1},
                {"group": "example.dev", "kind": "Widget", "state": "MissingOnCluster", "syncedObjects": 0},
            ]},
        }))
        .unwrap();
        let kinds = |v: &[(&str, &str)]| v.iter().map(|(g, k)| (g.to_string(), k.to_string())).collect();
        // (kinds in the namespaces, available)
        let cases = [
            (kinds(&[]), true),
            (kinds(&[("apps", "Deployment")]), true),
            (kinds(&[("apps", "Deployment"), ("example.dev", "Widget")]), false),
            (kinds(&[("", "ConfigMap")]), false),
        ];
        for (needed, want) in cases {
            assert_eq!(view(&target, true, &needed).apis_available, want, "{needed:?}");
        }
    }
}
