//! The Placement reconciler: chooses SyncTargets for every Placement and writes the assignment
//! labels (`state.tmc.kcp.io/<target key>: Sync`) on the namespaces it selects, across all
//! workspaces bound to the APIExport behind one virtual-workspace URL.
//!
//! One wildcard watch each of Placements, SyncTargets and Namespaces (metadata only) feeds
//! caches keyed by logical cluster and one [`WorkQueue`] of [`Key`]s, so two workspaces with
//! same-named objects never share an entry. Decisions are pure (`schedule`, `assign`,
//! `status`); this module only reads caches and writes what differs.

pub mod assign;
pub mod consent;
mod directory;
mod events;
pub mod explain;
mod handover;
mod location;
mod namespaces;
mod reconcile;
pub mod schedule;
pub use crate::apis::placement::selector;
pub mod status;
mod watch;

pub use directory::Directory;
// What `tmc placement preview` shares with the reconciler, so both decide alike.
pub(crate) use location::location_path;
pub(crate) use reconcile::{consents, view as target_view};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use tokio_util::sync::CancellationToken;

use crate::apis::placement::v1alpha1::Placement;
use crate::apis::sync::v1alpha1::SyncTarget;
use crate::kcp::paths::Paths;
use crate::kcp::{ClusterClients, ClusterKey, LogicalClusterName};
use crate::runtime::cache::ClusterCache;
use crate::runtime::guard::supervise;
use crate::runtime::queue::{Backoff, WorkQueue};
use crate::runtime::reflector::Synced;
use crate::runtime::worker::{Loop, Workers};
use crate::server::Metrics;
use crate::server::metrics::{controller, queue};
use crate::syncer::upstream::Upstream;

/// The field manager the manager writes Placement status with.
pub const FIELD_MANAGER: &str = "tmc-placement";

/// Tunables of the Placement reconciler.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconciles running at once.
    pub workers: usize,
    /// How long a chosen target may stay not Ready before its namespaces move elsewhere.
    pub failover_grace: Duration,
    /// Moves (failover and drain) allowed per minute, for the Placements of one workspace.
    pub max_evictions_per_minute: u32,
    /// How long a moving namespace may wait for evidence from its new target before the
    /// Placement says `MoveStalled` (it keeps its old target either way; see `handover`).
    pub move_timeout: Duration,
    pub backoff: Backoff,
}

/// Errors of one reconcile; the key is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("resolving a workspace failed: {0}")]
    Resolve(#[from] crate::kcp::paths::PathError),
    #[error("writing Placement status failed: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("patching the namespace's assignment labels failed: {0}")]
    PatchNamespace(#[source] kube::Error),
    #[error(transparent)]
    Targets(#[from] directory::Unknown),
    #[error(transparent)]
    Panicked(#[from] crate::runtime::guard::Panicked),
}

/// What the queue holds: a Placement to schedule or a namespace to label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Placement(ClusterKey),
    Namespace(ClusterKey),
}

/// The reconciler for one virtual-workspace endpoint.
#[derive(Clone)]
pub struct Controller {
    clients: ClusterClients,
    paths: Paths,
    /// The push-mode syncers' view of kcp: tells whether a target already runs a namespace.
    upstream: Upstream,
    placements: ClusterCache<Placement>,
    /// This endpoint's SyncTargets (its watch fills it); read through `directory`.
    targets: ClusterCache<SyncTarget>,
    /// The SyncTargets of every endpoint the manager follows, this one's among them.
    directory: Directory,
    namespaces: ClusterCache<PartialObjectMeta<Namespace>>,
    /// What of each SyncTarget scheduling depends on, to ignore heartbeat-only changes.
    fingerprints: Arc<Mutex<HashMap<ClusterKey, String>>>,
    /// When recent moves happened, per Placement workspace, for the eviction rate limit.
    evictions: Arc<Mutex<HashMap<LogicalClusterName, VecDeque<tokio::time::Instant>>>>,
    /// Namespaces waiting for a new target's evidence before their old one goes.
    moves: Arc<Mutex<HashMap<ClusterKey, handover::Move>>>,
    queue: Arc<WorkQueue<Key>>,
    /// How many of the three watches have listed once; work waits for all three.
    /// Whether each of the three watches (Placements, SyncTargets, namespaces) has listed.
    synced: [Synced; 3],
    events: events::Events,
    /// Warnings on tenant namespaces (see [`consent`]).
    warnings: crate::syncer::events::Events,
    settings: Settings,
    metrics: Metrics,
}

impl Controller {
    /// Whether its three watches have listed once (readiness).
    pub fn is_synced(&self) -> bool {
        self.synced.iter().all(Synced::is_synced)
    }

    pub fn new(
        clients: ClusterClients,
        paths: Paths,
        upstream: Upstream,
        settings: Settings,
        metrics: Metrics,
    ) -> Self {
        let this = Self {
            queue: WorkQueue::with_metrics(settings.backoff, metrics.queue(queue::PLACEMENT)),
            metrics,
            events: events::Events::new(clients.clone()),
            warnings: crate::syncer::events::Events::new(clients.clone(), "tmc.kcp.io/placement", "namespaces"),
            clients,
            paths,
            upstream,
            placements: Default::default(),
            targets: Default::default(),
            directory: Default::default(),
            namespaces: Default::default(),
            fingerprints: Default::default(),
            evictions: Default::default(),
            moves: Default::default(),
            synced: Default::default(),
            settings,
        };
        // Alone, it is the whole directory.
        this.directory.set_complete(true);
        this.directory.insert("", this.member());
        this
    }

    /// Registers this endpoint (`url`) in the manager-wide `directory` and reads SyncTargets
    /// from it, so its Placements may use the targets of workspaces on other shards.
    pub fn in_directory(mut self, url: &str, directory: &Directory) -> Self {
        directory.insert(url, self.member());
        self.directory = directory.clone();
        self
    }

    fn member(&self) -> directory::Member {
        let (queue, placements) = (self.queue.clone(), self.placements.clone());
        directory::Member {
            targets: self.targets.clone(),
            namespaces: self.namespaces.clone(),
            synced: self.synced.clone(),
            poke: Arc::new(move || {
                placements.all_keys(|_| true).into_iter().for_each(|k| queue.add(Key::Placement(k)))
            }),
        }
    }

    /// Runs watches and workers until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let (this, c) = (self.clone(), cancel.clone());
        tasks.spawn(supervise("Placement watch", cancel.clone(), move || this.clone().watch_placements(c.clone())));
        let (this, c) = (self.clone(), cancel.clone());
        tasks.spawn(supervise("Placement SyncTarget watch", cancel.clone(), move || {
            this.clone().watch_synctargets(c.clone())
        }));
        let (this, c) = (self.clone(), cancel.clone());
        tasks.spawn(supervise("Placement namespace watch", cancel.clone(), move || {
            this.clone().watch_namespaces(c.clone())
        }));
        // Deciding from a partial view could remove labels another Placement justifies.
        let all_synced = async {
            for synced in &self.synced {
                synced.wait_synced().await;
            }
        };
        let synced = tokio::select! {
            _ = cancel.cancelled() => false,
            _ = all_synced => true,
        };
        let workers = synced.then(|| self.clone().workers());
        cancel.cancelled().await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        // Workers finish the reconcile in hand (bounded) rather than being cut off between two writes.
        match workers {
            Some(workers) => workers.stop().await,
            None => self.queue.shut_down(),
        }
    }

    fn workers(self) -> Workers<Key> {
        let metrics = self.metrics.clone();
        let (queue, count) = (self.queue.clone(), self.settings.workers);
        let span = |key: &Key| {
            let (kind, k) = match key {
                Key::Placement(k) => ("placement", k),
                Key::Namespace(k) => ("namespace", k),
            };
            tracing::info_span!("reconcile", controller = "placement", kind, workspace = %k.cluster, name = %k.name)
        };
        // Both kinds of key count: a namespace reconcile is where the Placement's decision is
        // written.
        Loop::new("placement", span)
            .observe(move |_, ok, started| metrics.reconciled(controller::PLACEMENT, ok, started.elapsed()))
            .spawn(&queue, count, move |key| {
                let this = self.clone();
                async move {
                    match &key {
                        Key::Placement(k) => this.reconcile_placement(k).await,
                        Key::Namespace(k) => this.reconcile_namespace(k).await,
                    }
                }
            })
    }

    /// Moves still allowed in the current minute for the Placements of `cluster`. The budget is
    /// per workspace: one tenant's moves neither delay another's failover nor show in its status.
    fn eviction_budget(&self, cluster: &LogicalClusterName) -> usize {
        let mut all = self.evictions.lock().expect("evictions poisoned");
        let used = all.get_mut(cluster).map_or(0, |recent| {
            while recent.front().is_some_and(|t| t.elapsed() >= Duration::from_secs(60)) {
                recent.pop_front();
            }
            recent.len()
        });
        // Forget workspaces with nothing recent, so the map holds only active ones.
        all.retain(|_, recent| recent.back().is_some_and(|t| t.elapsed() < Duration::from_secs(60)));
        (self.settings.max_evictions_per_minute as usize).saturating_sub(used)
    }

    fn spend_evictions(&self, cluster: &LogicalClusterName, n: usize) {
        if n == 0 {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut all = self.evictions.lock().expect("evictions poisoned");
        all.entry(cluster.clone()).or_default().extend(std::iter::repeat_n(now, n));
    }

    fn enqueue_namespaces_of(&self, cluster: &LogicalClusterName) {
        for k in self.namespaces.keys_in(cluster, |_| true) {
            self.queue.add(Key::Namespace(k));
        }
    }

    fn enqueue_placements_of(&self, cluster: &LogicalClusterName) {
        for k in self.placements.keys_in(cluster, |_| true) {
            self.queue.add(Key::Placement(k));
        }
    }
}
