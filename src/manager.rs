//! `tmc manager`: waits for kcp, follows the APIExport's endpoint slice, and runs the
//! reconcilers against every virtual-workspace URL (one per kcp shard) it lists.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::kcp::client::ClientError;
use crate::kcp::endpoints::{EndpointUrls, ShardFilter};
use crate::kcp::paths::Paths;
use crate::kcp::{ClusterClients, LogicalClusterName, WorkspacePath, endpoints, workspace};
use crate::leader::{self, LeaderError};
use crate::reconciler::synctarget::syncers::Supervisor;
use crate::reconciler::{placement, synctarget};
use crate::runtime::queue::Backoff;
use crate::server::metrics::controller;
use crate::server::{Metrics, Readiness};
use crate::syncer::client::ClusterAccess;
use crate::syncer::engine::EngineSettings;
use crate::syncer::engine::scope::Views;
use crate::syncer::upstream::Upstream;

/// Everything `tmc manager` needs to run.
#[derive(Clone)]
pub struct ManagerConfig {
    /// Credentials and TLS settings for kcp (the URL path is ignored).
    pub kube_config: kube::Config,
    /// Workspace holding the APIExport.
    pub workspace: WorkspacePath,
    pub export_name: String,
    pub synctarget: synctarget::Settings,
    pub placement: placement::Settings,
    /// Settings of the push-mode syncers the manager runs.
    pub syncer: EngineSettings,
    /// Which cluster servers push-mode syncers may dial, and how much of an answer they read.
    /// kcp's own endpoints are added to its dialer as the manager learns them.
    pub cluster_access: ClusterAccess,
    /// The largest object the shared view of kcp keeps whole (`--max-cached-object-bytes`).
    pub whole_object_limit: usize,
    /// Where the controllers record what they do (served at /metrics).
    pub metrics: Metrics,
    /// Set once the workspace is resolved and the endpoint slice is watched (served at /readyz).
    pub readiness: Readiness,
    /// With leader election, only the replica holding the Lease runs the controllers.
    pub leader_election: Option<leader::Settings>,
    /// Which shards' endpoints this manager runs controllers for (`--shards`).
    pub shards: ShardFilter,
}

/// Errors that stop the manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// Runs until `cancel` fires (or, with leader election, until the lease is lost).
pub async fn run(config: ManagerConfig, cancel: CancellationToken) -> Result<(), ManagerError> {
    config.metrics.init_controller(controller::SYNCTARGET);
    config.metrics.init_controller(controller::PLACEMENT);
    let server = ClusterClients::for_server(&config.kube_config)?;
    // A cluster may never be kcp itself: a syncer pointed at kcp would write into workspaces.
    config.cluster_access.dialer.kcp_endpoints().add_url(&config.kube_config.cluster_url);
    let Some(export_cluster) = wait_for_workspace(&server, &config.workspace, &cancel).await else {
        return Ok(());
    };
    match config.leader_election.clone() {
        None => run_controllers(config, server, export_cluster, cancel).await,
        Some(election) => {
            // The Lease lives beside the APIExport: one election per export, whatever kcp shard.
            tracing::info!(workspace = %config.workspace, lease = %election.lease_name, identity = %election.identity, "leader election: waiting to lead");
            let client = server.cluster(&export_cluster);
            let readiness = config.readiness.clone();
            leader::run(client, election, &readiness, cancel, |stop| {
                run_controllers(config, server, export_cluster, stop)
            })
            .await
        }
    }
}

type SyncedCheck = Box<dyn Fn() -> bool + Send>;
type SyncedChecks = Arc<Mutex<HashMap<String, SyncedCheck>>>;

/// Keeps `/readyz` true to the controllers: ready once the endpoint slice has been read and the
/// controllers of every endpoint have listed their caches (checked every 250 ms).
async fn report_readiness(
    readiness: Readiness,
    listed: Arc<AtomicBool>,
    synced: SyncedChecks,
    cancel: CancellationToken,
) {
    loop {
        let pending = synced.lock().expect("readiness checks poisoned").values().filter(|c| !c()).count();
        if !listed.load(Ordering::Acquire) {
            readiness.set_waiting_for("the APIExport's endpoint slice to be read");
        } else if pending > 0 {
            readiness.set_waiting_for(format!("the caches of {pending} virtual-workspace endpoint(s) to sync"));
        } else {
            readiness.set_ready();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Everything the leader (or the only replica) does once the export workspace is resolved.
async fn run_controllers(
    config: ManagerConfig,
    server: ClusterClients,
    export_cluster: LogicalClusterName,
    cancel: CancellationToken,
) -> Result<(), ManagerError> {
    // Workspace paths resolve through the kcp server: the virtual workspace serves no Workspaces.
    let paths = Paths::new(server.clone());
    tracing::info!(workspace = %config.workspace, cluster = %export_cluster, export = %config.export_name, "watching the APIExport's endpoint slice");

    let (tx, mut rx) = watch::channel(EndpointUrls::new());
    let listed: Arc<AtomicBool> = Default::default();
    let slice_watch = tokio::spawn(endpoints::watch_endpoints(
        server,
        export_cluster,
        config.export_name.clone(),
        tx,
        listed.clone(),
        cancel.child_token(),
    ));
    // Ready once the endpoint slice was read and every endpoint's controllers have listed.
    let synced: SyncedChecks = Default::default();
    // Every endpoint's SyncTarget controller, so each finalizer sweeper judges target keys
    // against all shards (a cross-workspace object may hold another shard's target's finalizer).
    let sweep_endpoints = synctarget::sweeper::Endpoints::new(listed.clone());
    tokio::spawn(report_readiness(config.readiness.clone(), listed, synced.clone(), cancel.child_token()));
    // Every followed endpoint's view of kcp, for the guests of targets serving other shards.
    let views = Views::default();
    // Every followed endpoint's SyncTargets, for Placements whose location is on another shard.
    let directory = placement::Directory::default();
    let mut running: HashMap<String, (CancellationToken, JoinHandle<()>, Upstream)> = HashMap::new();
    loop {
        let listed = rx.borrow_and_update().clone();
        if listed.is_empty() {
            tracing::info!(
                export = %config.export_name,
                "no virtual-workspace endpoint yet: one appears once a workspace binds the APIExport"
            );
        }
        let urls = config.shards.followed(&listed);
        if let Some(shards) = config.shards.shards() {
            let others: BTreeSet<&String> = listed.keys().filter(|u| !urls.contains(*u)).collect();
            tracing::info!(?shards, followed = ?urls, not_followed = ?others, "--shards: endpoints of other shards are left to their managers");
        }
        synced.lock().expect("readiness checks poisoned").retain(|url, _| urls.contains(url));
        // The sweeper judges against every listed endpoint, followed or not: another manager's
        // shards hold targets whose finalizers this one must not take for orphans.
        let all: BTreeSet<String> = listed.keys().cloned().collect();
        sweep_endpoints.set_urls(&all);
        for url in all.iter().filter(|u| !urls.contains(*u)) {
            if !sweep_endpoints.observed(url) {
                match ClusterClients::new(&config.kube_config, url) {
                    Ok(clients) => sweep_endpoints.observe(url, clients, cancel.child_token()),
                    Err(e) => tracing::error!(endpoint = %url, error = %e, "cannot use endpoint"),
                }
            }
        }
        running.retain(|url, (stop, _, _)| {
            let keep = urls.contains(url);
            if !keep {
                tracing::info!(endpoint = %url, "endpoint gone; stopping its controllers");
                stop.cancel();
                directory.remove(url);
            }
            keep
        });
        let new: Vec<&String> = urls.iter().filter(|u| !running.contains_key(*u)).collect();
        for url in new {
            if let Ok(parsed) = url.parse::<http::Uri>() {
                config.cluster_access.dialer.kcp_endpoints().add_url(&parsed);
            }
            match ClusterClients::new(&config.kube_config, url) {
                Ok(clients) => {
                    tracing::info!(endpoint = %url, "starting controllers for endpoint");
                    let url_for_check = url.clone();
                    let stop = cancel.child_token();
                    let upstream =
                        Upstream::new(clients.clone(), stop.clone()).with_whole_object_limit(config.whole_object_limit);
                    let syncers = Supervisor::new(
                        upstream.clone(),
                        config.syncer.clone(),
                        config.cluster_access.clone(),
                        stop.clone(),
                    )
                    .with_views(url, views.clone());
                    let placements = placement::Controller::new(
                        clients.clone(),
                        paths.clone(),
                        upstream.clone(),
                        config.placement.clone(),
                        config.metrics.clone(),
                    )
                    .in_directory(url, &directory);
                    let controller = synctarget::Controller::new(
                        clients,
                        config.synctarget.clone(),
                        syncers,
                        paths.clone(),
                        config.metrics.clone(),
                    )
                    .with_sweeper(sweep_endpoints.clone());
                    sweep_endpoints.insert(url, controller.clone());
                    let (st, pl) = (controller.clone(), placements.clone());
                    let check: SyncedCheck = Box::new(move || st.is_synced() && pl.is_synced());
                    synced.lock().expect("readiness checks poisoned").insert(url_for_check, check);
                    let task = tokio::spawn({
                        let (stop, upstream) = (stop.clone(), upstream.clone());
                        async move {
                            tokio::join!(upstream.run(), controller.run(stop.clone()), placements.run(stop));
                        }
                    });
                    running.insert(url.clone(), (stop, task, upstream));
                }
                Err(e) => tracing::error!(endpoint = %url, error = %e, "cannot use endpoint"),
            }
        }
        let followed = running.iter().map(|(url, (_, _, upstream))| (url.clone(), upstream.clone())).collect();
        let complete = listed.keys().all(|url| running.contains_key(url));
        views.set(followed, complete);
        directory.set_complete(complete);
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
        }
    }
    for (_, (stop, handle, _)) in running {
        stop.cancel();
        let _ = handle.await;
    }
    let _ = slice_watch.await;
    Ok(())
}

/// Resolves the export workspace, retrying with backoff while kcp is unreachable or the
/// workspace does not exist yet, and saying in the log what it waits for.
async fn wait_for_workspace(
    server: &ClusterClients,
    path: &WorkspacePath,
    cancel: &CancellationToken,
) -> Option<LogicalClusterName> {
    let backoff = Backoff { base: Duration::from_millis(500), max: Duration::from_secs(30) };
    let mut attempt = 0;
    loop {
        match workspace::resolve(server, path).await {
            Ok(cluster) => return Some(cluster),
            Err(e) => {
                attempt += 1;
                let delay = backoff.delay(attempt);
                tracing::warn!(kcp = server.base_url(), workspace = %path, error = %e, retry_in = ?delay, "waiting for kcp and the APIExport workspace");
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
