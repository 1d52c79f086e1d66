//! Which APIs a syncer syncs: those its target asks for (`spec.supportedAPIs`) that the cluster
//! serves (discovery) and kcp serves (the shared upstream view). Re-checked while something is
//! missing, so an API installed later is picked up; an API dropped from the spec is retired: its
//! copies are deleted and its finalizers released, as if its namespaces were unassigned. A lookup
//! that fails retires nothing: what was synced keeps syncing, and `syncedResources` says why.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::apis::sync::v1alpha1::{SupportedApi, SyncTarget, SyncedResourceState, SyncedResourceStatus};
use crate::runtime::guard::supervise;
use crate::syncer::discovery;
use crate::syncer::resources::{SyncedResource, Unavailable, known_resource, wanted_apis};

/// What became of each wanted API: the upstream slot it syncs through, or why not.
pub type ApiReport = Vec<(SupportedApi, Result<usize, Unavailable>)>;

/// How often APIs are looked up again when all of them were found (to notice removals), and
/// the longest wait between lookups while one is missing.
const RECHECK_WHEN_COMPLETE: Duration = Duration::from_secs(300);
const RECHECK_MISSING_MAX: Duration = Duration::from_secs(60);

impl Engine {
    /// Resolves the wanted APIs now, and again whenever the spec changes or, while something is
    /// missing, after a wait that starts at the heartbeat interval and doubles up to a minute.
    pub(super) async fn manage_apis(self, cancel: CancellationToken) {
        let mut wanted = self.wanted.clone();
        let mut open = true;
        let mut missing_rounds = 0u32;
        loop {
            let apis = wanted.borrow_and_update().clone();
            let complete = self.resolve(&apis, &cancel).await;
            let recheck = if complete {
                missing_rounds = 0;
                RECHECK_WHEN_COMPLETE
            } else {
                missing_rounds = missing_rounds.saturating_add(1);
                let factor = 1u32 << (missing_rounds - 1).min(10);
                self.settings.heartbeat_interval.saturating_mul(factor).min(RECHECK_MISSING_MAX)
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = wanted.changed(), if open => {
                    open = changed.is_ok();
                    missing_rounds = 0;
                }
                _ = tokio::time::sleep(recheck) => {}
            }
        }
    }

    /// One round of resolution; returns whether every wanted API is synced.
    async fn resolve(&self, apis: &[SupportedApi], cancel: &CancellationToken) -> bool {
        // What is synced now, by API: kept through a failed lookup (see [`keep_synced`]).
        let previous: HashMap<SupportedApi, usize> = self
            .active
            .read()
            .expect("active poisoned")
            .iter()
            .filter_map(|&i| self.upstream.resource(i).map(|r| (api_of(&r), i)))
            .collect();
        let mut report = ApiReport::new();
        for (api, found) in discovery::discover(&self.downstream.client, apis).await {
            let outcome = match found {
                Ok(resource) => self.upstream.ensure(&resource).await,
                // The cluster cannot be asked right now and nothing was synced of this API
                // before: assume a default API is there, so deletions still time out and
                // clean-up still happens.
                Err(u) if u.state == SyncedResourceState::DiscoveryFailed && !previous.contains_key(&api) => {
                    match known_resource(&api) {
                        Some(resource) => self.upstream.ensure(&resource).await,
                        None => Err(u),
                    }
                }
                Err(u) => Err(u),
            };
            report.push((api, outcome));
        }
        let (active, report) = keep_synced(report, &previous);
        let complete = report.iter().all(|(_, r)| r.is_ok());
        self.activate(active, cancel);
        let changed = {
            let mut stored = self.apis.write().expect("api report poisoned");
            let changed = *stored != report;
            if changed {
                // Logged once per change, not per round.
                for (api, u) in report.iter().filter_map(|(a, r)| r.as_ref().err().map(|u| (a, u))) {
                    tracing::warn!(target = %self.target.name, group = %api.group, kind = %api.kind, state = u.state.as_str(), message = %u.message, "API not synced");
                }
            }
            *stored = report;
            changed
        };
        if changed {
            self.report_changed.notify_one();
        }
        complete
    }

    /// Starts the downstream watches of newly synced resources and revisits the objects of every
    /// resource that was activated or retired.
    fn activate(&self, now: BTreeSet<usize>, cancel: &CancellationToken) {
        let before = std::mem::replace(&mut *self.active.write().expect("active poisoned"), now.clone());
        for &index in now.difference(&before) {
            let Some(resource) = self.upstream.resource(index) else { continue };
            if self.started.lock().expect("started poisoned").insert(index) {
                let (queue, telemetry) = (self.queue.clone(), self.telemetry.clone());
                // A downstream change starts the clock of the status it may bring up.
                let enqueue = move |k| {
                    telemetry.downstream_changed(&k);
                    queue.add(k)
                };
                let (downstream, watched, c) = (self.downstream.clone(), resource.clone(), cancel.clone());
                tokio::spawn(supervise("downstream watch", cancel.clone(), move || {
                    downstream.clone().watch_resource(index, watched.clone(), enqueue.clone(), c.clone())
                }));
                if resource.api.kind == "Deployment" && resource.api.group == "apps" {
                    let (queue, downstream, c) = (self.queue.clone(), self.downstream.clone(), cancel.clone());
                    tokio::spawn(supervise("autoscaler watch", cancel.clone(), move || {
                        let queue = queue.clone();
                        downstream.clone().watch_autoscalers(index, move |k| queue.add(k), c.clone())
                    }));
                }
            }
            tracing::info!(target = %self.target.name, resource = %resource.api.plural, "syncing resource");
            self.upstream.assigned_keys_of(&self.target_key, index).into_iter().for_each(|k| self.queue.add(k));
        }
        for &index in before.difference(&now) {
            tracing::info!(target = %self.target.name, index, "resource no longer synced; removing its copies");
            self.upstream.assigned_keys_of(&self.target_key, index).into_iter().for_each(|k| self.queue.add(k));
            self.downstream.keys_of(index).into_iter().for_each(|k| self.queue.add(k));
        }
    }

    /// Whether objects of slot `index` are synced by this syncer now.
    pub(super) fn is_active(&self, index: usize) -> bool {
        self.active.read().expect("active poisoned").contains(&index)
    }

    /// Whether this syncer ever synced slot `index` (so it may hold copies to clean up).
    pub(super) fn ever_active(&self, index: usize) -> bool {
        self.started.lock().expect("started poisoned").contains(&index)
    }

    /// `status.syncedResources` as of now.
    pub(super) fn synced_resources(&self) -> Vec<SyncedResourceStatus> {
        let report = self.apis.read().expect("api report poisoned").clone();
        synced_resources(&report, &self.downstream.counts(), |i| self.upstream.resource(i))
    }
}

/// The API a synced resource serves.
fn api_of(resource: &SyncedResource) -> SupportedApi {
    SupportedApi { group: resource.api.group.clone(), kind: resource.api.kind.clone() }
}

/// The slots to sync after a lookup round, and the report of it. An API is retired only when
/// the SyncTarget's spec no longer asks for it: one still asked for whose lookup failed this
/// round (discovery, a list in kcp, a missing CRD) keeps syncing through the slot it had, and
/// the report says what failed.
fn keep_synced(report: ApiReport, previous: &HashMap<SupportedApi, usize>) -> (BTreeSet<usize>, ApiReport) {
    let mut active = BTreeSet::new();
    let report = report
        .into_iter()
        .map(|(api, outcome)| match (outcome, previous.get(&api)) {
            (Ok(index), _) => {
                active.insert(index);
                (api, Ok(index))
            }
            (Err(u), Some(&index)) => {
                active.insert(index);
                let message = format!("{}; still syncing what was synced before", u.message);
                (api, Err(Unavailable::new(u.state, message)))
            }
            (Err(u), None) => (api, Err(u)),
        })
        .collect();
    (active, report)
}

/// Pull mode: follows the SyncTarget `name` and sends its wanted APIs to `wanted` whenever
/// `spec.supportedAPIs` changes; `first` fires once the spec has been read (the syncer starts
/// only then: starting on the defaults and then retiring APIs would delete copies). A spec that
/// does not parse keeps the last good list (the manager reports the problem on the SyncTarget).
pub async fn follow_supported_apis(
    client: kube::Client,
    name: String,
    wanted: tokio::sync::watch::Sender<Vec<SupportedApi>>,
    first: tokio::sync::oneshot::Sender<()>,
    cancel: CancellationToken,
) {
    let mut first = Some(first);
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(client, &kube::core::ApiResource::erase::<SyncTarget>(&()));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = crate::runtime::rewatch::retried(watcher(api, config).boxed()).applied_objects().boxed();
    while let Some(event) = crate::runtime::next_or_cancelled(&mut events, &cancel).await {
        let obj = match event {
            Ok(obj) => obj,
            Err(e) => {
                tracing::warn!(target = %name, error = %e, "watching the SyncTarget failed; retrying");
                continue;
            }
        };
        match serde_json::from_value::<Vec<SupportedApi>>(obj.data["spec"]["supportedAPIs"].clone())
            .or_else(|e| if obj.data["spec"]["supportedAPIs"].is_null() { Ok(vec![]) } else { Err(e) })
        {
            Ok(supported) => {
                let apis = wanted_apis(&supported);
                wanted.send_if_modified(|w| std::mem::replace(w, apis.clone()) != apis);
                if let Some(first) = first.take() {
                    let _ = first.send(());
                }
            }
            Err(e) => {
                tracing::warn!(target = %name, error = %e, "spec.supportedAPIs does not parse; keeping the last list")
            }
        }
    }
}

/// The SyncTarget's `status.syncedResources` for `report`, with object counts per slot.
fn synced_resources(
    report: &ApiReport,
    counts: &HashMap<usize, usize>,
    resource_of: impl Fn(usize) -> Option<Arc<SyncedResource>>,
) -> Vec<SyncedResourceStatus> {
    report
        .iter()
        .map(|(api, outcome)| {
            let base = SyncedResourceStatus { group: api.group.clone(), kind: api.kind.clone(), ..Default::default() };
            match outcome {
                Ok(index) => {
                    let resource = resource_of(*index);
                    SyncedResourceStatus {
                        resource: resource.as_ref().map(|r| r.api.plural.clone()),
                        version: resource.as_ref().map(|r| r.api.version.clone()),
                        state: SyncedResourceState::Syncing,
                        synced_objects: counts.get(index).copied().unwrap_or(0) as i64,
                        ..base
                    }
                }
                Err(u) => SyncedResourceStatus { state: u.state, message: Some(u.message.clone()), ..base },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syncer::resources::default_resources;

    #[test]
    fn failed_lookups_keep_what_was_synced() {
        let api = |k: &str| SupportedApi { group: String::new(), kind: k.into() };
        let failed = |state| Unavailable::new(state, "no answer");
        let previous = HashMap::from([(api("ConfigMap"), 2), (api("Secret"), 3), (api("Service"), 4)]);
        type Row = (&'static str, Result<usize, Unavailable>, bool, Option<String>);
        let rows: Vec<Row> = vec![
            ("resolved again", Ok(2), true, None),
            (
                "cluster discovery failed",
                Err(failed(SyncedResourceState::DiscoveryFailed)),
                true,
                Some("no answer; still syncing what was synced before".into()),
            ),
            (
                "kcp list failed",
                Err(failed(SyncedResourceState::NotServedByKcp)),
                true,
                Some("no answer; still syncing what was synced before".into()),
            ),
        ];
        for (case, outcome, kept, message) in rows {
            let (active, report) = keep_synced(vec![(api("ConfigMap"), outcome)], &previous);
            assert_eq!(active.contains(&2), kept, "{case}");
            assert_eq!(report[0].1.as_ref().err().map(|u| u.message.clone()), message, "{case}");
        }
        // Dropped from the spec: absent from this round's report, so retired.
        let (active, _) = keep_synced(vec![(api("Secret"), Ok(3))], &previous);
        assert_eq!(active, BTreeSet::from([3]), "ConfigMap and Service dropped by the spec are retired");
        // Never synced and failing: nothing to keep.
        let (active, report) =
            keep_synced(vec![(api("Widget"), Err(failed(SyncedResourceState::MissingOnCluster)))], &previous);
        assert!(active.is_empty() && report[0].1.is_err(), "a new API that fails is not synced");
    }

    #[test]
    fn report_names_state_and_counts() {
        let api = |g: &str, k: &str| SupportedApi { group: g.into(), kind: k.into() };
        let missing = Unavailable::new(SyncedResourceState::MissingOnCluster, "no Widget");
        let report: ApiReport = vec![
            (api("apps", "Deployment"), Ok(0)),
            (api("", "ConfigMap"), Ok(2)),
            (api("example.dev", "Widget"), Err(missing)),
        ];
        let counts = HashMap::from([(0, 3), (1, 7)]);
        let slots = default_resources();
        let got = synced_resources(&report, &counts, |i| slots.get(i).cloned().map(Arc::new));
        type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, SyncedResourceState, i64, Option<&'a str>);
        let rows: Vec<Row> = got
            .iter()
            .map(|r| {
                (
                    r.kind.as_str(),
                    r.resource.as_deref(),
                    r.version.as_deref(),
                    r.state,
                    r.synced_objects,
                    r.message.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("Deployment", Some("deployments"), Some("v1"), SyncedResourceState::Syncing, 3, None),
                // Slot 2 is ConfigMaps in the default order; nothing of it is synced yet.
                ("ConfigMap", Some("configmaps"), Some("v1"), SyncedResourceState::Syncing, 0, None),
                ("Widget", None, None, SyncedResourceState::MissingOnCluster, 0, Some("no Widget")),
            ]
        );
    }
}
