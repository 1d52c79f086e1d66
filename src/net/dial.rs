//! Dialling push-mode clusters under the operator's [`AddressPolicy`], at connect time.
//!
//! Checking a kubeconfig's server once, before use, is not enough: a name can resolve to a
//! public address for the check and to 169.254.169.254 for the connection (DNS rebinding). So
//! the policy is applied where the connection is made: [`PolicyResolver`] hands hyper only the
//! resolved addresses the policy allows, [`GuardedConnector`] checks IP literals (which hyper
//! never resolves) before dialling and the peer it actually reached after, and refuses `http://`
//! unless plain HTTP is allowed. [`Dialer::check_server`] runs the same decision before a syncer
//! starts, so the SyncTarget can name the refusal at once.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::{BoxError, Service, ServiceExt};

use super::address::{AddressPolicy, Refusal};

/// kcp's own endpoints as `(host, port)`: the kcp server the manager talks to and every
/// virtual-workspace URL it serves. Shared by all syncers; the manager adds URLs as it learns
/// them and never removes one (refusing a gone endpoint costs nothing).
#[derive(Clone, Debug, Default)]
pub struct KcpEndpoints(Arc<RwLock<BTreeSet<(String, u16)>>>);

impl KcpEndpoints {
    pub fn add_url(&self, url: &Uri) {
        if let Some((host, port)) = host_port(url) {
            self.0.write().expect("kcp endpoints poisoned").insert((host.to_ascii_lowercase(), port));
        }
    }

    /// Every endpoint's addresses, each with the `host:port` it came from. A name that does
    /// not resolve right now is skipped: it cannot be dialled either.
    async fn resolved(&self) -> Vec<(SocketAddr, String)> {
        let endpoints: Vec<(String, u16)> = self.0.read().expect("kcp endpoints poisoned").iter().cloned().collect();
        let mut out = vec![];
        for (host, port) in endpoints {
            let named = format!("{host}:{port}");
            match host.parse::<IpAddr>() {
                Ok(ip) => out.push((SocketAddr::new(ip, port), named)),
                Err(_) => {
                    if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await {
                        out.extend(addrs.map(|a| (a, named.clone())));
                    }
                }
            }
        }
        out
    }
}

/// `(host, port)` of a URL, the port defaulted from the scheme, IPv6 brackets removed.
fn host_port(url: &Uri) -> Option<(String, u16)> {
    let host = url.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_u16().unwrap_or(if url.scheme_str() == Some("http") { 80 } else { 443 });
    (!host.is_empty()).then_some((host, port))
}

/// Why a cluster server may not be (or could not be) dialled.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("the server {server} is refused: {refusal}")]
    Refused { server: String, refusal: Refusal },
    #[error(
        "the server {server} uses plain http://, which would send the kubeconfig's credentials in clear text; use https:// (the manager's operator can allow it with --allow-insecure-cluster-tls)"
    )]
    PlainHttp { server: String },
    #[error("the server URL {0:?} has no host")]
    NoHost(String),
    #[error("the server name {host} does not resolve ({why})")]
    Unresolved { host: String, why: String },
}

impl DialError {
    /// Whether this is a refusal by policy (as opposed to a name that does not resolve).
    pub fn is_refusal(&self) -> bool {
        matches!(self, DialError::Refused { .. } | DialError::PlainHttp { .. })
    }
}

/// The policy and kcp's endpoints, with which every push-mode connection is made.
#[derive(Clone, Debug)]
pub struct Dialer {
    policy: Arc<AddressPolicy>,
    kcp: KcpEndpoints,
}

impl Dialer {
    pub fn new(policy: AddressPolicy, kcp: KcpEndpoints) -> Self {
        Self { policy: Arc::new(policy), kcp }
    }

    pub fn kcp_endpoints(&self) -> &KcpEndpoints {
        &self.kcp
    }

    /// The decision the dialer will make for `server`, taken before a syncer starts.
    pub async fn check_server(&self, server: &Uri) -> Result<(), DialError> {
        self.check_scheme(server)?;
        let (host, port) = host_port(server).ok_or_else(|| DialError::NoHost(server.to_string()))?;
        self.allowed(&host, port).await.map(|_| ())
    }

    fn check_scheme(&self, url: &Uri) -> Result<(), DialError> {
        if url.scheme_str() == Some("http") && !self.policy.allow_plain_http {
            let server = host_port(url).map(|(h, p)| format!("{h}:{p}")).unwrap_or_else(|| url.to_string());
            return Err(DialError::PlainHttp { server });
        }
        Ok(())
    }

    /// The addresses of `host` the policy lets us dial; a refusal when there are none.
    async fn allowed(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
        let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| DialError::Unresolved { host: host.to_string(), why: e.to_string() })?
                .collect(),
        };
        let kcp = self.kcp.resolved().await;
        let mut first_refusal = None;
        let mut allowed = vec![];
        for address in resolved {
            match self.policy.check(address, &kcp) {
                Ok(()) => allowed.push(address),
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(refusal)) => Err(DialError::Refused { server: format!("{host}:{port}"), refusal }),
            (true, None) => Err(DialError::Unresolved { host: host.to_string(), why: "no addresses".to_string() }),
        }
    }

    /// A TCP connector for the cluster server `server` that dials only what the policy allows.
    pub fn connector(&self, server: &Uri, connect_timeout: Option<std::time::Duration>) -> GuardedConnector {
        let port = host_port(server).map_or(443, |(_, p)| p);
        let mut http = HttpConnector::new_with_resolver(PolicyResolver { dialer: self.clone(), port });
        // TLS is layered on top by kube's rustls connector, which hands us https:// URIs.
        http.enforce_http(false);
        http.set_connect_timeout(connect_timeout);
        GuardedConnector { http, dialer: self.clone() }
    }
}

/// Resolves names for hyper, keeping only the addresses the policy allows.
///
/// hyper asks with the name alone and sets the port afterwards; kcp's endpoints are matched by
/// address and port, so the resolver of a client is made for its server's port (kube's base URI
/// layer sends every request of a client to that one server), and the guard re-checks the
/// connected peer with its real port.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    dialer: Dialer,
    port: u16,
}

impl Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = DialError;
    type Future = BoxFuture<'static, Result<Self::Response, DialError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let (dialer, port) = (self.dialer.clone(), self.port);
        Box::pin(async move { dialer.allowed(name.as_str(), port).await.map(Vec::into_iter) })
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct GuardedConnector {
    http: HttpConnector<PolicyResolver>,
    dialer: Dialer,
}

impl Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (http, dialer) = (self.http.clone(), self.dialer.clone());
        Box::pin(async move {
            dialer.check_scheme(&uri)?;
            let (host, port) = host_port(&uri).ok_or_else(|| DialError::NoHost(uri.to_string()))?;
            if host.parse::<IpAddr>().is_ok() {
                dialer.allowed(&host, port).await?;
            }
            let stream = http.oneshot(uri).await?;
            // What was reached, whatever resolved to what: the last word.
            let peer = stream.inner().peer_addr()?;
            let kcp = dialer.kcp.resolved().await;
            if let Err(refusal) = dialer.policy.check(peer, &kcp) {
                return Err(DialError::Refused { server: format!("{host}:{port}"), refusal }.into());
            }
            Ok(stream)
        })
    }
}

/// The first error of type `T` in `e`'s chain of sources (including `e`).
pub fn find_cause<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
#[path = "dial_tests.rs"]
mod tests;
