//! The operational HTTP endpoints of `tmc manager` and `tmc syncer`: `/metrics` (Prometheus),
//! `/healthz` (liveness) and `/readyz` (readiness). Every address serves all three, so metrics and
//! health may share one address or use two.

pub mod health;
pub mod metrics;

use std::convert::Infallible;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use health::Readiness;
pub use metrics::Metrics;

/// How long in-flight requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors of the operational server; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}\n  fix: {}", bind_hint(source.kind()))]
    Bind { addr: SocketAddr, source: std::io::Error },
}

fn bind_hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::AddrInUse => "another process listens there: stop it or choose another address or port",
        ErrorKind::AddrNotAvailable => "the IP is not one of this machine's: use 0.0.0.0 or one of its addresses",
        ErrorKind::PermissionDenied => "ports below 1024 need privileges: choose port 1024 or above",
        _ => "choose another address or port",
    }
}

/// A bound listener, not yet serving. Binding first lets a command fail on a taken port before it
/// starts any work.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        let inner = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
        // With port 0 the kernel picks the port: report that one.
        let addr = inner.local_addr().unwrap_or(addr);
        Ok(Listener { inner, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `cancel` fires, then lets in-flight requests finish (closing idle keep-alive
    /// connections at once) for up to five seconds.
    pub async fn run(self, metrics: Metrics, readiness: Readiness, cancel: CancellationToken) {
        tracing::info!(address = %self.addr, "serving /metrics, /healthz and /readyz");
        let graceful = GracefulShutdown::new();
        let mut http = http1::Builder::new();
        // A client that never finishes its headers must not hold a connection forever. 30 s
        // (hyper's default): at 10 s a manager starved of CPU was seen closing scrapes unanswered.
        http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.inner.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // E.g. out of file descriptors: wait rather than spin on the error.
                        tracing::warn!(address = %self.addr, error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (metrics, readiness) = (metrics.clone(), readiness.clone());
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let response = health::respond(req.method(), req.uri().path(), &metrics, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "operational endpoint connection ended with an error");
                }
            });
        }
        drop(self.inner);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!(address = %self.addr, "requests still running after {SHUTDOWN_GRACE:?}; closing anyway");
        }
    }
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` on it until `cancel` fires.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
    cancel: CancellationToken,
) -> Result<(), ServerError> {
    Listener::bind(addr).await?.run(metrics, readiness, cancel).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw HTTP/1.0 GET: (status code, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, body.to_string())
    }

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[tokio::test]
    async fn serves_all_paths_and_follows_readiness() {
        let listener = Listener::bind(local()).await.unwrap();
        let addr = listener.local_addr();
        let (readiness, cancel) = (Readiness::waiting_for("the workspace"), CancellationToken::new());
        let task = tokio::spawn(listener.run(Metrics::new(), readiness.clone(), cancel.clone()));

        let cases: &[(&str, u16, &str)] = &[
            ("/healthz", 200, "ok"),
            ("/readyz", 503, "waiting for the workspace"),
            ("/metrics", 200, "process_resident_memory_bytes"),
            ("/other", 404, "not found"),
        ];
        for (path, status, body) in cases {
            let (got, text) = get(addr, path).await;
            assert_eq!(got, *status, "{path}: {text}");
            assert!(text.contains(body), "{path}: {text}");
        }
        readiness.set_ready();
        assert_eq!(get(addr, "/readyz").await, (200, "ok\n".to_string()));

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops on cancel").unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening after shutdown");
    }

    #[tokio::test]
    async fn idle_keep_alive_connections_do_not_hold_shutdown() {
        let listener = Listener::bind(local()).await.unwrap();
        let addr = listener.local_addr();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(listener.run(Metrics::new(), Readiness::waiting_for("x"), cancel.clone()));
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), task).await.expect("idle connection closed at once").unwrap();
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let taken = Listener::bind(local()).await.unwrap();
        let addr = taken.local_addr();
        let err = serve(addr, Metrics::new(), Readiness::waiting_for("x"), CancellationToken::new()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&addr.to_string()) && text.contains("fix: another process listens there"), "{text}");
    }
}
