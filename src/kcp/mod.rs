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

/// A kube error as one readable line: for API errors the server's message, code and reason
/// rather than the whole `Status` structure.
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}
