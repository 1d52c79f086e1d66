//! How kcp-tmc talks to kcp: logical cluster names and workspace paths, the cluster-aware
//! client, endpoint-slice discovery of the APIExport virtual workspace, and generation and
//! installation of the APIResourceSchemas and the APIExport.

pub mod client;
pub mod cluster;
pub mod endpoints;
pub mod export;
pub mod install;
pub mod paths;
pub mod schema;
pub mod workload;
pub mod workspace;

pub use client::ClusterClients;
pub use cluster::{ClusterKey, LogicalClusterName, WorkspacePath};

/// A kube error as one bounded, printable line, safe to put in a condition, Event or log even
/// when the server was a tenant's (see [`crate::net::response`]): for API errors the Status
/// message (bounded), code and reason word; for errors of the push-mode dialer or response
/// layer their own text; for a body that does not decode, where (never what) — serde quotes
/// the offending value, and that value came from the server.
pub fn error_message(e: &kube::Error) -> String {
    use crate::net::dial::{DialError, find_cause};
    use crate::net::response::{MESSAGE_MAX, ResponseError, bounded_line};
    let text = match e {
        kube::Error::Api(s) => status_message(s),
        kube::Error::SerdeError(e) => format!(
            "the response is not the Kubernetes object expected ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
        other => {
            if let Some(dial) = find_cause::<DialError>(other) {
                dial.to_string()
            } else if let Some(response) = find_cause::<ResponseError>(other) {
                response.to_string()
            } else {
                // kube and hyper wrap the cause ("client error (Connect)"); the useful part is
                // at the end of the chain ("Connection refused").
                let mut text = other.to_string();
                let mut next = std::error::Error::source(other);
                while let Some(cause) = next {
                    let part = cause.to_string();
                    if !text.contains(&part) {
                        text = format!("{text}: {part}");
                    }
                    next = cause.source();
                }
                text
            }
        }
    };
    bounded_line(&text, 2 * MESSAGE_MAX)
}

/// A Status as `message (code reason)`, the message bounded and the reason kept only if it is
/// a reason word.
pub fn status_message(s: &kube::core::Status) -> String {
    use crate::net::response::{MESSAGE_MAX, bounded_line, reason_word};
    let message = bounded_line(&s.message, MESSAGE_MAX);
    match reason_word(&s.reason) {
        "" => format!("{message} ({})", s.code),
        reason => format!("{message} ({} {reason})", s.code),
    }
}

/// A watcher error as one bounded line (see [`error_message`]).
pub fn watch_error_message(e: &kube::runtime::watcher::Error) -> String {
    use kube::runtime::watcher::Error;
    match e {
        Error::InitialListFailed(e) => format!("listing failed: {}", error_message(e)),
        Error::WatchStartFailed(e) => format!("starting the watch failed: {}", error_message(e)),
        Error::WatchError(s) => format!("the watch ended with an error: {}", status_message(s)),
        Error::WatchFailed(e) => format!("the watch failed: {}", error_message(e)),
        other => crate::net::response::bounded_line(&other.to_string(), crate::net::response::MESSAGE_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_table() {
        let status = |message: &str, reason: &str, code| {
            kube::Error::Api(kube::core::Status::failure(message, reason).with_code(code).boxed())
        };
        let serde = serde_json::from_str::<Vec<u8>>(r#""MARKER-777""#).unwrap_err();
        let cases = [
            (status("secrets is forbidden", "Forbidden", 403), "secrets is forbidden (403 Forbidden)"),
            (status("line one\nline two", "", 500), "line one line two (500)"),
            (status("x", "<script>", 502), "x (502)"),
            (
                kube::Error::SerdeError(serde),
                "the response is not the Kubernetes object expected (Data error at line 1, column 12)",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(error_message(&e), want);
        }
        let long = error_message(&status(&"y".repeat(10_000), "Invalid", 422));
        assert!(long.chars().count() <= MESSAGE_MAX_FOR_TEST, "{}", long.len());
    }

    const MESSAGE_MAX_FOR_TEST: usize = crate::net::response::MESSAGE_MAX + 20;
}
