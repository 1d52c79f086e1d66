//! Translating between workspace paths (what people write: `locationSelector.workspace`,
//! `allowedWorkspaces`, `selectedTargets`) and logical cluster names (what keys and labels use).
//!
//! The APIExport virtual workspace serves neither Workspaces nor LogicalClusters, so this asks
//! the kcp server itself: a path through the parent's `Workspace` object, a name through the
//! `kcp.io/path` annotation of the workspace's `LogicalCluster` named `cluster`. Answers are
//! cached for a short while (paths change only when a workspace is moved).

use std::collections::{BTreeSet, HashMap};
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

    /// The logical clusters of the workspaces `paths` (a SyncTarget's `allowedWorkspaces`:
    /// the consent its syncer enforces). A path that does not resolve (yet) is left out and
    /// logged; the caller asks again on its next reconcile.
    pub async fn clusters_of(&self, paths: &[String]) -> BTreeSet<LogicalClusterName> {
        let mut out = BTreeSet::new();
        for path in paths {
            let resolved = match path.parse::<WorkspacePath>() {
                Ok(p) => self.cluster_of(&p).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match resolved {
                Ok(cluster) => {
                    out.insert(cluster);
                }
                Err(e) => tracing::debug!(workspace = %path, error = %e, "allowed workspace not resolved"),
            }
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
