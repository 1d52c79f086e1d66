//! `tmc manager`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{CliError, KcpArgs, cancel_on_signal, load_kube_config, ops, parse_duration};
use crate::apis::names::is_dns_subdomain;
use crate::kcp::endpoints::ShardFilter;
use crate::leader;
use crate::manager::{self, ManagerConfig};
use crate::net::address::{AddressPolicy, Cidr};
use crate::net::dial::{Dialer, KcpEndpoints};
use crate::net::response::DEFAULT_MAX_RESPONSE_MIB;
use crate::reconciler::{placement, synctarget};
use crate::runtime::queue::Backoff;
use crate::server::{Metrics, Readiness};
use crate::syncer::client::ClusterAccess;
use crate::syncer::engine::EngineSettings;

#[derive(Debug, Args)]
pub struct ManagerArgs {
    #[command(flatten)]
    pub kcp: KcpArgs,

    /// A SyncTarget whose last heartbeat (status.lastSyncTime) is older than this is reported
    /// HeartbeatHealthy=False and not Ready.
    #[arg(long, env = "TMC_HEARTBEAT_THRESHOLD", default_value = "40s", value_parser = parse_duration)]
    pub heartbeat_threshold: Duration,

    /// How often a push-mode syncer reports in (status.lastSyncTime) while its cluster answers.
    #[arg(long, env = "TMC_SYNCER_HEARTBEAT_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub syncer_heartbeat_interval: Duration,

    /// How long a deleted kcp object waits for its copy to be deleted from an unreachable cluster
    /// before its finalizer is released anyway (an Event records the orphan, which is deleted
    /// when the cluster is reachable again). Also applies when the target's syncer cannot run
    /// (push mode without a usable kubeconfig, pull mode with a stale heartbeat): the finalizer
    /// sweeper releases such objects, and the copy may then remain in the cluster.
    #[arg(long, env = "TMC_SYNCER_DELETION_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub syncer_deletion_timeout: Duration,

    /// How often the manager looks for syncer finalizers of SyncTargets that no longer exist
    /// (and for deleted objects whose target's syncer cannot run) and releases them. It also
    /// looks once at start, as soon as its caches have synced.
    #[arg(long, env = "TMC_FINALIZER_SWEEP_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub finalizer_sweep_interval: Duration,

    /// Requests each push-mode syncer may start per second against its cluster, so that a
    /// restart or a burst cannot storm a cluster's API server.
    #[arg(long, env = "TMC_SYNCER_CLUSTER_QPS", default_value_t = crate::syncer::client::DEFAULT_CLUSTER_QPS,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub syncer_cluster_qps: u32,

    /// An address range push-mode syncers may dial although it is refused by default (loopback,
    /// link-local, unspecified, multicast, broadcast), e.g. 127.0.0.1/32 for clusters on this
    /// machine. Repeatable (or comma-separated). --cluster-address-deny wins over it, and kcp's
    /// own endpoints stay refused whatever it says.
    #[arg(long = "cluster-address-allow", env = "TMC_CLUSTER_ADDRESS_ALLOW", value_name = "CIDR",
        value_delimiter = ',', value_parser = clap::value_parser!(Cidr))]
    pub cluster_address_allow: Vec<Cidr>,

    /// An address range push-mode syncers may never dial, on top of the defaults, e.g. the pod,
    /// service and node networks of the manager's own cluster. Repeatable (or comma-separated).
    #[arg(long = "cluster-address-deny", env = "TMC_CLUSTER_ADDRESS_DENY", value_name = "CIDR",
        value_delimiter = ',', value_parser = clap::value_parser!(Cidr))]
    pub cluster_address_deny: Vec<Cidr>,

    /// The largest response a push-mode syncer reads from its cluster, in MiB: a longer list
    /// or get is cut off with an error, and so is a watch event (one line) longer than this.
    #[arg(long, env = "TMC_CLUSTER_MAX_RESPONSE_MIB", default_value_t = DEFAULT_MAX_RESPONSE_MIB,
        value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cluster_max_response_mib: u32,

    /// Largest kcp object, in bytes of JSON, that the manager keeps whole in memory. Larger
    /// objects, and every object of a namespace assigned to no SyncTarget, are kept as metadata
    /// and read from kcp when a syncer copies them.
    #[arg(long, env = "TMC_MAX_CACHED_OBJECT_BYTES", default_value_t = crate::syncer::kept::DEFAULT_WHOLE_OBJECT_LIMIT)]
    pub max_cached_object_bytes: usize,

    /// Objects each push-mode syncer may sync at once.
    #[arg(long, env = "TMC_SYNCER_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub syncer_workers: u16,

    /// How long a SyncTarget chosen by a Placement may stay not Ready before its namespaces are
    /// moved to another matching target (only for Placements with numberOfTargets set).
    #[arg(long, env = "TMC_PLACEMENT_FAILOVER_GRACE", default_value = "2m", value_parser = parse_duration)]
    pub placement_failover_grace: Duration,

    /// How long a namespace moving to a new SyncTarget may wait for that target's evidence
    /// (every object applied, every Deployment available) before its Placement reports
    /// `MoveStalled`. The namespace keeps its old target until the evidence arrives, however
    /// long that takes; this only bounds how long the wait stays silent.
    #[arg(long, env = "TMC_PLACEMENT_MOVE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub placement_move_timeout: Duration,

    /// Moves of namespaces off unhealthy or draining targets allowed per minute, for the
    /// Placements of each workspace (one tenant's moves never delay another's); further moves
    /// wait.
    #[arg(long, env = "TMC_PLACEMENT_MAX_EVICTIONS_PER_MINUTE", default_value_t = 10)]
    pub placement_max_evictions_per_minute: u32,

    /// Accept tenant kubeconfigs (push mode) with `insecure-skip-tls-verify: true` or a plain
    /// `http://` server. Off by default: the cluster's certificate must be verified against the
    /// kubeconfig's certificate-authority-data (or the manager's trust store). When on, each
    /// such target is warned in the log and in its SyncerReady message.
    #[arg(long, env = "TMC_ALLOW_INSECURE_CLUSTER_TLS", default_value_t = false)]
    pub allow_insecure_cluster_tls: bool,

    /// SyncTarget reconciles that may run at once.
    #[arg(long, env = "TMC_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,

    /// Address to serve Prometheus metrics on, at /metrics (/healthz and /readyz are served there
    /// too).
    #[arg(long, env = "TMC_METRICS_BIND_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_bind_address: SocketAddr,

    /// Address to serve the liveness (/healthz) and readiness (/readyz) probes on; it may equal
    /// --metrics-bind-address.
    #[arg(long, env = "TMC_HEALTH_BIND_ADDRESS", default_value = "0.0.0.0:8081")]
    pub health_bind_address: SocketAddr,

    /// Follow only these kcp shards' virtual-workspace endpoints (shard names as in
    /// `kubectl get shards` in root; repeatable or comma-separated). Empty: every shard. Run one
    /// manager (or replica set) per group of shards to spread the load; with
    /// --leader-elect each group elects its own leader on the Lease
    /// `<--leader-election-lease-name>-<shards sorted, joined with '.'>`.
    #[arg(long, env = "TMC_SHARDS", value_name = "SHARD", value_delimiter = ',')]
    pub shards: Vec<String>,

    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
}

/// Leader election among manager replicas. Off by default so that a single manager (`make
/// run`, the e2e suite) needs no Lease; the deployment in config/ turns it on.
#[derive(Debug, Args)]
pub struct LeaderElectionArgs {
    /// Run the controllers only while holding a coordination.k8s.io Lease in the APIExport's
    /// workspace, so that several replicas can run and exactly one works.
    #[arg(long, env = "TMC_LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,

    /// Name of the Lease (in namespace default of the APIExport's workspace).
    #[arg(long, env = "TMC_LEADER_ELECTION_LEASE_NAME", default_value = "tmc-manager")]
    pub leader_election_lease_name: String,

    /// How long a standby waits after the last renewal it saw before it takes the lease over.
    #[arg(long, env = "TMC_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// How long the leader keeps trying to renew the lease before it stops its controllers and
    /// exits; shorter than the lease duration.
    #[arg(long, env = "TMC_LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub leader_election_renew_deadline: Duration,

    /// How often the leader renews and a standby looks at the lease.
    #[arg(long, env = "TMC_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub leader_election_retry_period: Duration,

    /// Holder identity written into the Lease; unique per replica (default: hostname and pid).
    #[arg(long, env = "TMC_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,
}

impl LeaderElectionArgs {
    fn settings(&self, shards: &ShardFilter) -> Result<Option<leader::Settings>, CliError> {
        if !self.leader_elect {
            return Ok(None);
        }
        leader::decide::validate(
            self.leader_election_lease_duration,
            self.leader_election_renew_deadline,
            self.leader_election_retry_period,
        )
        .map_err(CliError::Failed)?;
        Ok(Some(leader::Settings {
            lease_name: leader::decide::lease_name(&self.leader_election_lease_name, shards.shards()),
            identity: self.leader_election_identity.clone().unwrap_or_else(leader::default_identity),
            lease_duration: self.leader_election_lease_duration,
            renew_deadline: self.leader_election_renew_deadline,
            retry_period: self.leader_election_retry_period,
        }))
    }
}

pub async fn run(args: ManagerArgs) -> Result<(), CliError> {
    if args.heartbeat_threshold.is_zero() {
        return Err(CliError::Failed("--heartbeat-threshold must be greater than zero".into()));
    }
    if args.finalizer_sweep_interval.is_zero() {
        return Err(CliError::Failed("--finalizer-sweep-interval must be greater than zero".into()));
    }
    if args.syncer_heartbeat_interval.is_zero() {
        return Err(CliError::Failed("--syncer-heartbeat-interval must be greater than zero".into()));
    }
    let shards = ShardFilter::only(args.shards.iter().map(|s| s.trim().to_string()));
    if let Some(bad) = args.shards.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).find(|s| !is_dns_subdomain(s)) {
        return Err(CliError::Failed(format!(
            "--shards: {bad:?} is not a shard name (lowercase letters, digits, '-' and '.'; see `kubectl get shards` in root)"
        )));
    }
    let leader_election = args.leader_election.settings(&shards)?;
    let kube_config = load_kube_config(&args.kcp).await?;
    let listeners = ops::bind(&[
        ("--metrics-bind-address", args.metrics_bind_address),
        ("--health-bind-address", args.health_bind_address),
    ])
    .await?;
    let metrics = Metrics::new();
    let readiness = Readiness::waiting_for(format!("kcp and the APIExport workspace {}", args.kcp.workspace));
    let policy = AddressPolicy {
        allow: args.cluster_address_allow.clone(),
        deny: args.cluster_address_deny.clone(),
        // One opt-in for both ways of giving up TLS: the kubeconfig check and the dialer agree.
        allow_plain_http: args.allow_insecure_cluster_tls,
    };
    let shown = |cidrs: &[Cidr]| cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    tracing::info!(allow = %shown(&policy.allow), deny = %shown(&policy.deny), "push-mode cluster address policy");
    if policy.allow_plain_http {
        tracing::warn!(
            "--allow-insecure-cluster-tls: push-mode credentials may be sent in clear text or to an unverified server"
        );
    }
    let config = ManagerConfig {
        kube_config,
        workspace: args.kcp.workspace.clone(),
        export_name: args.kcp.export_name.clone(),
        synctarget: synctarget::Settings {
            heartbeat_threshold: args.heartbeat_threshold,
            workers: usize::from(args.workers),
            backoff: Backoff::default(),
            kubeconfig_policy: crate::syncer::credentials::Policy {
                allow_insecure_tls: args.allow_insecure_cluster_tls,
            },
            finalizer_sweep_interval: args.finalizer_sweep_interval,
        },
        placement: placement::Settings {
            workers: usize::from(args.workers),
            failover_grace: args.placement_failover_grace,
            max_evictions_per_minute: args.placement_max_evictions_per_minute,
            move_timeout: args.placement_move_timeout,
            backoff: Backoff::default(),
        },
        syncer: EngineSettings {
            workers: usize::from(args.syncer_workers),
            heartbeat_interval: args.syncer_heartbeat_interval,
            deletion_timeout: args.syncer_deletion_timeout,
            backoff: Backoff::default(),
            cluster_qps: args.syncer_cluster_qps,
            metrics: metrics.clone(),
        },
        cluster_access: ClusterAccess {
            dialer: Dialer::new(policy, KcpEndpoints::default()),
            max_response_bytes: u64::from(args.cluster_max_response_mib) * 1024 * 1024,
        },

        whole_object_limit: args.max_cached_object_bytes,
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        leader_election,
        shards,
    };
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone()));
    let work = async {
        let result = manager::run(config, cancel.clone()).await;
        // The endpoints live as long as the manager: stop them when it stops, even on an error.
        cancel.cancel();
        result
    };
    let (result, ()) = tokio::join!(work, ops::serve(listeners, metrics, readiness, cancel.clone()));
    result.map_err(|e| CliError::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        let cases = [
            ("root", true),
            ("shard-1", true),
            ("eu.west-2", true),
            ("", false),
            ("Root", false),
            ("-a", false),
            ("a-", false),
            ("a/b", false),
            ("a b", false),
            ("a..b", false),
        ];
        // A kcp Shard's name is an object name: a DNS subdomain.
        for (name, want) in cases {
            assert_eq!(is_dns_subdomain(name), want, "{name:?}");
        }
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }
}
