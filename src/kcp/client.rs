//! The cluster-aware client: one connection pool per kcp endpoint, and a cheap `kube::Client`
//! per logical cluster on top of it.
//!
//! kube's `Api<K>` has no per-request hook for a cluster, so a client per cluster it is. Each
//! per-cluster client is a small tower service that prefixes request paths with
//! `/clusters/<name>` and hands them to the endpoint's base client, which owns the TLS
//! connection pool and the credentials. Creating one costs a spawned buffer task, not a
//! connection, and they are cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response, Uri};
use kube::client::Body;
use kube::{Client, Config};

use super::cluster::{LogicalClusterName, WorkspacePath};
use crate::net::deadline::{DeadlineExceeded, REQUEST_DEADLINE, is_watch};

/// Errors building a client for a kcp endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("endpoint URL {url:?} is not valid: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot build a client for {url}: {source}")]
    Build { url: String, source: kube::Error },
}

/// What the per-cluster clients are scoped to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    Cluster(LogicalClusterName),
    Path(WorkspacePath),
    Wildcard,
}

impl Scope {
    fn prefix(&self) -> String {
        match self {
            Scope::Cluster(c) => format!("/clusters/{c}"),
            Scope::Path(p) => format!("/clusters/{p}"),
            Scope::Wildcard => "/clusters/*".to_string(),
        }
    }
}

/// Clients for every logical cluster behind one endpoint: the kcp server itself
/// (`https://host:6443`) or one shard's APIExport virtual workspace
/// (`https://host:6443/services/apiexport/<cluster>/<export>`).
#[derive(Clone)]
pub struct ClusterClients {
    base_url: String,
    base: Client,
    scoped: Arc<Mutex<HashMap<Scope, Client>>>,
}

impl ClusterClients {
    /// Builds the shared base client for `endpoint`, reusing the credentials and TLS settings
    /// of `config` (whose own URL path, such as `/clusters/root`, is dropped).
    pub fn new(config: &Config, endpoint: &str) -> Result<Self, ClientError> {
        let url: Uri = endpoint.trim_end_matches('/').parse().map_err(|e: http::uri::InvalidUri| {
            ClientError::InvalidUrl { url: endpoint.into(), reason: e.to_string() }
        })?;
        if url.scheme().is_none() || url.authority().is_none() {
            return Err(ClientError::InvalidUrl { url: endpoint.into(), reason: "needs scheme and host".into() });
        }
        let mut config = config.clone();
        config.cluster_url = url;
        crate::net::identify(&mut config);
        let base = Client::try_from(config).map_err(|source| ClientError::Build { url: endpoint.into(), source })?;
        Ok(Self { base_url: endpoint.trim_end_matches('/').to_string(), base, scoped: Default::default() })
    }

    /// Clients for the kcp server that `config` points at: its scheme and host, without the
    /// `/clusters/...` suffix a kcp kubeconfig usually carries.
    pub fn for_server(config: &Config) -> Result<Self, ClientError> {
        let server = server_root(&config.cluster_url);
        Self::new(config, &server)
    }

    /// Clients on top of an already built base client (a mock API server in unit tests).
    pub fn from_client(base: Client, base_url: &str) -> Self {
        Self { base_url: base_url.trim_end_matches('/').to_string(), base, scoped: Default::default() }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A client whose requests go to one logical cluster.
    pub fn cluster(&self, cluster: &LogicalClusterName) -> Client {
        self.scoped(Scope::Cluster(cluster.clone()))
    }

    /// A client whose requests go to the workspace at `path`.
    pub fn path(&self, path: &WorkspacePath) -> Client {
        self.scoped(Scope::Path(path.clone()))
    }

    /// A client whose list and watch requests span every logical cluster (`/clusters/*`).
    pub fn wildcard(&self) -> Client {
        self.scoped(Scope::Wildcard)
    }

    /// Drops the cached client of a cluster that no longer matters (e.g. an unbound workspace).
    pub fn forget(&self, cluster: &LogicalClusterName) {
        self.scoped.lock().expect("client cache poisoned").remove(&Scope::Cluster(cluster.clone()));
    }

    fn scoped(&self, scope: Scope) -> Client {
        let mut cache = self.scoped.lock().expect("client cache poisoned");
        cache
            .entry(scope.clone())
            .or_insert_with(|| {
                Client::new(PrefixService { prefix: scope.prefix(), inner: self.base.clone() }, "default")
            })
            .clone()
    }
}

/// `https://host:6443/clusters/root` -> `https://host:6443`.
pub fn server_root(url: &Uri) -> String {
    let path = url.path();
    let keep = match path.find("/clusters/") {
        Some(i) => &path[..i],
        None => path.trim_end_matches('/'),
    };
    format!("{}://{}{}", url.scheme_str().unwrap_or("https"), url.authority().map(|a| a.as_str()).unwrap_or(""), keep)
}

/// Prefixes request paths with `/clusters/<...>` and forwards to the endpoint's base client;
/// a request that is not a watch is given up after [`REQUEST_DEADLINE`] (see
/// [`crate::net::deadline`]: kcp restarted at the wrong moment left requests waiting forever).
#[derive(Clone)]
struct PrefixService {
    prefix: String,
    inner: Client,
}

impl tower::Service<Request<Body>> for PrefixService {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let prefixed = format!("{}{}", self.prefix, path_and_query);
        let inner = self.inner.clone();
        match prefixed.parse::<Uri>() {
            Ok(uri) => {
                *req.uri_mut() = uri;
                if is_watch(&req) {
                    return Box::pin(async move { inner.send(req).await });
                }
                Box::pin(async move {
                    match tokio::time::timeout(REQUEST_DEADLINE, inner.send(req)).await {
                        Ok(answered) => answered,
                        Err(_) => Err(kube::Error::Service(Box::new(DeadlineExceeded(REQUEST_DEADLINE)))),
                    }
                })
            }
            Err(e) => Box::pin(async move { Err(kube::Error::Service(Box::new(e))) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_roots() {
        let cases = [
            ("https://127.0.0.1:6443/clusters/root", "https://127.0.0.1:6443"),
            ("https://127.0.0.1:6443", "https://127.0.0.1:6443"),
            ("https://h:1/services/apiexport/abc/tmc/clusters/*", "https://h:1/services/apiexport/abc/tmc"),
            ("https://h:1/prefix/", "https://h:1/prefix"),
        ];
        for (input, want) in cases {
            assert_eq!(server_root(&input.parse().unwrap()), want, "{input}");
        }
    }

    #[test]
    fn scope_prefixes() {
        let c = LogicalClusterName::new("abc").unwrap();
        assert_eq!(Scope::Cluster(c).prefix(), "/clusters/abc");
        assert_eq!(Scope::Path("root:org".parse().unwrap()).prefix(), "/clusters/root:org");
        assert_eq!(Scope::Wildcard.prefix(), "/clusters/*");
    }

    /// kcp accepts the requests and never answers: a GET through a cluster's client fails after
    /// the deadline, with the cluster prefix on its path; a watch is left waiting.
    #[tokio::test(start_paused = true)]
    async fn requests_without_answer_give_up_at_the_deadline() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use std::time::Duration;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = tokio::spawn(async move {
            let mut paths = Vec::new();
            // Held, never answered, until the test ends.
            let mut held = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                paths.push(request.uri().to_string());
                held.push(send);
            }
            paths
        });
        let clients = ClusterClients::from_client(Client::new(service, "default"), "https://kcp");
        let api: kube::Api<ConfigMap> =
            kube::Api::namespaced(clients.cluster(&LogicalClusterName::new("abc").unwrap()), "n");
        let started = tokio::time::Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(120), api.get("a")).await;
        let err = answered.expect("the GET was not cut off").unwrap_err();
        assert!(err.to_string().contains("no response within 60s"), "{err}");
        assert_eq!(started.elapsed(), REQUEST_DEADLINE);
        let params = kube::api::WatchParams::default();
        let watch = api.watch(&params, "0");
        assert!(tokio::time::timeout(Duration::from_secs(3600), watch).await.is_err(), "the watch was cut off");
        drop((api, clients));
        let paths = seen.await.unwrap();
        assert_eq!(paths[0], "/clusters/abc/api/v1/namespaces/n/configmaps/a");
        assert!(paths[1].contains("watch=true"), "{paths:?}");
    }
}
