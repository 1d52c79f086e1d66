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
//! while any endpoint's cache is unsynced or the endpoint slice has not been read. A manager
//! that follows only some shards (`--shards`) still watches the SyncTargets of the others, for
//! this judgement alone.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, PartialObjectMeta};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::Controller;
use super::sweep::{self, Syncer, Verdict};
use crate::apis::names::target_key;
use crate::apis::sync::v1alpha1::SyncTarget;
use crate::kcp::ClusterClients;
use crate::kcp::ClusterKey;
use crate::runtime::cache::ClusterCache;
use crate::runtime::reflector::{self, Reflector, Synced, cluster_key};

/// The SyncTarget controllers of every endpoint this manager serves, and a watch of the
/// SyncTargets of every endpoint it leaves to other managers (`--shards`), so that each
/// endpoint's sweeper judges keys against all of them. Cheap to clone.
#[derive(Clone)]
pub struct Endpoints {
    /// Set once the APIExport's endpoint slice has been read.
    listed: Arc<AtomicBool>,
    inner: Arc<Mutex<Registered>>,
}

/// What the sweeper knows of one endpoint.
enum Member {
    /// This manager runs the endpoint's controllers.
    Served(Box<Controller>),
    /// Another manager does; only its SyncTargets' keys are watched.
    Observed(Observer),
}

/// The endpoint URLs the slice lists, and what is known of each.
type Registered = (BTreeSet<String>, HashMap<String, Member>);

impl Endpoints {
    pub fn new(listed: Arc<AtomicBool>) -> Self {
        Self { listed, inner: Default::default() }
    }

    /// The endpoint URLs the slice lists now (followed or not); what was known of others is
    /// forgotten.
    pub fn set_urls(&self, urls: &BTreeSet<String>) {
        let mut inner = self.inner.lock().expect("endpoints poisoned");
        inner.1.retain(|url, member| {
            let keep = urls.contains(url);
            if let (false, Member::Observed(o)) = (keep, member) {
                o.stop.cancel();
            }
            keep
        });
        inner.0 = urls.clone();
    }

    /// Whether `url`'s SyncTargets are watched for another manager's shard (a controller this
    /// manager stopped for it is replaced by [`Self::observe`]).
    pub fn observed(&self, url: &str) -> bool {
        matches!(self.inner.lock().expect("endpoints poisoned").1.get(url), Some(Member::Observed(_)))
    }

    /// Registers the controller this manager runs for `url` (replacing an observer).
    pub fn insert(&self, url: &str, controller: Controller) {
        self.register(url, Member::Served(Box::new(controller)));
    }

    /// Watches the SyncTargets behind `url`, an endpoint another manager serves (replacing the
    /// controller this one ran for it, if any), until `stop` fires or the endpoint is replaced
    /// or gone.
    pub fn observe(&self, url: &str, clients: ClusterClients, stop: CancellationToken) {
        let observer = Observer { targets: Default::default(), synced: Default::default(), stop };
        tokio::spawn(observer.clone().watch(clients));
        self.register(url, Member::Observed(observer));
    }

    fn register(&self, url: &str, member: Member) {
        let old = self.inner.lock().expect("endpoints poisoned").1.insert(url.to_string(), member);
        if let Some(Member::Observed(o)) = old {
            o.stop.cancel();
        }
    }

    /// Every SyncTarget of every endpoint by target key, or `None` while the slice is unread or
    /// any listed endpoint is unregistered or has not listed its SyncTargets. Another
    /// manager's targets count as acting: their syncers are that manager's business.
    pub fn known(&self) -> Option<HashMap<String, Syncer>> {
        if !self.listed.load(Ordering::Acquire) {
            return None;
        }
        let inner = self.inner.lock().expect("endpoints poisoned");
        let mut known = HashMap::new();
        for url in &inner.0 {
            match inner.1.get(url)? {
                Member::Served(c) if c.is_synced() => known.extend(c.syncer_states()),
                Member::Observed(o) if o.synced.is_synced() => known.extend(o.keys()),
                _ => return None,
            }
        }
        Some(known)
    }
}

/// A metadata watch of the SyncTargets behind an endpoint this manager does not serve.
#[derive(Clone)]
struct Observer {
    targets: ClusterCache<()>,
    synced: Synced,
    stop: CancellationToken,
}

impl Observer {
    fn keys(&self) -> impl Iterator<Item = (String, Syncer)> {
        let keys = self.targets.all_keys(|_| true);
        keys.into_iter().map(|k| (target_key(&k.cluster, &k.name), Syncer::Acting))
    }

    async fn watch(self, clients: ClusterClients) {
        let api: Api<PartialObjectMeta<SyncTarget>> = Api::all(clients.wildcard());
        let reflector = Reflector::new(self.targets.clone(), cluster_key, |_, _| ()).with_synced(self.synced.clone());
        let what = format!("SyncTarget metadata at {} (another manager's shard)", clients.base_url());
        let events = reflector::watch(api, watcher::Config::default());
        reflector.run(events, self.stop.clone(), &what, |_| {}).await;
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
        let held = upstream.find(|h| sweep::worth_a_look(&sweep::held_markers(h), known));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kcp::LogicalClusterName;

    fn observer(targets: &[(&str, &str)], synced: bool) -> Observer {
        let o = Observer { targets: Default::default(), synced: Default::default(), stop: CancellationToken::new() };
        for (cluster, name) in targets {
            o.targets.insert(&ClusterKey::new(LogicalClusterName::new(*cluster).unwrap(), None, *name), ());
        }
        if synced {
            o.synced.mark_synced();
        }
        o
    }

    /// Another manager's shard: nothing is decided until its SyncTargets have listed, and then
    /// its targets count as acting, so their markers are never taken for orphans.
    #[test]
    fn other_managers_shards_are_judged_alive_once_listed() {
        let listed = Arc::new(AtomicBool::new(false));
        let endpoints = Endpoints::new(listed.clone());
        let urls: BTreeSet<String> = ["https://a".to_string()].into();
        endpoints.set_urls(&urls);
        assert!(endpoints.known().is_none(), "the slice is unread");
        listed.store(true, Ordering::Release);
        assert!(endpoints.known().is_none(), "nothing registered for a listed URL");
        endpoints.register("https://a", Member::Observed(observer(&[("c1", "t")], false)));
        assert!(endpoints.observed("https://a"));
        assert!(endpoints.known().is_none(), "its SyncTargets have not listed");
        let listed_observer = observer(&[("c1", "t"), ("c2", "u")], true);
        let stop = listed_observer.stop.clone();
        endpoints.register("https://a", Member::Observed(listed_observer));
        let known = endpoints.known().expect("every listed endpoint has listed");
        let want: HashMap<String, Syncer> = [("c1", "t"), ("c2", "u")]
            .map(|(c, n)| (target_key(&LogicalClusterName::new(c).unwrap(), n), Syncer::Acting))
            .into();
        assert_eq!(known, want);
        endpoints.set_urls(&BTreeSet::new());
        assert!(stop.is_cancelled(), "an endpoint that leaves the slice stops its watch");
        assert_eq!(endpoints.known(), Some(HashMap::new()));
    }
}
