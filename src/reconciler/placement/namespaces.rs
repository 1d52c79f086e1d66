//! The namespace reconcile: writes the assignment labels (and workload-selector annotations)
//! the Placements of a namespace's workspace ask for.
//!
//! It reads each Placement's `status.selectedTargets`, which the tenant can write too, so a key
//! counts only for a target that exists and, in another workspace, lists this one in
//! `spec.allowedWorkspaces`. A Placement whose selector is invalid is stuck: its keys are
//! frozen, so what it placed keeps running until the selector is fixed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::location::location_path;
use super::reconcile::consents;
use super::{Controller, ReconcileError, assign, selector};
use crate::apis::names::{UPSYNC_PREFIX, target_key};
use crate::apis::placement::overrides::{self, OVERRIDES_PREFIX, TargetOverride};
use crate::apis::placement::replicas::{self, REPLICAS_ANNOTATION};
use crate::apis::placement::v1alpha1::{SelectedTarget, UpsyncedKind};
use crate::kcp::{ClusterKey, LogicalClusterName, WorkspacePath};

/// What the Placements of a workspace ask of one of its namespaces.
#[derive(Default)]
struct Wanted {
    /// Target key → the SyncTarget and what it runs of the namespace.
    targets: HashMap<String, (ClusterKey, assign::Workloads)>,
    /// Keys chosen by Placements with an invalid selector: their labels and workload annotations
    /// are left as they are.
    frozen: BTreeSet<String>,
    /// Target key → weight, for the targets of Placements that divide replicas (the largest
    /// weight when several do).
    weights: BTreeMap<String, u32>,
    /// Target key → the overrides that change its copies, from every Placement choosing it
    /// (ordered by Placement name, then as listed).
    overrides: BTreeMap<String, Vec<TargetOverride>>,
    /// Target key → the kinds its syncer copies back (the union over the choosing Placements).
    upsync: BTreeMap<String, BTreeSet<UpsyncedKind>>,
}

impl Controller {
    /// The target keys every Placement of the namespace's workspace that selects it has chosen,
    /// with the SyncTarget each key names and what it runs of the namespace (the union of the
    /// choosing Placements' `workloadSelector`s); and the frozen keys of stuck Placements.
    async fn wanted(
        &self,
        cluster: &LogicalClusterName,
        labels: &BTreeMap<String, String>,
    ) -> Result<Wanted, ReconcileError> {
        let mut out = Wanted::default();
        let now = jiff::Timestamp::now();
        for pk in self.placements.keys_in(cluster, |_| true) {
            let Some(p) = self.placements.get(&pk) else { continue };
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            // An invalid selector is not evaluated: which namespaces it meant is unknown.
            let valid = selector::validate_spec(&p.spec).is_ok() && location_path(&p.spec).is_ok();
            if valid && !selector::matches_selector(&p.spec.namespace_selector, labels) {
                continue;
            }
            for t in p.status.iter().flat_map(|s| s.selected_targets.iter()) {
                let Some((tkey, target)) = self.admissible(cluster, t).await? else { continue };
                if !valid {
                    out.frozen.insert(tkey);
                    continue;
                }
                let workloads =
                    assign::widen(out.targets.get(&tkey).map(|(_, w)| w), p.spec.workload_selector.as_ref());
                // The SyncTarget is looked up only for what needs it: weights and overrides.
                let wants_target = p.spec.replica_policy.is_some() || !p.spec.overrides.is_empty();
                let st = if wants_target { self.directory.target(&target)? } else { None };
                if let Some(policy) = &p.spec.replica_policy
                    && let Some(st) = &st
                    && let Some(w) = replicas::weight(policy, st, now, self.settings.failover_grace)
                {
                    let entry = out.weights.entry(tkey.clone()).or_insert(w);
                    *entry = (*entry).max(w);
                }
                if !p.spec.overrides.is_empty() {
                    let labels = st.and_then(|st| st.metadata.labels.clone()).unwrap_or_default();
                    let name = p.metadata.name.as_deref().unwrap_or_default();
                    let list = overrides::for_target(name, &p.spec.overrides, &labels);
                    out.overrides.entry(tkey.clone()).or_default().extend(list);
                }
                if !p.spec.upsync.is_empty() {
                    out.upsync.entry(tkey.clone()).or_default().extend(p.spec.upsync.iter().cloned());
                }
                out.targets.insert(tkey, (target, workloads));
            }
        }
        // Stable: the overrides of one Placement keep their order.
        out.overrides.values_mut().for_each(|list| list.sort_by(|a, b| a.placement.cmp(&b.placement)));
        Ok(out)
    }

    /// The key and SyncTarget a `selectedTargets` entry of a Placement in `cluster` names, if
    /// the Placement may use it: any target of its own workspace, another workspace's only with
    /// consent. A failed workspace lookup is an error (retried), never "not admissible": a
    /// moment of kcp trouble must not unassign anything.
    async fn admissible(
        &self,
        cluster: &LogicalClusterName,
        t: &SelectedTarget,
    ) -> Result<Option<(String, ClusterKey)>, ReconcileError> {
        let Ok(path) = t.workspace.parse::<WorkspacePath>() else { return Ok(None) };
        let target_cluster = self.paths.cluster_of(&path).await?;
        let target = ClusterKey::new(target_cluster.clone(), None, t.name.clone());
        if target_cluster != *cluster {
            let own = self.paths.path_of(cluster).await?;
            if !self.directory.target(&target)?.is_some_and(|st| consents(&st, &own)) {
                return Ok(None);
            }
        }
        Ok(Some((target_key(&target_cluster, &t.name), target)))
    }

    pub(super) async fn reconcile_namespace(&self, key: &ClusterKey) -> Result<Option<Duration>, ReconcileError> {
        let Some(ns) = self.namespaces.get(key).filter(|ns| ns.metadata.deletion_timestamp.is_none()) else {
            self.note_move(key, None);
            return Ok(None);
        };
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let annotations = ns.metadata.annotations.clone().unwrap_or_default();
        self.report_unconsented(key, &ns, &labels, &annotations).await;
        let Wanted { targets: desired, frozen, weights, overrides, upsync } =
            self.wanted(&key.cluster, &labels).await?;
        let keys: BTreeSet<String> = desired.keys().cloned().collect();
        // The first desired target that does not run the namespace yet, and what it lacks.
        let lacking = RefCell::new(None);
        let plan = assign::plan(&labels, &annotations, &keys, &frozen, |k| {
            let Some((t, _)) = desired.get(k) else { return false };
            let verdict = self.runs(t, k, key);
            if let Err(l) = &verdict {
                lacking.borrow_mut().get_or_insert_with(|| (k.to_string(), l.clone()));
            }
            verdict.is_ok()
        });
        if self.note_move(key, lacking.into_inner().filter(|_| plan.waiting())) {
            self.enqueue_placements_of(&key.cluster);
        }
        let requeue = plan.waiting().then_some(Duration::from_secs(2));
        // A frozen key's workload annotation is left alone: narrowing it to the valid
        // Placements' selections would take objects the stuck one placed off the target.
        let workloads: BTreeMap<String, assign::Workloads> =
            desired.iter().filter(|(k, _)| !frozen.contains(*k)).map(|(k, (_, w))| (k.clone(), w.clone())).collect();
        let mut annotated = assign::selector_annotations(&annotations, &workloads, &plan.managed, &plan.remove);
        // The overrides and the kinds copied back of the keys it owns (a frozen key keeps its
        // own: what runs there keeps its changes).
        let per_target = |prefix: &str, value: &dyn Fn(&str) -> Option<String>| {
            let values = workloads.keys().map(|k| (k.clone(), value(k))).collect();
            assign::per_target_annotations(prefix, &annotations, &values, &plan.managed, &plan.remove)
        };
        annotated.extend(per_target(OVERRIDES_PREFIX, &|k| overrides.get(k).filter(|l| !l.is_empty()).map(json_text)));
        annotated.extend(per_target(UPSYNC_PREFIX, &|k| upsync.get(k).filter(|l| !l.is_empty()).map(json_text)));
        let placed = !plan.managed.is_empty() || !assign::managed_keys(&annotations).is_empty();
        if let Some(value) = assign::replicas_annotation(&annotations, &weights, placed, !frozen.is_empty()) {
            annotated.insert(REPLICAS_ANNOTATION.into(), value);
        }
        let mut patch = match plan.patch(&annotations) {
            Some(patch) => patch,
            None if annotated.is_empty() => return Ok(requeue),
            None => json!({ "annotations": {} }),
        };
        for (name, value) in annotated {
            patch["annotations"][name] = value;
        }
        // resourceVersion makes the patch a compare-and-swap against a concurrent label change.
        patch["resourceVersion"] = json!(ns.metadata.resource_version);
        let api: Api<Namespace> = Api::all(self.clients.cluster(&key.cluster));
        match api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&json!({ "metadata": patch }))).await {
            Ok(_) => {
                tracing::info!(add = ?plan.add, remove = ?plan.remove, waiting = plan.waiting(), "assignment labels updated")
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(None),
            Err(e) => return Err(ReconcileError::PatchNamespace(e)),
        }
        // Placements count their namespaces.
        self.enqueue_placements_of(&key.cluster);
        Ok(requeue)
    }
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
