//! One syncer: copies the objects of the namespaces assigned to one SyncTarget into its
//! physical cluster, keeps them there, brings their status back, and cleans up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::downstream::Downstream;
use super::events::Events;
use super::naming::{LOCATOR_ANNOTATION, Locator, TARGET_LABEL, TargetRef};
use super::status;
use super::transform::{self, Destination};
use super::upstream::{SyncKey, Upstream};
use crate::apis::sync::v1alpha1::SyncTarget;
use crate::kcp::{ClusterKey, LogicalClusterName, error_message};
use crate::reconciler::queue::{Backoff, WorkQueue};

/// The field manager of every downstream write.
pub const FIELD_MANAGER: &str = "tmc-syncer";
/// Annotation on downstream objects: hash of the applied object, to notice removed fields.
pub const SPEC_HASH_ANNOTATION: &str = "tmc.kcp.io/spec-hash";

/// Annotation on an upstream object that allows its syncer to take over a downstream object of
/// the same name that it did not create.
pub const ADOPT_ANNOTATION: &str = "tmc.kcp.io/adopt";

/// Errors of one sync; the key is retried with per-key backoff.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{kind} {namespace}/{name} already exists in the cluster and was not created by kcp-tmc")]
    NotOurs { kind: String, namespace: String, name: String },
    #[error(
        "downstream namespace {namespace} exists and belongs to something else (locator {found:?}); not touching it"
    )]
    ForeignNamespace { namespace: String, found: Option<String> },
    #[error("{action}: {message}")]
    Api { action: String, message: String },
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> SyncError {
    let action = action.into();
    move |e| SyncError::Api { action, message: error_message(&e) }
}

/// What the syncer's last probe of its cluster (an authorised list request) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Pending,
    Reachable,
    Unreachable(String),
    Unauthorized(String),
}

impl Probe {
    fn of(result: &Result<(), kube::Error>) -> Self {
        match result {
            Ok(()) => Probe::Reachable,
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => Probe::Unauthorized(s.message.clone()),
            Err(e) => Probe::Unreachable(error_message(e)),
        }
    }
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
}

/// See the module docs.
#[derive(Clone)]
pub struct Engine {
    target: TargetRef,
    target_cluster: LogicalClusterName,
    target_key: String,
    upstream: Upstream,
    downstream: Downstream,
    events: Events,
    queue: Arc<WorkQueue<SyncKey>>,
    settings: EngineSettings,
    probe: Arc<tokio::sync::watch::Sender<Probe>>,
    /// Downstream write requests issued (applies and deletes), for tests and metrics.
    pub writes: Arc<AtomicU64>,
}

impl Engine {
    pub fn new(
        target_cluster: LogicalClusterName,
        target_name: &str,
        upstream: Upstream,
        downstream_client: kube::Client,
        settings: EngineSettings,
        probe: tokio::sync::watch::Sender<Probe>,
    ) -> Self {
        let target_key = super::naming::target_key(&target_cluster, target_name);
        let events =
            Events::new(upstream.clients.clone(), "tmc.kcp.io/syncer", &format!("{target_cluster}|{target_name}"));
        Self {
            target: TargetRef { cluster: target_cluster.to_string(), name: target_name.to_string() },
            target_cluster,
            downstream: Downstream::new(downstream_client, &target_key, upstream.resources.len()),
            events,
            target_key,
            upstream,
            queue: WorkQueue::new(settings.backoff),
            settings,
            probe: Arc::new(probe),
            writes: Default::default(),
        }
    }

    pub fn target_key(&self) -> &str {
        &self.target_key
    }

    /// Runs until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut changes = self.upstream.subscribe(&self.target_key);
        let queue = self.queue.clone();
        tasks.spawn(async move {
            while let Some(key) = changes.recv().await {
                queue.add(key);
            }
        });
        let queue = self.queue.clone();
        tasks.spawn(self.downstream.clone().watch_namespaces(move |k| queue.add(k), cancel.clone()));
        for (index, resource) in self.upstream.resources.iter().enumerate() {
            let queue = self.queue.clone();
            let enqueue = move |k| queue.add(k);
            tasks.spawn(self.downstream.clone().watch_resource(index, resource.clone(), enqueue, cancel.clone()));
        }
        for _ in 0..self.settings.workers.max(1) {
            tasks.spawn(self.clone().work());
        }
        tasks.spawn(self.clone().heartbeat(cancel.clone()));
        cancel.cancelled().await;
        self.upstream.unsubscribe(&self.target_key);
        self.queue.shut_down();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    async fn work(self) {
        while let Some(key) = self.queue.next().await {
            let span = tracing::info_span!("sync", target = %self.target.name, workspace = %key.key.cluster,
                namespace = ?key.key.namespace, name = %key.key.name);
            match self.sync(&key).instrument(span.clone()).await {
                Ok(requeue) => {
                    self.queue.forget(&key);
                    if let Some(after) = requeue {
                        self.queue.add_after(key.clone(), after);
                    }
                }
                Err(e) => {
                    let delay = self.queue.add_rate_limited(key.clone());
                    span.in_scope(|| tracing::warn!(error = %e, retry_in = ?delay, "sync failed"));
                }
            }
            self.queue.done(&key);
        }
    }

    fn finalizer(&self) -> String {
        format!("tmc.kcp.io/syncer-{}", self.target_key)
    }

    async fn sync(&self, key: &SyncKey) -> Result<Option<Duration>, SyncError> {
        match key.resource {
            Some(index) => self.sync_object(index, &key.key).await,
            None => self.sync_namespace(&key.key).await,
        }
    }

    async fn sync_object(&self, index: usize, key: &ClusterKey) -> Result<Option<Duration>, SyncError> {
        let resource = &self.upstream.resources[index];
        let Some(namespace) = key.namespace.as_deref() else { return Ok(None) };
        let locator = Locator::new(self.target.clone(), &key.cluster, namespace);
        let dns = locator.downstream_namespace();
        let upstream = self.upstream.object(index, key);
        let upstream_value = upstream.as_ref().map(|o| serde_json::to_value(o.as_ref()).unwrap_or_default());
        let wanted = upstream.as_ref().is_some_and(|o| o.metadata.deletion_timestamp.is_none())
            && self.upstream.is_assigned(&key.cluster, namespace, &self.target_key)
            && upstream_value.as_ref().is_some_and(|v| transform::skip_reason(&resource.api.kind, v).is_none());
        let down_api: Api<DynamicObject> = Api::namespaced_with(self.downstream.client.clone(), &dns, &resource.api);
        let current = self.downstream.object(index, &dns, &key.name);

        if !wanted {
            // Before the downstream cache has listed, "not cached" does not mean "absent": ask.
            if current.is_some() || !self.downstream.synced() {
                self.writes.fetch_add(1, Ordering::Relaxed);
                match down_api.delete(&key.name, &DeleteParams::background()).await {
                    Ok(_) => {
                        tracing::info!(namespace = %dns, "deleted downstream copy");
                        // The delete event re-queues this key; release the finalizer then.
                        return Ok(None);
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        let Some(obj) = upstream.as_ref().filter(|o| self.deletion_timed_out(o)) else {
                            return Err(api_err("delete downstream copy")(e));
                        };
                        let note = format!(
                            "{} could not delete the copy for {:?} ({}); the finalizer is released and the copy will be deleted when the cluster is reachable again",
                            self.target.name,
                            self.settings.deletion_timeout,
                            error_message(&e)
                        );
                        self.events.warn(&key.cluster, &resource.api, obj, "DownstreamOrphaned", note).await;
                    }
                }
            }
            if let Some(obj) = &upstream {
                self.forget_status(index, key, obj).await?;
                self.set_finalizer(index, key, obj, false).await?;
            }
            self.queue.add_after(
                SyncKey { resource: None, key: ClusterKey::new(key.cluster.clone(), None, namespace) },
                Duration::from_secs(1),
            );
            return Ok(None);
        }
        let (obj, value) = (upstream.expect("wanted implies present"), upstream_value.expect("present"));
        self.set_finalizer(index, key, &obj, true).await?;
        if let Err(e) = self.ensure_namespace(&dns, &locator).await {
            let note = format!("not synced to {}: {e}", self.target.name);
            self.events.warn(&key.cluster, &resource.api, &obj, "DownstreamNamespaceConflict", note).await;
            return Err(e);
        }
        if current.is_none() {
            self.check_take_over(&down_api, &resource.api, key, &obj).await?;
        }
        let dest = Destination { namespace: &dns, target_key: &self.target_key, origin_cluster: key.cluster.as_str() };
        let mut desired = transform::desired(&value, &dest);
        let hash = content_hash(&desired);
        desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = json!(hash);
        let current_value = current.as_ref().map(|c| serde_json::to_value(c.as_ref()).unwrap_or_default());
        let in_sync = current_value.as_ref().is_some_and(|c| crate::kcp::install::is_subset(&desired, c));
        if !in_sync {
            self.writes.fetch_add(1, Ordering::Relaxed);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            if let Err(e) = down_api.patch(&key.name, &params, &Patch::Apply(&desired)).await {
                // The cluster refused the object (invalid or immutable field, too large, …): tell
                // the tenant on their object, and retry with backoff in case the cluster changes.
                if let kube::Error::Api(s) = &e
                    && (400..500).contains(&s.code)
                {
                    let note = format!("{} rejected it: {}", self.target.name, s.message);
                    self.events.warn(&key.cluster, &resource.api, &obj, "SyncRejected", note).await;
                }
                return Err(api_err("apply downstream")(e));
            }
            tracing::info!(namespace = %dns, "applied downstream");
        }
        if resource.status_up
            && let Some(current) = current_value
        {
            self.status_up(index, key, &obj, &value, &current, &hash).await?;
        }
        Ok(None)
    }

    /// Whether `obj` has been waiting in deletion longer than the deletion timeout.
    fn deletion_timed_out(&self, obj: &DynamicObject) -> bool {
        let Some(since) = obj.metadata.deletion_timestamp.as_ref() else { return false };
        let waited = jiff::Timestamp::now().duration_since(since.0);
        Duration::try_from(waited).is_ok_and(|w| w >= self.settings.deletion_timeout)
    }

    /// Refuses to overwrite a downstream object this syncer did not create, unless the upstream
    /// object carries `tmc.kcp.io/adopt: "true"`.
    async fn check_take_over(
        &self,
        down_api: &Api<DynamicObject>,
        api: &kube::core::ApiResource,
        key: &ClusterKey,
        obj: &DynamicObject,
    ) -> Result<(), SyncError> {
        let Some(existing) = down_api.get_opt(&key.name).await.map_err(api_err("read downstream object"))? else {
            return Ok(());
        };
        let ours = existing.metadata.labels.as_ref().and_then(|l| l.get(TARGET_LABEL)) == Some(&self.target_key);
        let adopt =
            obj.metadata.annotations.as_ref().and_then(|a| a.get(ADOPT_ANNOTATION)).map(String::as_str) == Some("true");
        if ours || adopt {
            return Ok(());
        }
        let err = SyncError::NotOurs {
            kind: api.kind.clone(),
            namespace: existing.metadata.namespace.clone().unwrap_or_default(),
            name: key.name.clone(),
        };
        let note = format!(
            "{err} on {}; left alone. Annotate this object with {ADOPT_ANNOTATION}=true to take it over.",
            self.target.name
        );
        self.events.warn(&key.cluster, api, obj, "TakeOverRefused", note).await;
        Err(err)
    }

    /// Brings the downstream status up. With one target it is the upstream status; with several,
    /// this target's status goes into its annotation and the upstream status is the aggregate
    /// (see [`super::status`]). Every write happens only when something differs.
    async fn status_up(
        &self,
        index: usize,
        key: &ClusterKey,
        obj: &DynamicObject,
        upstream: &Value,
        downstream: &Value,
        applied_hash: &str,
    ) -> Result<(), SyncError> {
        let applied_current = downstream["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == applied_hash;
        let mine = status::translate(downstream, applied_current, obj.metadata.generation);
        if mine.is_null() {
            return Ok(());
        }
        let namespace = key.namespace.as_deref().unwrap_or_default();
        let resource = &self.upstream.resources[index].api;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.upstream.clients.cluster(&key.cluster), namespace, resource);
        let targets = self.upstream.assigned_targets(&key.cluster, namespace);
        let desired = if targets.len() <= 1 {
            mine
        } else {
            let annotation = status::status_annotation(&self.target_key);
            let text = mine.to_string();
            if upstream["metadata"]["annotations"][&annotation].as_str() != Some(text.as_str()) {
                let patch = json!({ "metadata": { "annotations": { annotation: text } } });
                api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(api_err("record per-target status"))?;
                // The resulting event brings every syncer of this object back here.
                return Ok(());
            }
            let per_target = targets
                .iter()
                .map(|t| {
                    let recorded = upstream["metadata"]["annotations"][status::status_annotation(t)].as_str();
                    (t.clone(), recorded.and_then(|r| serde_json::from_str(r).ok()).unwrap_or(Value::Null))
                })
                .collect();
            status::aggregate(&resource.kind, &per_target)
        };
        if desired.is_null() || desired == upstream["status"] {
            return Ok(());
        }
        tracing::debug!("writing upstream status");
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{ "op": "add", "path": "/status", "value": desired }]))
                .expect("a static JSON patch");
        // A 404 here is an error too: it also means "no status subresource", which must show.
        api.patch_status(&key.name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .map(|_| ())
            .map_err(api_err("write upstream status"))
    }

    /// Removes this target's status annotation once it no longer runs the object.
    async fn forget_status(&self, index: usize, key: &ClusterKey, obj: &DynamicObject) -> Result<(), SyncError> {
        let annotation = status::status_annotation(&self.target_key);
        if !obj.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(&annotation)) {
            return Ok(());
        }
        let namespace = key.namespace.as_deref().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.upstream.clients.cluster(&key.cluster),
            namespace,
            &self.upstream.resources[index].api,
        );
        let patch = json!({ "metadata": { "annotations": { annotation: null } } });
        match api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err("remove per-target status")(e)),
        }
    }

    async fn set_finalizer(
        &self,
        index: usize,
        key: &ClusterKey,
        obj: &DynamicObject,
        present: bool,
    ) -> Result<(), SyncError> {
        let finalizer = self.finalizer();
        let mut finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
        if finalizers.contains(&finalizer) == present {
            return Ok(());
        }
        if present {
            finalizers.push(finalizer);
        } else {
            finalizers.retain(|f| *f != finalizer);
        }
        let resource = &self.upstream.resources[index].api;
        let namespace = key.namespace.as_deref().unwrap_or_default();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.upstream.clients.cluster(&key.cluster), namespace, resource);
        // resourceVersion makes this a compare-and-swap: a concurrent change fails with 409 and
        // is retried from the fresher cache.
        let patch =
            json!({ "metadata": { "finalizers": finalizers, "resourceVersion": obj.metadata.resource_version } });
        match api.patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err(if present { "add finalizer" } else { "remove finalizer" })(e)),
        }
    }

    async fn ensure_namespace(&self, name: &str, locator: &Locator) -> Result<(), SyncError> {
        let api: Api<Namespace> = Api::all(self.downstream.client.clone());
        let existing = api.get_opt(name).await.map_err(api_err("read downstream namespace"))?;
        let annotation = existing
            .as_ref()
            .map(|ns| ns.metadata.annotations.as_ref().and_then(|a| a.get(LOCATOR_ANNOTATION)).map(String::as_str));
        match super::naming::ownership(locator, annotation) {
            super::naming::Ownership::Ours => {}
            super::naming::Ownership::Foreign { found } => {
                return Err(SyncError::ForeignNamespace { namespace: name.to_string(), found });
            }
            super::naming::Ownership::Absent => {
                let ns: Namespace = serde_json::from_value(json!({
                    "metadata": {
                        "name": name,
                        "labels": { TARGET_LABEL: self.target_key },
                        "annotations": { LOCATOR_ANNOTATION: locator.to_annotation() },
                    }
                }))
                .expect("static namespace");
                self.writes.fetch_add(1, Ordering::Relaxed);
                match api.create(&PostParams::default(), &ns).await {
                    Ok(_) => tracing::info!(namespace = name, "created downstream namespace"),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(api_err("create downstream namespace")(e)),
                }
            }
        }
        self.downstream.remember_namespace(name, locator.clone());
        Ok(())
    }

    /// Deletes the downstream namespace of a kcp namespace once nothing of it is synced there.
    async fn sync_namespace(&self, key: &ClusterKey) -> Result<Option<Duration>, SyncError> {
        if self.upstream.is_assigned(&key.cluster, &key.name, &self.target_key) {
            return Ok(None);
        }
        let locator = Locator::new(self.target.clone(), &key.cluster, &key.name);
        let dns = locator.downstream_namespace();
        if self.downstream.namespace_in_use(&dns) {
            return Ok(Some(Duration::from_secs(2)));
        }
        let api: Api<Namespace> = Api::all(self.downstream.client.clone());
        let Some(ns) = api.get_opt(&dns).await.map_err(api_err("read downstream namespace"))? else { return Ok(None) };
        let ours =
            ns.metadata.annotations.as_ref().and_then(|a| a.get(LOCATOR_ANNOTATION)) == Some(&locator.to_annotation());
        if ours && ns.metadata.deletion_timestamp.is_none() {
            self.writes.fetch_add(1, Ordering::Relaxed);
            api.delete(&dns, &DeleteParams::background()).await.map_err(api_err("delete downstream namespace"))?;
            tracing::info!(namespace = %dns, "deleted empty downstream namespace");
        }
        Ok(None)
    }

    /// Reports the syncer alive in `status.lastSyncTime`, but only while the cluster answers an
    /// authorised request: a heartbeat means "this target works", not "this process runs".
    async fn heartbeat(self, cancel: CancellationToken) {
        let targets: Api<SyncTarget> = Api::all(self.upstream.clients.cluster(&self.target_cluster));
        let probe: Api<Namespace> = Api::all(self.downstream.client.clone());
        loop {
            let result = probe.list_metadata(&ListParams::default().limit(1)).await.map(|_| ());
            let state = Probe::of(&result);
            self.probe.send_if_modified(|p| std::mem::replace(p, state.clone()) != state);
            match result {
                Ok(()) => {
                    let now =
                        jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now());
                    let patch = json!({ "status": { "lastSyncTime": now.to_string() } });
                    if let Err(e) =
                        targets.patch_status(&self.target.name, &PatchParams::default(), &Patch::Merge(&patch)).await
                    {
                        tracing::warn!(target = %self.target.name, error = %error_message(&e), "heartbeat write failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(target = %self.target.name, error = %error_message(&e), "cluster unreachable; no heartbeat")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.settings.heartbeat_interval) => {}
            }
        }
    }
}

fn content_hash(v: &Value) -> String {
    Sha256::digest(v.to_string().as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}
