//! The operational endpoints of the shared `tmc manager`: metrics, liveness and readiness.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::env::{TestResult, eventually};
use crate::{World, ensure};

/// A plain HTTP/1.0 GET of `url` (`http://host:port/path`): (status code, body). HTTP/1.0 makes
/// the server close the connection after the response, so reading to the end is the body.
pub async fn get(url: &str) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http URL: {url}"))?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut stream = tokio::net::TcpStream::connect(host).await.map_err(|e| format!("connect {host}: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("write to {host}: {e}"))?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.map_err(|e| format!("read from {host}: {e}"))?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP response from {url}: {raw:?}"))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status: {head}"))?;
    Ok((status, body.to_string()))
}

pub async fn manager_serves_metrics_and_health(w: Arc<World>) -> TestResult {
    let health = &w.manager_health;
    // The manager may still be starting when the test runs: wait for it to listen.
    let (status, body) = eventually("the manager's /healthz", Duration::from_secs(30), || async {
        Ok(get(&format!("{health}/healthz")).await.ok())
    })
    .await?;
    ensure!(status == 200 && body.trim() == "ok", "/healthz: {status} {body:?}");

    // Ready once the export workspace is resolved and the endpoint slice watched.
    eventually("the manager's /readyz to answer 200", Duration::from_secs(60), || async {
        match get(&format!("{health}/readyz")).await? {
            (200, _) => Ok(Some(())),
            (status, body) => Err(format!("{status} {}", body.trim())),
        }
    })
    .await?;

    // Both addresses serve every path.
    for base in [&w.manager_metrics, health] {
        let (status, metrics) = get(&format!("{base}/metrics")).await?;
        ensure!(status == 200, "{base}/metrics: {status}");
        for want in ["process_resident_memory_bytes", "# TYPE tmc_reconcile_total counter"] {
            ensure!(metrics.contains(want), "{base}/metrics lacks {want:?}:\n{metrics}");
        }
        let (status, _) = get(&format!("{base}/no-such-path")).await?;
        ensure!(status == 404, "{base}/no-such-path: {status}, want 404");
    }
    Ok(())
}
