//! Translating between workspace paths (what people write: `locationSelector.workspace`,
//! `allowedWorkspaces`, `selectedTargets`) and logical cluster names (what keys and labels use).
//!
//! The APIExport virtual workspace serves neither Workspaces nor LogicalClusters, so this asks
//! the kcp server itself: a path through the parent's `Workspace` object, a name through the
//! `kcp.io/path` annotation of the workspace's `LogicalCluster` named `cluster`. Answers are
//! cached for a short while (paths change only when a workspace is moved).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use tokio::time::Instant;

use super::workspace::{self, WorkspaceError};
use super::{ClusterClients, LogicalClusterName, WorkspacePath};

const TTL: Duration = Duration::from_secs(30);

/// Errors resolving a path or a name.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("reading the LogicalCluster of {cluster} failed: {message}")]
    Api { cluster: LogicalClusterName, message: String },
    #[error("the LogicalCluster of {0} has no valid kcp.io/path annotation")]
    NoPath(LogicalClusterName),
}

impl PathError {
    /// Whether kcp said the path does not (or cannot) name a workspace: it does not exist, or is
    /// invalid. Anything else (kcp unreachable, timeouts, 5xx, 403, a workspace not ready yet)
    /// says nothing about the path, and must not count as its absence.
    pub fn is_authoritative(&self) -> bool {
        match self {
            PathError::Workspace(WorkspaceError::NotFound { .. } | WorkspaceError::Invalid { .. }) => true,
            PathError::Workspace(WorkspaceError::Api { source: kube::Error::Api(s), .. }) => s.code == 404,
            _ => false,
        }
    }
}

/// How one workspace path resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Resolved(LogicalClusterName),
    /// It names no workspace (does not exist, or is not a valid path), and why.
    Gone(String),
    /// kcp could not say (unreachable, failing, not ready yet), and why.
    Unknown(String),
}

type Cached<V> = Arc<Mutex<HashMap<String, (V, Instant)>>>;

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Paths {
    server: ClusterClients,
    names: Cached<LogicalClusterName>,
    paths: Cached<WorkspacePath>,
}

fn cached<V: Clone>(cache: &Cached<V>, key: &str) -> Option<V> {
    let map = cache.lock().expect("path cache poisoned");
    map.get(key).filter(|(_, at)| at.elapsed() < TTL).map(|(v, _)| v.clone())
}

impl Paths {
    /// `server`: clients for the kcp server (not a virtual workspace).
    pub fn new(server: ClusterClients) -> Self {
        Self { server, names: Default::default(), paths: Default::default() }
    }

    /// The logical cluster of the workspace `path`.
    pub async fn cluster_of(&self, path: &WorkspacePath) -> Result<LogicalClusterName, PathError> {
        if let Some(name) = cached(&self.names, path.as_str()) {
            return Ok(name);
        }
        let name = workspace::resolve(&self.server, path).await?;
        self.remember(&name, path);
        Ok(name)
    }

    /// The path of the workspace whose logical cluster is `cluster`.
    pub async fn path_of(&self, cluster: &LogicalClusterName) -> Result<WorkspacePath, PathError> {
        if let Some(path) = cached(&self.paths, cluster.as_str()) {
            return Ok(path);
        }
        let gvk = GroupVersionKind::gvk("core.kcp.io", "v1alpha1", "LogicalCluster");
        let api: Api<DynamicObject> =
            Api::all_with(self.server.cluster(cluster), &ApiResource::from_gvk_with_plural(&gvk, "logicalclusters"));
        let lc = api
            .get("cluster")
            .await
            .map_err(|e| PathError::Api { cluster: cluster.clone(), message: super::error_message(&e) })?;
        let path = lc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kcp.io/path"))
            .and_then(|p| p.parse::<WorkspacePath>().ok())
            .ok_or_else(|| PathError::NoPath(cluster.clone()))?;
        self.remember(cluster, &path);
        Ok(path)
    }

    /// How each of `paths` (a SyncTarget's `allowedWorkspaces`: the consent its syncer
    /// enforces) resolves now, telling a path that is authoritatively gone from one kcp could
    /// not answer for (see [`PathError::is_authoritative`]).
    pub async fn resolve_each(&self, paths: &[String]) -> Vec<(String, Resolution)> {
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let resolution = match path.parse::<WorkspacePath>() {
                Err(e) => Resolution::Gone(e.to_string()),
                Ok(p) => match self.cluster_of(&p).await {
                    Ok(cluster) => Resolution::Resolved(cluster),
                    Err(e) if e.is_authoritative() => Resolution::Gone(e.to_string()),
                    Err(e) => Resolution::Unknown(e.to_string()),
                },
            };
            out.push((path.clone(), resolution));
        }
        out
    }

    /// The logical cluster `path` last resolved to, however long ago; `None` if it never did.
    /// For callers that keep a decision made on it while a fresh lookup fails (the Placement
    /// reconciler, for a location workspace that is not ready).
    pub fn last_known_cluster(&self, path: &WorkspacePath) -> Option<LogicalClusterName> {
        self.names.lock().expect("path cache poisoned").get(path.as_str()).map(|(name, _)| name.clone())
    }

    fn remember(&self, name: &LogicalClusterName, path: &WorkspacePath) {
        let now = Instant::now();
        self.names.lock().expect("path cache poisoned").insert(path.to_string(), (name.clone(), now));
        self.paths.lock().expect("path cache poisoned").insert(name.to_string(), (path.clone(), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authoritative_errors() {
        let path: WorkspacePath = "root:a".parse().unwrap();
        let api = |code: u16| {
            PathError::Workspace(WorkspaceError::Api {
                path: path.clone(),
                source: kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed()),
            })
        };
        let rows: Vec<(PathError, bool)> = vec![
            (
                PathError::Workspace(WorkspaceError::NotFound {
                    path: path.clone(),
                    parent: "root".parse().unwrap(),
                    name: "a".into(),
                }),
                true,
            ),
            (PathError::Workspace(WorkspaceError::Invalid { path: path.clone(), message: "bad".into() }), true),
            (PathError::Workspace(WorkspaceError::NotReady(path.clone())), false),
            (api(404), true),
            (api(403), false),
            (api(500), false),
            (api(503), false),
            (api(429), false),
        ];
        for (error, want) in rows {
            assert_eq!(error.is_authoritative(), want, "{error}");
        }
    }
}
