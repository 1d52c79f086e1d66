//! Clients for physical clusters, rate-limited so that a restart or a burst of kcp writes cannot
//! storm a cluster's API server (a known failure of other agents).
//!
//! Push mode builds its own client stack rather than kube's default one, because the server is
//! named by a tenant: connections go through the [`Dialer`] (address policy at connect time)
//! and answers through [`BoundedResponsesLayer`] (bounded size, no remote text handed on).
//! Pull mode (`tmc syncer`) keeps kube's default stack: its kubeconfig is the cluster admin's.

use std::time::Duration;

use kube::client::{Body, ConfigExt};
use tower::{BoxError, ServiceBuilder};

use crate::net::deadline::{DeadlineLayer, REQUEST_DEADLINE};
use crate::net::dial::Dialer;
use crate::net::response::BoundedResponsesLayer;

/// Default for the requests a syncer may start per second against its cluster.
pub const DEFAULT_CLUSTER_QPS: u32 = 200;

/// How push-mode syncers reach their clusters: the operator's address policy and the largest
/// response read.
#[derive(Clone, Debug)]
pub struct ClusterAccess {
    pub dialer: Dialer,
    pub max_response_bytes: u64,
}

/// Why no push-mode client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// kube would tunnel through the proxy; the dialer would not, so refuse rather than ignore.
    #[error("a proxy URL is not supported for push-mode clusters")]
    Proxy,
}

/// Every request that is not a watch gives up after the kube-apiserver's own request timeout
/// (see [`crate::net::deadline`]); the wait for the rate limit does not count.
const DEADLINE: DeadlineLayer = DeadlineLayer { deadline: REQUEST_DEADLINE };

fn rate_limit(qps: u32) -> tower::limit::RateLimitLayer {
    tower::limit::RateLimitLayer::new(u64::from(qps.max(1)), Duration::from_secs(1))
}

/// A client for `config` (pull mode) that starts at most `qps` requests per second (at least
/// one); the rest wait their turn. Watches count once, when they start.
pub fn cluster_client(mut config: kube::Config, qps: u32) -> Result<kube::Client, kube::Error> {
    crate::net::identify(&mut config);
    let builder = kube::client::ClientBuilder::try_from(config)?.with_layer(&DEADLINE);
    Ok(builder.with_layer(&rate_limit(qps)).build())
}

/// A push-mode client for `config`: kube's TLS, authentication and header layers over a
/// connection pool that dials only what `access` allows, with bounded answers and the same
/// rate limit as [`cluster_client`].
pub fn push_cluster_client(
    mut config: kube::Config,
    qps: u32,
    access: &ClusterAccess,
) -> Result<kube::Client, ClientError> {
    if config.proxy_url.is_some() {
        return Err(ClientError::Proxy);
    }
    crate::net::identify(&mut config);
    let connector = access.dialer.connector(&config.cluster_url, config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(connector)?;
    let pool: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(rate_limit(qps))
        .layer(DEADLINE)
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(BoundedResponsesLayer { max_bytes: access.max_response_bytes })
        .map_err(BoxError::from)
        .service(pool);
    Ok(kube::client::ClientBuilder::new(service, config.default_namespace).build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::address::AddressPolicy;
    use crate::net::dial::{DialError, Dialer, KcpEndpoints, find_cause};

    /// Through a whole kube client: the dialer's refusal survives the layers and is found by
    /// the probe.
    #[tokio::test]
    async fn kube_client_errors_carry_the_refusal() {
        let access = ClusterAccess {
            dialer: Dialer::new(AddressPolicy::default(), KcpEndpoints::default()),
            max_response_bytes: 1024,
        };
        let config = kube::Config::new("https://127.0.0.2:6443".parse().unwrap());
        let client = push_cluster_client(config, 10, &access).unwrap();
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        let err = api.list_metadata(&Default::default()).await.expect_err("refused");
        let cause = find_cause::<DialError>(&err).unwrap_or_else(|| panic!("{err:?}"));
        assert!(cause.to_string().contains("127.0.0.2 is a loopback address"), "{cause}");
    }
}
