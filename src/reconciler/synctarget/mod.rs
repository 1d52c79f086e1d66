//! The SyncTarget reconciler: keeps every SyncTarget's conditions true to what the manager
//! can see, across all workspaces bound to the APIExport behind one virtual-workspace URL.
//!
//! One wildcard watch of SyncTargets and one metadata-only wildcard watch of Secrets feed a
//! cache keyed by logical cluster and a [`WorkQueue`] of [`ClusterKey`]s. Objects are cached raw
//! and parsed per reconcile, so one malformed object gets an `InvalidSpec` condition instead of
//! breaking the watch for everyone.

pub mod consent;
pub mod kubeconfig;
pub mod status;
pub mod sweep;
pub mod sweeper;
pub mod syncers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PartialObjectMeta, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::status::{Credentials, Desired, Observed};
use self::syncers::Supervisor;
use crate::apis::names::target_key;
use crate::apis::sync::v1alpha1::KubeconfigSecretRef;
use crate::apis::sync::v1alpha1::{CONDITION_READY, SyncTarget, SyncTargetStatus};
use crate::kcp::paths::Paths;
use crate::kcp::{ClusterClients, ClusterKey, LogicalClusterName};
use crate::runtime::cache::ClusterCache;
use crate::runtime::guard::supervise;
use crate::runtime::queue::{Backoff, WorkQueue};
use crate::runtime::reflector::{self, Reflector, Synced, cluster_key};
use crate::runtime::worker::{Loop, Workers};
use crate::server::Metrics;
use crate::server::metrics::{controller, queue};
use crate::syncer::credentials::InlineCredentials;
use crate::syncer::engine::Probe;

/// The Ready reason of a SyncTarget whose server the address policy refuses.
pub const REASON_ADDRESS_REFUSED: &str = "ClusterAddressRefused";

/// The field manager the manager writes SyncTarget status with.
pub const FIELD_MANAGER: &str = "tmc-manager";

/// Tunables of the SyncTarget reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A heartbeat older than this makes `HeartbeatHealthy` False.
    pub heartbeat_threshold: Duration,
    /// Reconciles running at once.
    pub workers: usize,
    pub backoff: Backoff,
    /// What tenant kubeconfigs may carry beyond inline credentials over verified TLS.
    pub kubeconfig_policy: crate::syncer::credentials::Policy,
    /// How often the finalizer sweeper looks for markers of targets that are gone
    /// (`--finalizer-sweep-interval`).
    pub finalizer_sweep_interval: Duration,
}

/// Errors of one reconcile; the key is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading the kubeconfig Secret failed: {0}")]
    ReadSecret(#[source] kube::Error),
    #[error("writing status failed: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("releasing a deleted SyncTarget's finalizers failed: {0}")]
    Release(#[source] kube::Error),
    #[error(transparent)]
    Panicked(#[from] crate::runtime::guard::Panicked),
}

/// A kubeconfig Secret as last read: (resourceVersion, the check's result, the accepted
/// credentials).
type ReadSecret = (String, Credentials, Option<InlineCredentials>);

/// The reconciler for one virtual-workspace endpoint.
#[derive(Clone)]
pub struct Controller {
    clients: ClusterClients,
    cache: ClusterCache<DynamicObject>,
    queue: Arc<WorkQueue<ClusterKey>>,
    settings: Settings,
    syncers: Supervisor,
    /// Resolves `spec.allowedWorkspaces` to logical clusters for the syncer.
    paths: Paths,
    /// resourceVersion of every Secret in the bound workspaces, from the metadata watch.
    secret_versions: ClusterCache<String>,
    /// The last check of each referenced kubeconfig: (resourceVersion, result, credentials).
    read_secrets: Arc<Mutex<HashMap<(ClusterKey, String), ReadSecret>>>,
    metrics: Metrics,
    /// Events on SyncTargets when their readiness changes.
    events: crate::syncer::events::Events,
    /// Set once the SyncTarget watch has listed (readiness).
    synced: Synced,
    /// Every endpoint's controller, for the finalizer sweeper (none: no sweeper runs).
    endpoints: Option<sweeper::Endpoints>,
    /// The last resolution of each target's allowed workspace paths (see [`consent`]).
    consent: Arc<Mutex<HashMap<ClusterKey, consent::Resolved>>>,
}

fn resource() -> ApiResource {
    ApiResource::erase::<SyncTarget>(&())
}

impl Controller {
    pub fn new(
        clients: ClusterClients,
        settings: Settings,
        syncers: Supervisor,
        paths: Paths,
        metrics: Metrics,
    ) -> Self {
        let queue = WorkQueue::with_metrics(settings.backoff, metrics.queue(queue::SYNCTARGET));
        Self {
            metrics,
            events: crate::syncer::events::Events::new(clients.clone(), "tmc.kcp.io/synctarget", "manager"),
            synced: Default::default(),
            clients,
            cache: Default::default(),
            queue,
            settings,
            syncers,
            paths,
            secret_versions: Default::default(),
            read_secrets: Default::default(),
            endpoints: None,
            consent: Default::default(),
        }
    }

    /// Runs the finalizer sweeper beside the reconciler, judging target keys against every
    /// controller registered in `endpoints` (this one included).
    pub fn with_sweeper(mut self, endpoints: sweeper::Endpoints) -> Self {
        self.endpoints = Some(endpoints);
        self
    }

    /// Whether the SyncTarget watch has listed once (readiness).
    pub fn is_synced(&self) -> bool {
        self.synced.is_synced()
    }

    /// Runs watches and workers until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let (this, c) = (self.clone(), cancel.clone());
        tasks.spawn(supervise("SyncTarget watch", cancel.clone(), move || this.clone().watch_synctargets(c.clone())));
        let (this, c) = (self.clone(), cancel.clone());
        tasks.spawn(supervise("Secret metadata watch", cancel.clone(), move || this.clone().watch_secrets(c.clone())));
        if let Some(mut changes) = self.syncers.take_changes() {
            let (queue, cancel) = (self.queue.clone(), cancel.clone());
            tasks.spawn(async move {
                while let Some(key) = tokio::select! { _ = cancel.cancelled() => None, k = changes.recv() => k } {
                    queue.add(key);
                }
            });
        }
        if let Some(endpoints) = self.endpoints.clone() {
            tasks.spawn(self.clone().sweep_finalizers(endpoints, cancel.clone()));
        }
        let workers = self.clone().workers();
        cancel.cancelled().await;
        // Workers finish the reconcile in hand (bounded) rather than being cut off between two writes.
        workers.stop().await;
        while tasks.join_next().await.is_some() {}
        // The push-mode syncers share `cancel`'s parent: on shutdown (or a lost lease) they
        // finish their in-flight writes before the manager reports itself stopped.
        self.syncers.stopped().await;
    }

    /// Watches SyncTargets in all bound workspaces. Every change is reconciled, and after a
    /// relist so is every SyncTarget that vanished (deleted while the watch was down), so what
    /// it left behind is released.
    async fn watch_synctargets(self, cancel: CancellationToken) {
        let api: Api<DynamicObject> = Api::all_with(self.clients.wildcard(), &resource());
        let key = |obj: &DynamicObject| {
            let key = cluster_key(obj);
            if key.is_none() {
                tracing::warn!(name = obj.name_any(), "SyncTarget without a kcp.io/cluster annotation ignored");
            }
            key
        };
        let reflector = Reflector::new(self.cache.clone(), key, |_, obj| obj).with_synced(self.synced.clone());
        let what = format!("SyncTargets at {}", self.clients.base_url());
        let queue = self.queue.clone();
        reflector
            .run(reflector::watch(api, watcher::Config::default()), cancel, &what, |changes| {
                changes.into_iter().for_each(|c| queue.add(c.key().clone()))
            })
            .await;
    }

    /// Watches Secret metadata in all bound workspaces, so a kubeconfig Secret that appears,
    /// changes or disappears (also unseen, found by a relist) re-reconciles the SyncTargets that
    /// reference it.
    async fn watch_secrets(self, cancel: CancellationToken) {
        let api: Api<PartialObjectMeta<Secret>> = Api::all(self.clients.wildcard());
        let reflector = Reflector::new(self.secret_versions.clone(), cluster_key, |_, s: PartialObjectMeta<Secret>| {
            s.metadata.resource_version.unwrap_or_default()
        });
        let what = format!("Secret metadata at {}", self.clients.base_url());
        reflector
            .run(reflector::watch(api, watcher::Config::default()), cancel, &what, |changes| {
                for change in changes {
                    self.referencing(change.key()).into_iter().for_each(|k| self.queue.add(k));
                }
            })
            .await;
    }

    /// Reads and checks the kubeconfig Secret, reusing the last result while the Secret's
    /// resourceVersion (from the metadata watch) is unchanged: heartbeats re-reconcile a target
    /// every few seconds, and the Secret need not be fetched each time.
    async fn read_kubeconfig(
        &self,
        cluster: &LogicalClusterName,
        secret_ref: &KubeconfigSecretRef,
    ) -> Result<(Credentials, Option<InlineCredentials>), ReconcileError> {
        let secret = ClusterKey::new(cluster.clone(), Some(secret_ref.namespace.clone()), secret_ref.name.clone());
        let cache_key = (secret.clone(), secret_ref.key.clone());
        if let Some(version) = self.secret_versions.get(&secret) {
            let read = self.read_secrets.lock().expect("secret cache poisoned");
            if let Some((rv, credentials, inline)) = read.get(&cache_key)
                && rv == version.as_str()
            {
                return Ok((credentials.clone(), inline.clone()));
            }
        }
        let found =
            kubeconfig::lookup(self.clients.cluster(cluster), secret_ref).await.map_err(ReconcileError::ReadSecret)?;
        let rv = match &found {
            kubeconfig::SecretLookup::Found(s) => s.metadata.resource_version.clone(),
            _ => None,
        };
        let (credentials, inline) = kubeconfig::classify(secret_ref, found, self.settings.kubeconfig_policy);
        // Once per Secret version (later reconciles reuse the result): operators see what was
        // refused or weakened, by field name, never by value.
        match &credentials {
            Credentials::Problem { reason: "KubeconfigRefused", message } => {
                tracing::info!(workspace = %cluster, secret = %secret, %message, "kubeconfig refused")
            }
            Credentials::Loaded { warning: Some(warning), .. } => {
                tracing::warn!(workspace = %cluster, secret = %secret, %warning, "kubeconfig accepted with insecure transport")
            }
            _ => {}
        }
        let mut read = self.read_secrets.lock().expect("secret cache poisoned");
        match rv {
            Some(rv) => read.insert(cache_key, (rv, credentials.clone(), inline.clone())),
            None => read.remove(&cache_key),
        };
        Ok((credentials, inline))
    }

    /// Keys of the SyncTargets in the Secret's workspace that reference it.
    fn referencing(&self, secret: &ClusterKey) -> Vec<ClusterKey> {
        self.cache.keys_in(&secret.cluster, |obj| {
            let r = &obj.data["spec"]["kubeconfigSecretRef"];
            r["name"].as_str() == Some(secret.name.as_str()) && r["namespace"].as_str() == secret.namespace.as_deref()
        })
    }

    fn workers(self) -> Workers<ClusterKey> {
        let metrics = self.metrics.clone();
        let (queue, count) = (self.queue.clone(), self.settings.workers);
        Loop::new("synctarget", |key: &ClusterKey| {
            tracing::info_span!("reconcile", controller = "synctarget", workspace = %key.cluster, name = %key.name)
        })
        .observe(move |_, ok, started| metrics.reconciled(controller::SYNCTARGET, ok, started.elapsed()))
        .spawn(&queue, count, move |key| {
            let this = self.clone();
            async move { this.reconcile(&key).await }
        })
    }

    /// Checks the kubeconfig of a push-mode target and keeps its syncer running (or stopped)
    /// accordingly.
    async fn credentials(&self, key: &ClusterKey, target: &SyncTarget) -> Result<Credentials, ReconcileError> {
        let Some(secret_ref) = &target.spec.kubeconfig_secret_ref else {
            self.syncers.stop(key);
            return Ok(Credentials::PullMode);
        };
        if let Some(problem) = kubeconfig::validate_ref(secret_ref) {
            self.syncers.stop(key);
            return Ok(problem);
        }
        let (credentials, inline) = self.read_kubeconfig(&key.cluster, secret_ref).await?;
        let (Credentials::Loaded { server, .. }, Some(inline)) = (&credentials, inline) else {
            self.syncers.stop(key);
            return Ok(credentials);
        };
        // The dialer enforces the address policy at connect time; checking here too names a
        // refusal before any syncer starts. A name that does not resolve is not a refusal: the
        // syncer runs (so deletions still time out and release) and reports the cluster unreachable.
        let address = match server.parse::<http::Uri>() {
            Ok(uri) => self.syncers.access().dialer.check_server(&uri).await,
            Err(_) => Ok(()),
        };
        if let Err(refused) = &address
            && refused.is_refusal()
        {
            self.syncers.stop(key);
            return Ok(Credentials::Problem { reason: REASON_ADDRESS_REFUSED, message: refused.to_string() });
        }
        let apis = crate::syncer::resources::wanted_apis(&target.spec.supported_apis);
        let allowed = self.allowed_clusters(key, &target.spec.allowed_workspaces).await;
        if let Err(why) = self.syncers.ensure(key, &inline, apis, allowed) {
            self.syncers.stop(key);
            return Ok(Credentials::Problem {
                reason: "KubeconfigInvalid",
                message: format!("the kubeconfig is accepted but no client can be built from it: {why}"),
            });
        }
        let unreachable = |why: &str| Credentials::Problem {
            reason: "ClusterUnreachable",
            message: format!("the syncer cannot reach the cluster at {server}: {why}"),
        };
        Ok(match (self.syncers.probe(key), address) {
            (Some(Probe::Refused(why)), _) => Credentials::Problem { reason: REASON_ADDRESS_REFUSED, message: why },
            (Some(Probe::Oversized(why)), _) => Credentials::Problem {
                reason: "ClusterResponseTooLarge",
                message: format!("the cluster at {server} answered with more than the manager reads: {why}"),
            },
            (Some(Probe::Unauthorized(why)), _) => Credentials::Problem {
                reason: "ClusterUnauthorized",
                message: format!("the cluster at {server} refuses the kubeconfig's credentials: {why}"),
            },
            (Some(Probe::Reachable), _) => credentials,
            (_, Err(unresolved)) => unreachable(&unresolved.to_string()),
            (Some(Probe::Unreachable(why)), _) => unreachable(&why),
            _ => credentials,
        })
    }

    async fn reconcile(&self, key: &ClusterKey) -> Result<Option<Duration>, ReconcileError> {
        let Some(raw) = self.cache.get(key) else {
            // Deleted: its syncer stops, kcp objects are released from it, and its series go,
            // so it does not linger as a never-ready target. A release that found objects looks
            // again shortly, in case a write of the stopping syncer was still in flight.
            let released = self.syncers.release(key).await.map_err(ReconcileError::Release)?;
            self.consent.lock().expect("consent poisoned").remove(key);
            self.metrics.remove_target(&target_key(&key.cluster, &key.name));
            return Ok((released > 0).then_some(Duration::from_secs(5)));
        };
        let client = self.clients.cluster(&key.cluster);
        let generation = raw.metadata.generation;
        // The status is parsed on its own so that a malformed spec still shows its conditions.
        let current = status::stored(&raw.data["status"]);
        let now = jiff::Timestamp::now();
        let desired: Desired = match serde_json::to_value(raw.as_ref()).and_then(serde_json::from_value::<SyncTarget>) {
            Err(e) => {
                let previous = current.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
                status::malformed(previous, generation, &e.to_string(), now)
            }
            Ok(target) => {
                let credentials = self.credentials(key, &target).await?;
                status::desired(&Observed {
                    spec: &target.spec,
                    status: target.status.as_ref(),
                    generation,
                    credentials,
                    now,
                    heartbeat_threshold: self.settings.heartbeat_threshold,
                })
            }
        };
        self.record(key, &desired, current.as_ref());
        if desired.differs_from(current.as_ref()) {
            let ready = desired.conditions.first().map(|c| (c.status.clone(), c.reason.clone()));
            let patch = json!({
                "apiVersion": SyncTarget::api_version(&()),
                "kind": SyncTarget::kind(&()),
                "status": { "conditions": desired.conditions, "observedGeneration": desired.observed_generation },
            });
            let api: Api<DynamicObject> = Api::all_with(client, &resource());
            match api.patch_status(&key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
                Ok(_) => {
                    tracing::info!(ready = ?ready, "status updated");
                    self.ready_changed(key, &raw, &desired, current.as_ref()).await;
                }
                // Deleted since it was cached: the delete event reconciles it away.
                Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(None),
                Err(e) => return Err(ReconcileError::WriteStatus(e)),
            }
        }
        Ok(desired.requeue_after)
    }

    /// Records the target's readiness (as this reconcile decides it) and its last heartbeat.
    /// An Event on the SyncTarget when `Ready` flips or its reason changes: Normal `Ready`, or a
    /// Warning named by the reason (e.g. `HeartbeatStale`, `ClusterUnreachable`).
    async fn ready_changed(
        &self,
        key: &ClusterKey,
        raw: &DynamicObject,
        desired: &Desired,
        current: Option<&SyncTargetStatus>,
    ) {
        let ready_of = |cs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
            cs.iter()
                .find(|c| c.type_ == CONDITION_READY)
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        };
        let before = current.and_then(|s| ready_of(&s.conditions));
        let Some((status, reason, message)) = ready_of(&desired.conditions) else { return };
        if before.as_ref().is_some_and(|(s, r, _)| *s == status && *r == reason) {
            return;
        }
        let kind = if status == "True" {
            (kube::runtime::events::EventType::Normal, "Reconcile")
        } else {
            (kube::runtime::events::EventType::Warning, "Reconcile")
        };
        self.events.publish(&key.cluster, &resource(), raw, kind, &reason, message).await;
    }

    fn record(&self, key: &ClusterKey, desired: &Desired, current: Option<&SyncTargetStatus>) {
        let target = target_key(&key.cluster, &key.name);
        let ready = desired.conditions.iter().find(|c| c.type_ == CONDITION_READY).is_some_and(|c| c.status == "True");
        self.metrics.set_target_ready(&target, ready);
        if let Some(at) = current.and_then(|s| s.last_sync_time.as_ref()) {
            self.metrics.set_last_heartbeat(&target, at.0.into());
        }
    }
}
