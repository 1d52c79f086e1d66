//! Push mode: the syncers the manager runs itself, one per SyncTarget whose
//! `kubeconfigSecretRef` holds a usable kubeconfig. Started when the credentials load,
//! restarted when the kubeconfig changes, stopped when they break or the target is deleted.
//!
//! Sharded kcp: a target that allows other workspaces may serve tenants on other shards, whose
//! objects only their shard's endpoint serves. Once its allowed set is not empty, its syncer
//! (the host) gets a guest syncer over every other endpoint the manager follows, with the same
//! credentials; see [`crate::syncer::engine::scope`] for who looks after which workspace.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::apis::sync::v1alpha1::SupportedApi;
use crate::kcp::{ClusterKey, LogicalClusterName};
use crate::syncer::client::{ClusterAccess, push_cluster_client};
use crate::syncer::credentials::InlineCredentials;
use crate::syncer::engine::scope::{Followed, Scope, Views};
use crate::syncer::engine::{Engine, EngineSettings, Probe};
use crate::syncer::upstream::Upstream;

struct Running {
    /// [`InlineCredentials::fingerprint`] of the credentials the syncer runs with.
    credentials: String,
    /// The target's wanted APIs, followed by the running syncer.
    wanted: watch::Sender<Vec<SupportedApi>>,
    /// Logical clusters of the other workspaces the target allows, followed by the syncer.
    allowed: watch::Sender<BTreeSet<LogicalClusterName>>,
    cancel: CancellationToken,
    probe: watch::Receiver<Probe>,
}

/// See the module docs.
#[derive(Clone)]
pub struct Supervisor {
    upstream: Upstream,
    settings: EngineSettings,
    /// The address policy and response bound every push-mode client is built with.
    access: ClusterAccess,
    running: Arc<Mutex<HashMap<ClusterKey, Running>>>,
    /// Push-mode targets a reconcile decided to run no syncer for (credentials missing or
    /// refused): the finalizer sweeper applies the deletion timeout to their objects.
    stopped: Arc<Mutex<HashSet<ClusterKey>>>,
    parent: CancellationToken,
    /// Keys whose syncer's probe result changed, for the SyncTarget reconciler to look again.
    changes: mpsc::UnboundedSender<ClusterKey>,
    changes_rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<ClusterKey>>>>,
    /// The running engines, so that a shutdown can wait for their in-flight writes.
    engines: Arc<Mutex<JoinSet<()>>>,
    /// This endpoint's URL and the views of every endpoint the manager follows, for guests.
    views: Option<(String, Views)>,
}

impl Supervisor {
    pub fn new(upstream: Upstream, settings: EngineSettings, access: ClusterAccess, parent: CancellationToken) -> Self {
        let (changes, rx) = mpsc::unbounded_channel();
        Self {
            upstream,
            settings,
            access,
            running: Default::default(),
            stopped: Default::default(),
            parent,
            changes,
            changes_rx: Arc::new(Mutex::new(Some(rx))),
            engines: Default::default(),
            views: None,
        }
    }

    /// Runs, beside each syncer whose target allows other workspaces, a guest over every other
    /// endpoint in `views` (this supervisor's own endpoint being `url`).
    pub fn with_views(mut self, url: &str, views: Views) -> Self {
        self.views = Some((url.to_string(), views));
        self
    }

    /// How push-mode syncers reach their clusters (the SyncTarget reconciler checks a server
    /// against the same policy before a syncer starts).
    pub fn access(&self) -> &ClusterAccess {
        &self.access
    }

    /// The shared view of kcp the syncers (and the finalizer sweeper) read.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// How long a deleted kcp object waits for a syncer that cannot delete its copy.
    pub fn deletion_timeout(&self) -> std::time::Duration {
        self.settings.deletion_timeout
    }

    /// Whether a syncer for `key` runs here (`Some(true)`), was stopped by a reconcile
    /// (`Some(false)`), or neither has happened since the manager started (`None`).
    pub fn running(&self, key: &ClusterKey) -> Option<bool> {
        if self.running.lock().expect("supervisor poisoned").contains_key(key) {
            return Some(true);
        }
        self.stopped.lock().expect("supervisor poisoned").contains(key).then_some(false)
    }

    /// The stream of SyncTarget keys whose syncer's view of its cluster changed (taken once).
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<ClusterKey>> {
        self.changes_rx.lock().expect("supervisor poisoned").take()
    }

    /// What the syncer of `key` last found when probing its cluster.
    pub fn probe(&self, key: &ClusterKey) -> Option<Probe> {
        self.running.lock().expect("supervisor poisoned").get(key).map(|r| r.probe.borrow().clone())
    }

    /// Makes sure a syncer for the SyncTarget `key` runs with these credentials (checked by
    /// [`crate::syncer::credentials`]) and syncs `apis` (a changed API list is handed to the
    /// running syncer; only new credentials restart it). Returns an error message when no client
    /// can be built from them (e.g. a CA certificate that is not valid DER).
    pub fn ensure(
        &self,
        key: &ClusterKey,
        credentials: &InlineCredentials,
        apis: Vec<SupportedApi>,
        allowed: BTreeSet<LogicalClusterName>,
    ) -> Result<(), String> {
        let hash = credentials.fingerprint();
        self.stopped.lock().expect("supervisor poisoned").remove(key);
        if let Some(running) = self.running.lock().expect("supervisor poisoned").get(key)
            && running.credentials == hash
        {
            running.wanted.send_if_modified(|w| std::mem::replace(w, apis.clone()) != apis);
            running.allowed.send_if_modified(|a| std::mem::replace(a, allowed.clone()) != allowed);
            return Ok(());
        }
        // Built from the inline values alone: nothing in a tenant's kubeconfig is run or opened,
        // and the dialer reaches only addresses the operator's policy allows.
        let client = push_cluster_client(credentials.client_config(), self.settings.cluster_qps, &self.access)
            .map_err(|e| e.to_string())?;
        let (probe_tx, probe) = watch::channel(Probe::Pending);
        let (wanted, wanted_rx) = watch::channel(apis);
        let (allowed, allowed_rx) = watch::channel(allowed);
        let make = {
            let (key, settings) = (key.clone(), self.settings.clone());
            let (wanted, allowed) = (wanted_rx.clone(), allowed_rx.clone());
            move |upstream: Upstream, probe: watch::Sender<Probe>| {
                Engine::new(
                    key.cluster.clone(),
                    &key.name,
                    upstream,
                    client.clone(),
                    settings.clone(),
                    probe,
                    wanted.clone(),
                )
                .with_allowed_clusters(allowed.clone())
            }
        };
        let mut engine = make(self.upstream.clone(), probe_tx);
        let cancel = self.parent.child_token();
        if let Some((url, views)) = &self.views {
            engine = engine.with_scope(Scope::Host { url: url.clone(), views: views.subscribe() });
            let guests =
                keep_guests(make, url.clone(), views.subscribe(), allowed_rx, self.engines.clone(), cancel.clone());
            tokio::spawn(guests);
        }
        let mut watch_probe = probe.clone();
        let previous = self
            .running
            .lock()
            .expect("supervisor poisoned")
            .insert(key.clone(), Running { credentials: hash, wanted, allowed, cancel: cancel.clone(), probe });
        let (changes, changed_key) = (self.changes.clone(), key.clone());
        tokio::spawn(async move {
            while watch_probe.changed().await.is_ok() {
                let _ = changes.send(changed_key.clone());
            }
        });
        if let Some(old) = previous {
            tracing::info!(target = %key, "kubeconfig changed; restarting the syncer");
            old.cancel.cancel();
        } else {
            tracing::info!(target = %key, target_key = engine.target_key(), "starting syncer");
        }
        let mut engines = self.engines.lock().expect("supervisor poisoned");
        // Reap engines that have ended (restarted or stopped), so the set holds running ones.
        while engines.try_join_next().is_some() {}
        engines.spawn(engine.run(cancel));
        Ok(())
    }

    /// After the SyncTarget `key` was deleted: stops its syncer and takes its finalizer and
    /// per-target status annotation off every kcp object, so no tenant object waits forever on
    /// a target that is gone. What it copied stays in the cluster, no longer managed (deleting
    /// a SyncTarget deregisters a cluster; it does not tear down running workloads). Returns how
    /// many objects were released; a failed write is an error, and the caller retries.
    pub async fn release(&self, key: &ClusterKey) -> Result<usize, kube::Error> {
        self.stop(key);
        // Gone, not stopped: the sweeper treats a key no SyncTarget has as orphaned.
        self.stopped.lock().expect("supervisor poisoned").remove(key);
        let target_key = crate::apis::names::target_key(&key.cluster, &key.name);
        let keys = BTreeSet::from([target_key.clone()]);
        let held = self.upstream.find(|h| super::sweep::held_markers(h).contains(&target_key));
        for (index, object_key, obj) in &held {
            release_markers(&self.upstream, *index, object_key, obj, &keys).await?;
        }
        if !held.is_empty() {
            tracing::info!(target = %key, objects = held.len(), "SyncTarget deleted: released its finalizers");
        }
        Ok(held.len())
    }

    /// Waits for every engine to end; call once `parent` is cancelled. Each engine lets its
    /// workers finish the sync in hand (see [`crate::runtime::drain`]).
    pub async fn stopped(&self) {
        let mut engines = std::mem::take(&mut *self.engines.lock().expect("supervisor poisoned"));
        while engines.join_next().await.is_some() {}
    }

    /// Stops the syncer of `key`, if one runs.
    pub fn stop(&self, key: &ClusterKey) {
        self.stopped.lock().expect("supervisor poisoned").insert(key.clone());
        if let Some(r) = self.running.lock().expect("supervisor poisoned").remove(key) {
            tracing::info!(target = %key, "stopping syncer");
            r.cancel.cancel();
        }
    }
}

/// Keeps a guest syncer (built by `make` over another endpoint's view) on every endpoint in
/// `views` but `url`, from the moment the target allows any other workspace until `cancel`
/// (the host stops): a guest stays when consent is withdrawn, to clean up what it copied. A
/// view replaced (its endpoint's controllers restarted) gets a new guest; a view gone, none.
async fn keep_guests(
    make: impl Fn(Upstream, watch::Sender<Probe>) -> Engine,
    url: String,
    mut views: watch::Receiver<Followed>,
    mut allowed: watch::Receiver<BTreeSet<LogicalClusterName>>,
    engines: Arc<Mutex<JoinSet<()>>>,
    cancel: CancellationToken,
) {
    let mut guests: HashMap<String, (Upstream, CancellationToken)> = HashMap::new();
    let mut wanted = false;
    loop {
        wanted |= !allowed.borrow_and_update().is_empty();
        let followed = views.borrow_and_update().clone();
        // Until the target allows another workspace, no guest is wanted anywhere.
        let others: HashMap<&String, &Upstream> = match wanted {
            true => followed.views.iter().filter(|(u, _)| **u != url).collect(),
            false => HashMap::new(),
        };
        guests.retain(|u, (view, stop)| {
            let keep = others.get(u).is_some_and(|v| v.same_view(view));
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (u, view) in others {
            if guests.contains_key(u) {
                continue;
            }
            let stop = cancel.child_token();
            let engine = make(view.clone(), watch::channel(Probe::Pending).0).with_scope(Scope::Guest);
            tracing::info!(target_key = engine.target_key(), endpoint = %u, "starting a guest syncer for the workspaces of another shard");
            engines.lock().expect("supervisor poisoned").spawn(engine.run(stop.clone()));
            guests.insert(u.clone(), (view.clone(), stop));
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = views.changed() => if changed.is_err() { return },
            changed = allowed.changed() => if changed.is_err() { return },
        }
    }
}

/// Takes the syncer finalizers and per-target status annotations of `target_keys` off the kcp
/// object `obj` (slot `index` of `upstream`). The patch carries the cached resourceVersion, so
/// it is a compare-and-swap: a conflict is an error and the caller retries from a fresher
/// cache. An object already gone counts as released.
pub async fn release_markers(
    upstream: &Upstream,
    index: usize,
    key: &ClusterKey,
    obj: &kube::api::DynamicObject,
    target_keys: &BTreeSet<String>,
) -> Result<(), kube::Error> {
    let Some(resource) = upstream.resource(index) else { return Ok(()) };
    let client = upstream.clients.cluster(&key.cluster);
    let api: kube::Api<kube::api::DynamicObject> = match key.namespace.as_deref() {
        Some(ns) => kube::Api::namespaced_with(client, ns, &resource.api),
        None => kube::Api::all_with(client, &resource.api),
    };
    let released: BTreeSet<String> = target_keys.iter().map(|k| crate::apis::names::syncer_finalizer(k)).collect();
    let finalizers: Vec<&String> =
        obj.metadata.finalizers.iter().flatten().filter(|f| !released.contains(*f)).collect();
    let annotations: serde_json::Map<String, serde_json::Value> =
        target_keys.iter().map(|k| (crate::syncer::status::status_annotation(k), serde_json::Value::Null)).collect();
    let patch = serde_json::json!({ "metadata": {
        "finalizers": finalizers,
        "annotations": annotations,
        "resourceVersion": obj.metadata.resource_version,
    } });
    match api.patch(&key.name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
