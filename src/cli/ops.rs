//! The operational endpoints (metrics, health) as `tmc manager` and `tmc syncer` run them: bound
//! before any work starts, so a taken port fails the command at once, and served until the
//! command's cancellation token fires.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::server::{Listener, Metrics, Readiness};

/// Binds each distinct address once (metrics and health may share one); `flag` is the flag that
/// set the address, named in the error.
pub(super) async fn bind(addrs: &[(&'static str, SocketAddr)]) -> Result<Vec<Listener>, CliError> {
    let mut bound: Vec<(SocketAddr, Listener)> = vec![];
    for &(flag, addr) in addrs {
        if bound.iter().any(|(a, _)| *a == addr) {
            continue;
        }
        let listener = Listener::bind(addr).await.map_err(|source| CliError::Listen { flag, source })?;
        bound.push((addr, listener));
    }
    Ok(bound.into_iter().map(|(_, l)| l).collect())
}

/// Serves every listener until `cancel` fires.
pub(super) async fn serve(listeners: Vec<Listener>, metrics: Metrics, readiness: Readiness, cancel: CancellationToken) {
    let runs = listeners.into_iter().map(|l| l.run(metrics.clone(), readiness.clone(), cancel.clone()));
    futures::future::join_all(runs).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_each_address_once_and_names_the_flag() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Linux routes all of 127.0.0.0/8 to loopback: a second address without a second interface.
        let other: SocketAddr = "127.0.0.2:0".parse().unwrap();
        type Addrs = Vec<(&'static str, SocketAddr)>;
        // (addresses, listeners bound, error text)
        let cases: Vec<(Addrs, usize, &str)> = vec![
            (vec![("--metrics", any), ("--health", any)], 1, ""),
            (vec![("--metrics", any), ("--health", other)], 2, ""),
            (vec![("--metrics", any), ("--health", taken)], 0, "--health: cannot listen on"),
            (vec![("--metrics", taken), ("--health", any)], 0, "--metrics: cannot listen on"),
        ];
        for (addrs, want, err) in cases {
            match bind(&addrs).await {
                Ok(listeners) => assert_eq!((listeners.len(), ""), (want, err), "{addrs:?}"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(!err.is_empty() && text.starts_with(err), "{addrs:?}: {text}");
                    assert!(text.contains(&taken.to_string()) && text.contains("fix:"), "{text}");
                }
            }
        }
    }
}
