//! One syncer: copies the objects of the namespaces assigned to one SyncTarget into its
//! physical cluster, keeps them there, brings their status back, and cleans up.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use tokio_util::sync::CancellationToken;

mod apis;
mod copy;
mod evidence;
mod finalizer;
mod finalizing;
mod heartbeat;
#[cfg(test)]
mod io_tests;
mod namespaces;
mod plan;
mod remove;
pub mod scope;
mod status_up;
mod telemetry;
mod unconditional;
mod upsync;

pub use self::apis::follow_supported_apis;
pub use self::heartbeat::Probe;

use self::remove::Removal;
use self::scope::{Route, Scope};
use crate::apis::sync::v1alpha1::SupportedApi;
use crate::kcp::{ClusterKey, LogicalClusterName, error_message};
use crate::runtime::guard;
use crate::runtime::queue::{Backoff, WorkQueue};
use crate::runtime::worker::{Loop, Workers};
use crate::server::Metrics;
use crate::server::metrics::queue;
use crate::syncer::access::{Access, namespace_role};
use crate::syncer::downstream::Downstream;
use crate::syncer::events::Events;
use crate::syncer::naming::{Locator, TargetRef};
use crate::syncer::transform;
use crate::syncer::upstream::{Read, SyncKey, Upstream};

/// The field manager of every downstream write.
pub const FIELD_MANAGER: &str = "tmc-syncer";
pub use crate::syncer::naming::SPEC_HASH_ANNOTATION;

/// Annotation on an upstream object that allows its syncer to take over a downstream object of
/// the same name that it did not create.
pub const ADOPT_ANNOTATION: &str = "tmc.kcp.io/adopt";

pub use crate::apis::names::syncer_finalizer;

/// Errors of one sync; the key is retried with per-key backoff.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{kind} {namespace}/{name} already exists in the cluster and was not created by kcp-tmc")]
    NotOurs { kind: String, namespace: String, name: String },
    #[error("downstream namespace {namespace} {why}; not writing into it")]
    ForeignNamespace { namespace: String, why: crate::syncer::naming::Conflict },
    #[error("{action}: {message}")]
    Api { action: String, message: String },
    #[error("not synced: {0}")]
    Override(String),
    #[error(transparent)]
    Panicked(#[from] crate::runtime::guard::Panicked),
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> SyncError {
    let action = action.into();
    move |e| SyncError::Api { action, message: error_message(&e) }
}

/// Tunables of a syncer.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub workers: usize,
    pub heartbeat_interval: Duration,
    /// How long a deleted kcp object waits for its copy to be deleted in an unreachable cluster
    /// before its finalizer is released anyway (the copy is deleted when the cluster returns).
    pub deletion_timeout: Duration,
    pub backoff: Backoff,
    /// Requests the syncer may start per second against its cluster.
    pub cluster_qps: u32,
    /// Where the syncer records its writes, latencies, object counts and queue depth.
    pub metrics: Metrics,
}

/// See the module docs.
#[derive(Clone)]
pub struct Engine {
    target: TargetRef,
    target_cluster: LogicalClusterName,
    target_key: String,
    upstream: Upstream,
    downstream: Downstream,
    /// Binds the syncer to its namespace role in the namespaces it creates.
    access: Access,
    events: Events,
    queue: Arc<WorkQueue<SyncKey>>,
    settings: EngineSettings,
    probe: Arc<tokio::sync::watch::Sender<Probe>>,
    /// The APIs the target asks for (`spec.supportedAPIs`, defaults applied).
    wanted: tokio::sync::watch::Receiver<Vec<SupportedApi>>,
    /// What became of each wanted API (see [`apis`]).
    apis: Arc<RwLock<apis::ApiReport>>,
    /// Upstream slots synced now, and every slot ever synced (its downstream watch runs).
    active: Arc<RwLock<BTreeSet<usize>>>,
    started: Arc<Mutex<BTreeSet<usize>>>,
    /// Wakes the heartbeat to report a changed API report at once.
    report_changed: Arc<tokio::sync::Notify>,
    /// Logical clusters of other workspaces the target allows (`spec.allowedWorkspaces`).
    allowed: tokio::sync::watch::Receiver<BTreeSet<LogicalClusterName>>,
    telemetry: Arc<telemetry::Telemetry>,
    /// Whose keys it looks after, when its target serves tenants on several shards.
    scope: Scope,
    /// Keys whose finalizer is being added off the worker.
    finalizing: finalizing::InFlight,
    /// Objects copied back from the cluster (see [`upsync`]).
    upsyncs: Arc<upsync::Upsyncs>,
}

impl Engine {
    pub fn new(
        target_cluster: LogicalClusterName,
        target_name: &str,
        upstream: Upstream,
        downstream_client: kube::Client,
        settings: EngineSettings,
        probe: tokio::sync::watch::Sender<Probe>,
        wanted: tokio::sync::watch::Receiver<Vec<SupportedApi>>,
    ) -> Self {
        let target_key = super::naming::target_key(&target_cluster, target_name);
        let events =
            Events::new(upstream.clients.clone(), "tmc.kcp.io/syncer", &format!("{target_cluster}|{target_name}"));
        Self {
            target: TargetRef { cluster: target_cluster.to_string(), name: target_name.to_string() },
            target_cluster,
            access: Access::new(downstream_client.clone(), namespace_role(target_name)),
            downstream: Downstream::new(downstream_client, &target_key),
            events,
            telemetry: Arc::new(telemetry::Telemetry::new(settings.metrics.clone(), &target_key)),
            target_key,
            upstream,
            queue: WorkQueue::with_metrics(settings.backoff, settings.metrics.queue(queue::SYNCER)),
            settings,
            probe: Arc::new(probe),
            wanted,
            apis: Default::default(),
            active: Default::default(),
            started: Default::default(),
            report_changed: Default::default(),
            allowed: tokio::sync::watch::channel(BTreeSet::new()).1,
            scope: Scope::Sole,
            finalizing: Default::default(),
            upsyncs: Default::default(),
        }
    }

    /// Runs as a host with guests, or as a guest (see [`scope`]). A guest writes nothing to its
    /// SyncTarget (no heartbeat, no counts): the host reports the cluster.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Follows the logical clusters of other workspaces whose namespaces this target may run.
    /// Each change re-queues everything assigned to the target, so a namespace labelled before
    /// its workspace was allowed (or one no longer allowed) is looked at again. The follower
    /// task ends when the sender is dropped (the supervisor stops or replaces this syncer).
    pub fn with_allowed_clusters(
        mut self,
        allowed: tokio::sync::watch::Receiver<BTreeSet<LogicalClusterName>>,
    ) -> Self {
        let (mut changes, upstream, queue, key) =
            (allowed.clone(), self.upstream.clone(), self.queue.clone(), self.target_key.clone());
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                upstream.assigned_keys(&key).into_iter().for_each(|k| queue.add(k));
            }
        });
        self.allowed = allowed;
        self
    }

    /// Binds the syncer to `role` in its namespaces instead of the default
    /// [`namespace_role`] of its SyncTarget's name.
    pub fn with_namespace_role(mut self, role: String) -> Self {
        self.access = Access::new(self.downstream.client.clone(), role);
        self
    }

    pub fn target_key(&self) -> &str {
        &self.target_key
    }

    /// Runs until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut changes = self.upstream.subscribe(&self.target_key);
        let (queue, telemetry, upsyncs) = (self.queue.clone(), self.telemetry.clone(), self.upsyncs.clone());
        tasks.spawn(async move {
            while let Some(key) = changes.recv().await {
                telemetry.upstream_changed(&key);
                // A namespace's assignment or annotations changed: what upsync watches may too.
                if key.resource.is_none() {
                    upsyncs.wake();
                }
                queue.add(key);
            }
        });
        let (queue, downstream, c) = (self.queue.clone(), self.downstream.clone(), cancel.clone());
        tasks.spawn(guard::supervise("downstream namespace watch", cancel.clone(), move || {
            let queue = queue.clone();
            downstream.clone().watch_namespaces(move |k| queue.add(k), c.clone())
        }));
        let (this, c) = (self.clone(), cancel.clone());
        tasks.spawn(guard::supervise("supported APIs", cancel.clone(), move || this.clone().manage_apis(c.clone())));
        let (this, c) = (self.clone(), cancel.clone());
        tasks.spawn(guard::supervise("upsync", cancel.clone(), move || this.clone().upsync(c.clone())));
        let workers = self.clone().workers();
        if !self.scope.is_guest() {
            let (this, c) = (self.clone(), cancel.clone());
            tasks.spawn(guard::supervise("heartbeat", cancel.clone(), move || this.clone().heartbeat(c.clone())));
            let (this, c) = (self.clone(), cancel.clone());
            tasks.spawn(guard::supervise("synced-object counts", cancel.clone(), move || {
                this.clone().count_synced(c.clone())
            }));
        }
        cancel.cancelled().await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        // After the tasks, so this syncer's receiver is gone and only its own subscription goes.
        self.upstream.unsubscribe(&self.target_key);
        // Workers finish the sync in hand (bounded) rather than being cut off between two writes,
        // and so do the finalizer writes they started: a restarted syncer then has none to redo.
        workers.stop().await;
        if tokio::time::timeout(crate::runtime::DRAIN_TIMEOUT, self.finalizing.idle()).await.is_err() {
            tracing::warn!(timeout = ?crate::runtime::DRAIN_TIMEOUT, "finalizer writes did not finish in time");
        }
    }

    fn workers(self) -> Workers<SyncKey> {
        let telemetry = self.telemetry.clone();
        let (queue, count) = (self.queue.clone(), self.settings.workers);
        let target = self.target.name.clone();
        let span = move |key: &SyncKey| {
            tracing::info_span!("sync", target = %target, workspace = %key.key.cluster,
                namespace = ?key.key.namespace, name = %key.key.name)
        };
        Loop::new("syncer", span).observe(move |key, ok, _started| telemetry.finished(key, ok)).spawn(
            &queue,
            count,
            move |key| {
                let this = self.clone();
                async move {
                    this.telemetry.begin(&key);
                    this.sync(&key).await
                }
            },
        )
    }

    /// The kcp API of the upstream object behind `key`, scoped to its logical cluster.
    fn upstream_api(&self, api: &kube::core::ApiResource, key: &ClusterKey) -> Api<DynamicObject> {
        let client = self.upstream.clients.cluster(&key.cluster);
        Api::namespaced_with(client, key.namespace.as_deref().unwrap_or_default(), api)
    }

    /// Whether this syncer looks after the keys of `cluster` (see [`scope`]).
    fn route(&self, cluster: &LogicalClusterName) -> Route {
        match &self.scope {
            Scope::Sole => Route::Mine,
            Scope::Guest => scope::guest_route(self.upstream.serves(cluster)),
            Scope::Host { url, views } => scope::host_route(
                *cluster == self.target_cluster,
                || self.consents(cluster),
                || self.upstream.serves(cluster),
                || {
                    let followed = views.borrow();
                    let peers = followed.views.iter().filter(|(u, _)| *u != url).map(|(_, v)| v.serves(cluster));
                    (peers.collect(), followed.complete)
                },
            ),
        }
    }

    fn finalizer(&self) -> String {
        syncer_finalizer(&self.target_key)
    }

    async fn sync(&self, key: &SyncKey) -> Result<Option<Duration>, SyncError> {
        match self.route(&key.key.cluster) {
            Route::Mine => {}
            Route::Others => return Ok(None),
            Route::Unknown => return Ok(Some(plan::WAIT_FOR_VIEW)),
        }
        match key.resource {
            Some(index) => self.sync_object(index, &key.key).await,
            None => self.sync_namespace(&key.key).await,
        }
    }

    async fn sync_object(&self, index: usize, key: &ClusterKey) -> Result<Option<Duration>, SyncError> {
        let Some(resource) = self.upstream.resource(index) else { return Ok(None) };
        // A resource this syncer never synced is another target's business.
        if !self.ever_active(index) {
            return Ok(None);
        }
        let Some(namespace) = key.namespace.as_deref() else { return Ok(None) };
        let locator = Locator::new(self.target.clone(), &key.cluster, namespace);
        let dns = locator.downstream_namespace();
        let upstream = self.upstream.object(index, key);
        let upstream_value = upstream.as_ref().map(|o| serde_json::to_value(o.as_ref()).unwrap_or_default());
        let finalizer = self.finalizer();
        let facts = plan::Facts {
            upstream: match &upstream {
                None => plan::UpstreamObject::Absent,
                Some(o) => plan::UpstreamObject::Present {
                    deleting: o.metadata.deletion_timestamp.is_some(),
                    our_finalizer: o.metadata.finalizers.iter().flatten().any(|f| *f == finalizer),
                },
            },
            upstream_synced: self.upstream.synced(index),
            active: self.is_active(index),
            // Workspace isolation: a target runs only namespaces of its own workspace and of
            // those it allows (spec.allowedWorkspaces).
            consented: self.consents(&key.cluster),
            assigned: self.upstream.is_assigned(&key.cluster, namespace, &self.target_key),
            selected: upstream.as_ref().is_some_and(|o| {
                let labels = o.metadata.labels.clone().unwrap_or_default();
                self.upstream.selects(&key.cluster, namespace, &self.target_key, &labels)
            }),
            skipped: upstream_value.as_ref().is_some_and(|v| transform::skip_reason(&resource.api.kind, v).is_some()),
            downstream: match self.downstream.object(index, &dns, &key.name) {
                Some(_) => plan::DownstreamCopy::Ours,
                None if self.downstream.synced(index, &dns) => plan::DownstreamCopy::Absent,
                None => plan::DownstreamCopy::Unknown,
            },
            deletion_timed_out: upstream.as_ref().is_some_and(|o| self.deletion_timed_out(o)),
        };
        let down_api: Api<DynamicObject> = Api::namespaced_with(self.downstream.client.clone(), &dns, &resource.api);
        match self.remove(&resource.api, key, upstream.as_ref(), facts, &down_api).await? {
            Removal::Apply => {}
            Removal::Done(requeue) => return Ok(requeue),
        }
        let current = self.downstream.object(index, &dns, &key.name);
        // The shared view may hold only the object's metadata (see `syncer::kept`): the contents
        // come whole, in the version decided on, or not at all. A newer version in kcp is now in
        // the view: decided again on it, at once.
        let read = self.upstream.whole(index, key).await.map_err(api_err("read the object from kcp"))?;
        let obj = match read {
            Read::Whole(obj) => obj,
            Read::Gone => return Ok(None),
            Read::Newer => return Ok(Some(Duration::ZERO)),
        };
        let value = serde_json::to_value(obj.as_ref()).unwrap_or_default();
        // The finalizer is written to kcp while the copy is written to the cluster: a new object
        // reaches its cluster after its copy's write, not after both (the finalizer through the
        // virtual workspace was most of the one-at-a-time latency). Safe in either order: a copy
        // whose kcp object is deleted before the finalizer lands is found by the cluster view
        // (labelled for this target, no kcp object) and deleted, after a restart too; an object
        // being deleted gets no finalizer, and its deletion brings the key back.
        let target =
            copy::Target { index, resource: &resource, key, locator: &locator, namespace: &dns, api: &down_api };
        let ours = obj.metadata.finalizers.iter().flatten().any(|f| *f == finalizer);
        let deleting = obj.metadata.deletion_timestamp.is_some();
        if !ours && !deleting {
            // Beside the copy, and off the worker (see `finalizing`).
            let sync_key = SyncKey { resource: Some(index), key: key.clone() };
            self.add_finalizer_off_worker(sync_key, resource.api.clone(), obj.clone());
        }
        let copy::Copied { hash, status_view: current_view } = self.copy_down(&target, &obj, &value, current).await?;
        // An object being deleted gets no finalizer; its deletion's own event brings the key back.
        if deleting && !ours {
            return Ok(None);
        }
        self.record_evidence(&resource.api, key, &obj, &hash, current_view.as_ref()).await?;
        if resource.status_up
            && let Some(current) = current_view
            && self.status_up(&resource.api, key, &obj, &value, &current, &hash).await?
        {
            self.telemetry.status_written(&SyncKey { resource: Some(index), key: key.clone() });
        }
        Ok(None)
    }

    /// Whether `obj` has been waiting in deletion longer than the deletion timeout.
    fn deletion_timed_out(&self, obj: &DynamicObject) -> bool {
        let Some(since) = obj.metadata.deletion_timestamp.as_ref() else { return false };
        let waited = jiff::Timestamp::now().duration_since(since.0);
        Duration::try_from(waited).is_ok_and(|w| w >= self.settings.deletion_timeout)
    }
}
