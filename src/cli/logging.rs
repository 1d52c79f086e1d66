//! Log set-up: `RUST_LOG` chooses what is logged, except that the dependencies that can print
//! what crosses the wire are capped at levels where they cannot, whatever `RUST_LOG` says.
//!
//! The manager reads every tenant's Secrets and holds their clusters' credentials, so a log
//! line that quotes a response body or a header leaks them. kube-client logs whole response
//! bodies at `warn` when one does not decode, API error bodies at `debug` (a cluster refusing a
//! Secret may quote its values there), and response headers at `trace`; rustls logs handshake
//! messages and certificates (a tenant kubeconfig's CA data) at `trace`; the HTTP stack below
//! them logs connection details at `debug`/`trace`. Operators still get every error, and
//! kcp-tmc's own logs, which never print object contents, at any level.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::LogFormat;

/// The most each dependency may log (a target prefix: `kube_client` covers its modules).
pub const PINNED: &[(&str, LevelFilter)] = &[
    ("kube_client", LevelFilter::ERROR),
    ("kube_runtime", LevelFilter::INFO),
    ("rustls", LevelFilter::WARN),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("tower", LevelFilter::INFO),
    ("tower_http", LevelFilter::INFO),
];

/// Without `RUST_LOG`.
const DEFAULT_FILTER: &str = "info,kube=warn,tower=warn,hyper=warn";

/// The cap of [`PINNED`], as a filter every event must also pass.
pub fn pinned() -> Targets {
    Targets::new().with_default(LevelFilter::TRACE).with_targets(PINNED.iter().copied())
}

/// Installs the global subscriber: `RUST_LOG` (or the default), capped by [`pinned`], to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = subscriber(filter, format, std::io::stderr).try_init();
}

fn subscriber<W>(filter: EnvFilter, format: LogFormat, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Clone + Send + Sync + 'static,
{
    let json = (format == LogFormat::Json).then(|| tracing_subscriber::fmt::layer().json().with_writer(writer.clone()));
    let text = (format == LogFormat::Text).then(|| tracing_subscriber::fmt::layer().with_writer(writer));
    tracing_subscriber::registry().with(Layer::and_then(json, text).with_filter(filter).with_filter(pinned()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(rust_log: &str, format: LogFormat) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(EnvFilter::new(rust_log), format, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "kube_client::client", "Unsuccessful: body-at-debug");
            tracing::warn!(target: "kube_client::client", "body-at-warn");
            tracing::error!(target: "kube_client::client::builder", "failed with status 500");
            tracing::trace!(target: "rustls::client::hs", "certificate-at-trace");
            tracing::trace!(target: "hyper_util::client::legacy::pool", "pool-at-trace");
            tracing::info!(target: "kube_runtime::watcher", "watcher-at-info");
            tracing::trace!(target: "kcp_tmc::syncer", "ours-at-trace");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn trace_everywhere_cannot_open_the_pinned_dependencies() {
        for rust_log in ["trace", "kube_client=trace,rustls=trace,hyper_util=trace,trace"] {
            for format in [LogFormat::Text, LogFormat::Json] {
                let out = logged(rust_log, format);
                for hidden in ["body-at-debug", "body-at-warn", "certificate-at-trace", "pool-at-trace"] {
                    assert!(!out.contains(hidden), "{rust_log} {format:?} logged {hidden}:\n{out}");
                }
                for shown in ["failed with status 500", "watcher-at-info", "ours-at-trace"] {
                    assert!(out.contains(shown), "{rust_log} {format:?} dropped {shown}:\n{out}");
                }
            }
        }
    }

    #[test]
    fn the_default_filter_still_applies_below_the_pins() {
        let out = logged(DEFAULT_FILTER, LogFormat::Text);
        assert!(!out.contains("ours-at-trace") && !out.contains("watcher-at-info"), "{out}");
        assert!(out.contains("failed with status 500"), "{out}");
    }
}
