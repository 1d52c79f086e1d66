//! `tmc syncer`: the sync engine in pull mode, running beside a physical cluster.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{CliError, cancel_on_signal, ops, parse_duration, parse_workspace};
use crate::kcp::{ClusterClients, WorkspacePath, workspace};
use crate::runtime::queue::Backoff;
use crate::server::{Metrics, Readiness};
use crate::syncer::engine::{Engine, EngineSettings, Probe, follow_supported_apis};
use crate::syncer::resources::wanted_apis;
use crate::syncer::upstream::Upstream;

#[derive(Debug, Args)]
pub struct SyncerArgs {
    /// Kubeconfig for kcp, with access to the SyncTarget's workspace.
    #[arg(long, env = "TMC_KUBECONFIG")]
    pub kubeconfig: PathBuf,

    /// Path of the workspace holding the SyncTarget and the namespaces assigned to it.
    #[arg(long, env = "TMC_WORKSPACE", value_parser = parse_workspace)]
    pub workspace: WorkspacePath,

    /// Name of the SyncTarget this syncer serves.
    #[arg(long, env = "TMC_SYNC_TARGET_NAME")]
    pub sync_target_name: String,

    /// Kubeconfig for the physical cluster (in a pod: omit it to use the service account).
    #[arg(long, env = "TMC_DOWNSTREAM_KUBECONFIG")]
    pub downstream_kubeconfig: Option<PathBuf>,

    /// ClusterRole the syncer binds itself to in each namespace it creates (its writes and
    /// Secret reads there); `tmc syncer-manifest` creates it. Default:
    /// `kcp-tmc-syncer-<sync target name>:namespace`.
    #[arg(long, env = "TMC_SYNCER_NAMESPACE_ROLE")]
    pub namespace_role: Option<String>,

    /// How often the syncer probes its cluster and reports in (status.lastSyncTime).
    #[arg(long, env = "TMC_HEARTBEAT_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// How long a deleted kcp object waits for an unreachable cluster before its finalizer is
    /// released anyway.
    #[arg(long, env = "TMC_DELETION_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub deletion_timeout: Duration,

    /// Requests the syncer may start per second against the cluster.
    #[arg(long, env = "TMC_CLUSTER_QPS", default_value_t = crate::syncer::client::DEFAULT_CLUSTER_QPS,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub cluster_qps: u32,

    /// Largest kcp object, in bytes of JSON, that the syncer keeps whole in memory. Larger
    /// objects, and every object of a namespace not assigned to a SyncTarget, are kept as
    /// metadata and read from kcp when copied.
    #[arg(long, env = "TMC_MAX_CACHED_OBJECT_BYTES", default_value_t = crate::syncer::kept::DEFAULT_WHOLE_OBJECT_LIMIT)]
    pub max_cached_object_bytes: usize,

    /// Objects synced at once.
    #[arg(long, env = "TMC_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,

    /// Port to serve Prometheus metrics on, at /metrics on all interfaces (/healthz and /readyz
    /// are served there too).
    #[arg(long, env = "TMC_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,

    /// Port to serve the liveness (/healthz) and readiness (/readyz) probes on, on all interfaces;
    /// it may equal --metrics-port.
    #[arg(long, env = "TMC_HEALTH_PORT", default_value_t = 8081)]
    pub health_port: u16,
}

async fn kube_config(path: &PathBuf) -> Result<kube::Config, CliError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|source| CliError::ReadKubeconfig { path: path.clone(), source })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| CliError::ReadKubeconfig { path: path.clone(), source })
}

pub async fn run(args: SyncerArgs) -> Result<(), CliError> {
    if args.heartbeat_interval.is_zero() {
        return Err(CliError::Failed("--heartbeat-interval must be greater than zero".into()));
    }
    let kcp = ClusterClients::for_server(&kube_config(&args.kubeconfig).await?)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let downstream_config = match &args.downstream_kubeconfig {
        Some(path) => kube_config(path).await?,
        None => kube::Config::infer().await.map_err(|e| {
            CliError::Failed(format!("cannot find the cluster's credentials: {e}\n  fix: pass --downstream-kubeconfig"))
        })?,
    };
    let downstream = crate::syncer::client::cluster_client(downstream_config, args.cluster_qps).map_err(|e| {
        CliError::Failed(format!("cannot build a client for the cluster: {e}\n  fix: pass --downstream-kubeconfig"))
    })?;
    let all = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listeners =
        ops::bind(&[("--metrics-port", all(args.metrics_port)), ("--health-port", all(args.health_port))]).await?;
    let metrics = Metrics::new();
    let readiness = Readiness::waiting_for(format!("kcp and the workspace {}", args.workspace));
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone()));
    let work = async {
        sync(&args, kcp, downstream, &metrics, &readiness, &cancel).await;
        // The endpoints live as long as the syncer.
        cancel.cancel();
    };
    tokio::join!(work, ops::serve(listeners, metrics.clone(), readiness.clone(), cancel.clone()));
    Ok(())
}

/// Resolves the workspace (waiting for kcp), then syncs until `cancel` fires.
async fn sync(
    args: &SyncerArgs,
    kcp: ClusterClients,
    downstream: kube::Client,
    metrics: &Metrics,
    readiness: &Readiness,
    cancel: &CancellationToken,
) {
    let cluster = loop {
        match workspace::resolve(&kcp, &args.workspace).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(workspace = %args.workspace, error = %e, "waiting for kcp and the workspace");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    let upstream = Upstream::for_workspace(kcp.clone(), &args.workspace, cancel.clone())
        .with_whole_object_limit(args.max_cached_object_bytes);
    let (wanted, wanted_rx) = tokio::sync::watch::channel(wanted_apis(&[]));
    let target_client = kcp.cluster(&cluster);
    let (first, spec_read) = tokio::sync::oneshot::channel();
    let name = args.sync_target_name.clone();
    tokio::spawn(follow_supported_apis(target_client, name, wanted, first, cancel.clone()));
    tracing::info!(target = %args.sync_target_name, "reading the SyncTarget's spec");
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = spec_read => {}
    }
    let settings = EngineSettings {
        workers: usize::from(args.workers),
        heartbeat_interval: args.heartbeat_interval,
        deletion_timeout: args.deletion_timeout,
        backoff: Backoff::default(),
        cluster_qps: args.cluster_qps,
        metrics: metrics.clone(),
    };
    let (probe_tx, mut probe) = tokio::sync::watch::channel(Probe::Pending);
    let engine = Engine::new(
        cluster.clone(),
        &args.sync_target_name,
        upstream.clone(),
        downstream,
        settings,
        probe_tx,
        wanted_rx,
    );
    let engine = match &args.namespace_role {
        Some(role) => engine.with_namespace_role(role.clone()),
        None => engine,
    };
    tracing::info!(workspace = %args.workspace, cluster = %cluster, target = %args.sync_target_name,
        target_key = engine.target_key(), "syncer starting (pull mode)");
    tokio::spawn(async move {
        while probe.changed().await.is_ok() {
            let state = probe.borrow().clone();
            tracing::info!(probe = ?state, "cluster probe changed");
        }
    });
    readiness.set_ready();
    tokio::join!(upstream.run(), engine.run(cancel.clone()));
}
