//! Clients for physical clusters, rate-limited so that a restart or a burst of kcp writes cannot
//! storm a cluster's API server (a known failure of other agents).

use std::time::Duration;

/// Default for the requests a syncer may start per second against its cluster.
pub const DEFAULT_CLUSTER_QPS: u32 = 200;

/// A client for `config` that starts at most `qps` requests per second (at least one); the rest
/// wait their turn. Watches count once, when they start.
pub fn cluster_client(config: kube::Config, qps: u32) -> Result<kube::Client, kube::Error> {
    let limit = tower::limit::RateLimitLayer::new(u64::from(qps.max(1)), Duration::from_secs(1));
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&limit).build())
}
