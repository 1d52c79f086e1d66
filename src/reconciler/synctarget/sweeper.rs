//! The finalizer sweeper: every finalizer a syncer puts on a kcp object has an owner that can
//! always release it, even when the syncer that added it is gone.
//!
//! Per endpoint, once the SyncTarget caches of *every* endpoint have synced, it looks at the kcp
//! objects of synced resource views that carry a syncer finalizer or per-target status
//! annotation, and releases
//! - markers of target keys no SyncTarget of any endpoint has (deleted while the manager was
//!   down, or whose delete event was missed), and
//! - on objects being deleted, markers of targets no syncer can act for (push mode without
//!   usable credentials, pull mode with a stale heartbeat) once the object has waited the
//!   deletion timeout, with a Warning Event `DownstreamOrphaned`.
//!
//! Sharded kcp: a manager runs one set of controllers per virtual-workspace endpoint (shard). A
//! cross-workspace workload can carry the finalizer of a SyncTarget on another shard, so a key is
//! orphaned only when it is unknown to every endpoint's SyncTarget cache, and nothing is decided
//! while any endpoint's cache is unsynced or the endpoint slice has not been read.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Controller;
use super::sweep::{self, Syncer, Verdict};
use crate::apis::names::target_key;
use crate::kcp::ClusterKey;

/// The SyncTarget controllers of every endpoint this manager serves, so that each endpoint's
/// sweeper judges keys against all of them. Cheap to clone.
#[derive(Clone)]
pub struct Endpoints {
    /// Set once the APIExport's endpoint slice has been read.
    listed: Arc<AtomicBool>,
    inner: Arc<Mutex<Registered>>,
}

/// The endpoint URLs the slice lists, and the controller started for each.
type Registered = (BTreeSet<String>, HashMap<String, Controller>);

impl Endpoints {
    pub fn new(listed: Arc<AtomicBool>) -> Self {
        Self { listed, inner: Default::default() }
    }

    /// The endpoint URLs the slice lists now; controllers of others are forgotten.
    pub fn set_urls(&self, urls: &BTreeSet<String>) {
        let mut inner = self.inner.lock().expect("endpoints poisoned");
        inner.1.retain(|url, _| urls.contains(url));
        inner.0 = urls.clone();
    }

    pub fn insert(&self, url: &str, controller: Controller) {
        self.inner.lock().expect("endpoints poisoned").1.insert(url.to_string(), controller);
    }

    /// Every SyncTarget of every endpoint by target key, or `None` while the slice is unread or
    /// any listed endpoint has no controller or an unsynced SyncTarget cache.
    pub fn known(&self) -> Option<HashMap<String, Syncer>> {
        if !self.listed.load(Ordering::Acquire) {
            return None;
        }
        let inner = self.inner.lock().expect("endpoints poisoned");
        let mut known = HashMap::new();
        for url in &inner.0 {
            let controller = inner.1.get(url).filter(|c| c.is_synced())?;
            known.extend(controller.syncer_states());
        }
        Some(known)
    }
}

impl Controller {
    /// What every SyncTarget of this endpoint's cache can do about its objects.
    fn syncer_states(&self) -> HashMap<String, Syncer> {
        let now = jiff::Timestamp::now();
        let mut out = HashMap::new();
        for key in self.cache.all_keys(|_| true) {
            let Some(raw) = self.cache.get(&key) else { continue };
            let status = &raw.data["status"];
            let state = if raw.data["spec"]["kubeconfigSecretRef"].is_object() {
                sweep::push_syncer(self.syncers.running(&key))
            } else {
                let heartbeat = status["lastSyncTime"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
                sweep::pull_syncer(heartbeat, now, self.settings.heartbeat_threshold)
            };
            // Named for the Event a timed-out release publishes on the object.
            let state = match state {
                Syncer::Absent(why) => Syncer::Absent(format!("SyncTarget {} in {}: {why}", key.name, key.cluster)),
                acting => acting,
            };
            out.insert(target_key(&key.cluster, &key.name), state);
        }
        out
    }

    /// Sweeps at start (once synced) and every `finalizer_sweep_interval`, sooner when an object
    /// waits for its deletion timeout, until `cancel` fires.
    pub(super) async fn sweep_finalizers(self, endpoints: Endpoints, cancel: CancellationToken) {
        let interval = self.settings.finalizer_sweep_interval;
        // Targets deleted while the manager was down left no syncer to ask for their
        // resources: the defaults are watched (a failed start is retried each pass), and a
        // pass waits until their views have listed, so a restart sweeps as soon as it can.
        let upstream = self.syncers.upstream();
        // When each unknown target key was first seen: released only once confirmed.
        let mut suspects = HashMap::new();
        loop {
            let mut listed = true;
            for resource in crate::syncer::resources::default_resources() {
                match upstream.ensure(&resource).await {
                    Ok(index) => listed &= upstream.synced(index),
                    Err(e) => {
                        tracing::debug!(resource = %resource.api.plural, error = %e.message, "finalizer sweeper: resource not watched")
                    }
                }
            }
            let next = match endpoints.known().filter(|_| listed) {
                None => Duration::from_secs(1),
                Some(known) => self.sweep_once(&known, &mut suspects).await.map_or(interval, |wait| wait.min(interval)),
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(next.max(Duration::from_secs(1))) => {}
            }
        }
    }

    /// One pass over the synced views; returns how soon an object's deletion timeout falls due.
    async fn sweep_once(
        &self,
        known: &HashMap<String, Syncer>,
        suspects: &mut HashMap<String, std::time::Instant>,
    ) -> Option<Duration> {
        let upstream = self.syncers.upstream();
        let timeout = self.syncers.deletion_timeout();
        let held = upstream.find(|h| !sweep::held_markers(h).is_empty());
        let now = jiff::Timestamp::now();
        let (mut released, mut next): (usize, Option<Duration>) = (0, None);
        let mut unknown = BTreeSet::new();
        for (index, key, obj) in held.into_iter().filter(|(i, _, _)| upstream.synced(*i)) {
            let deleting_for = obj
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| Duration::try_from(now.duration_since(t.0)).unwrap_or_default());
            let mut release = BTreeSet::new();
            let mut timed_out = vec![];
            for tkey in sweep::marker_keys(&obj.metadata) {
                match sweep::verdict(&tkey, known, deleting_for, timeout) {
                    Verdict::Keep => {}
                    Verdict::Orphaned => {
                        let first_seen = *suspects.entry(tkey.clone()).or_insert_with(std::time::Instant::now);
                        unknown.insert(tkey.clone());
                        match sweep::confirmed_orphan(first_seen, std::time::Instant::now()) {
                            Ok(()) => {
                                release.insert(tkey);
                            }
                            Err(wait) => next = Some(next.map_or(wait, |n| n.min(wait))),
                        }
                    }
                    Verdict::TimedOut(why) => {
                        timed_out.push((tkey.clone(), why));
                        release.insert(tkey);
                    }
                    Verdict::WaitFor(d) => next = Some(next.map_or(d, |n| n.min(d))),
                }
            }
            if release.is_empty() {
                continue;
            }
            if let Err(e) = super::syncers::release_markers(upstream, index, &key, &obj, &release).await {
                tracing::warn!(object = %key, error = %e, "finalizer sweeper: release failed; retrying");
                next = Some(Duration::from_secs(5));
                continue;
            }
            released += 1;
            tracing::info!(object = %key, targets = ?release, "finalizer sweeper: released syncer markers");
            self.orphaned(index, &key, &obj, timeout, timed_out).await;
        }
        // A key that became known (or whose objects are gone) is no longer a suspect.
        suspects.retain(|k, _| unknown.contains(k));
        if released > 0 {
            tracing::info!(endpoint = self.clients.base_url(), objects = released, "finalizer sweep released objects");
        }
        next
    }

    /// Warning Events for markers released by timeout: the copy may remain in the cluster.
    async fn orphaned(
        &self,
        index: usize,
        key: &ClusterKey,
        obj: &kube::api::DynamicObject,
        timeout: Duration,
        timed_out: Vec<(String, String)>,
    ) {
        let Some(resource) = self.syncers.upstream().resource(index) else { return };
        for (tkey, why) in timed_out {
            let note = format!(
                "{why}; no syncer deleted its copy within {timeout:?}, so the finalizer of target {tkey} is released and the copy may remain in its cluster"
            );
            self.events.warn(&key.cluster, &resource.api, obj, "DownstreamOrphaned", note).await;
        }
    }
}
