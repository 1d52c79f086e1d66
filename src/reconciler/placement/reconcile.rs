//! The two reconciles: a Placement (choose targets, write status) and a namespace (write the
//! assignment labels the Placements of its workspace ask for).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::json;

use super::schedule::{self, TargetView};
use super::{Controller, FIELD_MANAGER, ReconcileError, assign, selector, status};
use crate::apis::condition::{ConditionStatus, condition_status};
use crate::apis::placement::v1alpha1::{Placement, SelectedTarget};
use crate::apis::sync::v1alpha1::{CONDITION_READY, SyncTarget, SyncedResourceState};
use crate::kcp::paths::PathError;
use crate::kcp::workspace::WorkspaceError;
use crate::kcp::{ClusterKey, LogicalClusterName, WorkspacePath};
use crate::syncer::naming::target_key;

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
fn syncing_kinds(t: &SyncTarget) -> BTreeSet<(String, String)> {
    t.status
        .iter()
        .flat_map(|s| s.synced_resources.iter())
        .filter(|r| r.state == SyncedResourceState::Syncing)
        .map(|r| (r.group.clone(), r.kind.clone()))
        .collect()
}

fn is_ready(t: &SyncTarget) -> bool {
    let conditions = t.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    condition_status(conditions, CONDITION_READY) == Some(ConditionStatus::True)
}

impl Controller {
    pub(super) async fn reconcile_placement(&self, key: &ClusterKey) -> Result<Option<Duration>, ReconcileError> {
        // Whatever happens, the namespaces of this workspace recompute from the caches.
        self.enqueue_namespaces_of(&key.cluster);
        let Some(placement) = self.placements.get(key) else { return Ok(None) };
        if placement.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let own_path = self.paths.path_of(&key.cluster).await?;
        let spec = &placement.spec;
        let location = match spec.location_selector.workspace.as_deref().map(str::parse::<WorkspacePath>) {
            None => Ok((own_path.clone(), key.cluster.clone())),
            Some(Err(e)) => Err(("WorkspaceNotFound", e.to_string())),
            Some(Ok(path)) => match self.paths.cluster_of(&path).await {
                Ok(cluster) => Ok((path, cluster)),
                Err(PathError::Workspace(WorkspaceError::NotFound { .. } | WorkspaceError::NotReady(_))) => {
                    Err(("WorkspaceNotFound", format!("workspace {path} does not exist or is not ready")))
                }
                Err(e) => return Err(e.into()),
            },
        };
        let current_status = placement.status.clone().unwrap_or_default();
        let (loc_path, outcome, selected, not_ready, deferred, requeue) = match location {
            Err(why) => {
                (spec.location_selector.workspace.clone().unwrap_or_default(), Err(why), vec![], vec![], 0, None)
            }
            Ok((loc_path, loc_cluster)) => {
                let same = loc_cluster == key.cluster;
                let targets: Vec<_> = self
                    .targets
                    .keys_in(&loc_cluster, |_| true)
                    .into_iter()
                    .filter_map(|k| self.targets.get(&k))
                    .collect();
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
                let views: Vec<TargetView> = targets
                    .iter()
                    .map(|t| view(t, same || t.spec.allowed_workspaces.iter().any(|w| w == own_path.as_str()), &needed))
                    .collect();
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
                    now: jiff::Timestamp::now(),
                    failover_grace: self.settings.failover_grace,
                    evictions_allowed: self.eviction_budget(),
                });
                self.spend_evictions(decision.evicted.len());
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
                (loc_path.to_string(), Ok(decision.outcome), selected, not_ready, decision.deferred, requeue)
            }
        };
        let placed = if selected.is_empty() {
            0
        } else {
            let ns_selector = &spec.namespace_selector;
            let labels = |n: &kube::api::PartialObjectMeta<Namespace>| n.metadata.labels.clone().unwrap_or_default();
            self.namespaces.keys_in(&key.cluster, |n| selector::matches_selector(ns_selector, &labels(n))).len() as i32
        };
        let desired = status::desired(&status::Facts {
            outcome,
            workspace: &loc_path,
            selected: selected.clone(),
            not_ready,
            deferred,
            placed_namespaces: placed,
            generation: placement.metadata.generation,
            previous: &current_status.conditions,
            now: jiff::Timestamp::now(),
        });
        if !status::differs(&desired, Some(&current_status)) {
            return Ok(requeue);
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
        let before: Vec<&str> = current_status.selected_targets.iter().map(|t| t.name.as_str()).collect();
        let after: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
        let reason = desired.conditions.iter().find(|c| c.type_ == "Scheduled").map(|c| c.reason.clone());
        tracing::info!(?before, ?after, reason = ?reason, "placement status updated");
        if before != after {
            let note = format!("targets in {loc_path}: [{}] -> [{}]", before.join(", "), after.join(", "));
            self.events.normal(&key.cluster, &placement, "TargetsChanged", note).await;
        }
        Ok(requeue)
    }

    /// The target keys every Placement of the namespace's workspace that selects it has chosen,
    /// with the SyncTarget each key names and what it runs of the namespace (the union of the
    /// choosing Placements' `workloadSelector`s).
    async fn desired_targets(
        &self,
        cluster: &LogicalClusterName,
        labels: &BTreeMap<String, String>,
    ) -> Result<HashMap<String, (ClusterKey, assign::Workloads)>, ReconcileError> {
        let mut out: HashMap<String, (ClusterKey, assign::Workloads)> = HashMap::new();
        for pk in self.placements.keys_in(cluster, |_| true) {
            let Some(p) = self.placements.get(&pk) else { continue };
            if p.metadata.deletion_timestamp.is_some()
                || !selector::matches_selector(&p.spec.namespace_selector, labels)
            {
                continue;
            }
            for t in p.status.iter().flat_map(|s| s.selected_targets.iter()) {
                let Ok(path) = t.workspace.parse::<WorkspacePath>() else { continue };
                let target_cluster = self.paths.cluster_of(&path).await?;
                let tkey = target_key(&target_cluster, &t.name);
                let workloads = assign::widen(out.get(&tkey).map(|(_, w)| w), p.spec.workload_selector.as_ref());
                out.insert(tkey, (ClusterKey::new(target_cluster, None, t.name.clone()), workloads));
            }
        }
        Ok(out)
    }

    /// Whether the target `target` runs the kcp namespace `ns`: it is Ready, and its syncer has
    /// put its finalizer on every object of the namespace it syncs (as far as the manager's
    /// push-mode view of kcp holds them; a pull-mode target is judged by Ready alone).
    fn runs(&self, target: &ClusterKey, tkey: &str, ns: &ClusterKey) -> bool {
        let Some(t) = self.targets.get(target) else { return false };
        if !is_ready(&t) {
            return false;
        }
        let syncing = syncing_kinds(&t);
        let finalizer = crate::syncer::engine::syncer_finalizer(tkey);
        self.upstream
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
            .all(|(_, o)| o.metadata.finalizers.iter().flatten().any(|f| *f == finalizer))
    }

    pub(super) async fn reconcile_namespace(&self, key: &ClusterKey) -> Result<Option<Duration>, ReconcileError> {
        let Some(ns) = self.namespaces.get(key) else { return Ok(None) };
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let annotations = ns.metadata.annotations.clone().unwrap_or_default();
        self.report_unconsented(key, &ns, &labels, &annotations).await;
        let desired = self.desired_targets(&key.cluster, &labels).await?;
        let keys: BTreeSet<String> = desired.keys().cloned().collect();
        let plan =
            assign::plan(&labels, &annotations, &keys, |k| desired.get(k).is_some_and(|(t, _)| self.runs(t, k, key)));
        let requeue = plan.waiting.then_some(Duration::from_secs(2));
        let workloads: BTreeMap<String, assign::Workloads> =
            desired.iter().map(|(k, (_, w))| (k.clone(), w.clone())).collect();
        let selectors = assign::selector_annotations(&annotations, &workloads, &plan.managed, &plan.remove);
        let managed_before = assign::managed_keys(&annotations);
        let mut patch = match plan.patch(&managed_before) {
            Some(patch) => patch,
            None if selectors.is_empty() => return Ok(requeue),
            None => json!({ "annotations": {} }),
        };
        for (name, value) in selectors {
            patch["annotations"][name] = value;
        }
        // resourceVersion makes the patch a compare-and-swap against a concurrent label change.
        patch["resourceVersion"] = json!(ns.metadata.resource_version);
        let api: Api<Namespace> = Api::all(self.clients.cluster(&key.cluster));
        match api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&json!({ "metadata": patch }))).await {
            Ok(_) => {
                tracing::info!(add = ?plan.add, remove = ?plan.remove, waiting = plan.waiting, "assignment labels updated")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(ReconcileError::PatchNamespace(e)),
        }
        // Placements count their namespaces.
        self.enqueue_placements_of(&key.cluster);
        Ok(requeue)
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
