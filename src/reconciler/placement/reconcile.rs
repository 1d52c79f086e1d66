//! The Placement reconcile: validate its selectors, choose targets, write status. (The
//! namespace reconcile, which writes the assignment labels, is in `namespaces.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::Resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::json;

use super::location::{LocationFailure, location_failure, location_path, placed_there};
use super::schedule::{self, TargetView};
use super::{Controller, FIELD_MANAGER, ReconcileError, selector, status};
use crate::apis::condition::{ConditionStatus, condition_status};
use crate::apis::placement::overrides;
use crate::apis::placement::v1alpha1::{Placement, PlacementSpec, PlacementStatus, SelectedTarget};
use crate::apis::sync::v1alpha1::{CONDITION_READY, SyncTarget, SyncedResourceState};
use crate::kcp::{ClusterKey, LogicalClusterName, WorkspacePath};

/// What the scheduler sees of a SyncTarget; `needed` are the (group, kind)s of the objects in
/// the namespaces to place, which a fresh target must report as `Syncing`.
pub(crate) fn view(t: &SyncTarget, allows: bool, needed: &BTreeSet<(String, String)>) -> TargetView {
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
pub(crate) fn consents(t: &SyncTarget, path: &WorkspacePath) -> bool {
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
    /// Name and labels of the chosen targets, which overrides select by.
    chosen: Vec<(String, BTreeMap<String, String>)>,
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
            chosen: vec![],
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
            chosen: vec![],
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
            chosen: vec![],
        }
    }
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
            overrides: overrides::status(&placement.spec.overrides, &choice.chosen),
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
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(None),
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
            // Unknown counts as not consenting: a forged entry must tell nothing.
            self.directory.target(k).ok().flatten().is_some_and(|t| consents(&t, own_path))
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
        let targets = self.directory.targets_in(&loc_cluster)?;
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
        let chosen = targets
            .iter()
            .filter_map(|t| Some((t.metadata.name.clone()?, t.metadata.labels.clone().unwrap_or_default())))
            .filter(|(n, _)| decision.selected.contains(n))
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
            chosen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
