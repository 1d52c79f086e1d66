//! Workspaces: resolving a path to its logical cluster, and creating workspaces.

use std::time::Duration;

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use super::client::ClusterClients;
use super::cluster::{LogicalClusterName, WorkspacePath};

/// Errors resolving or creating workspaces.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace {path} does not exist (no Workspace {name:?} in {parent})")]
    NotFound { path: WorkspacePath, parent: WorkspacePath, name: String },
    #[error("workspace {0} is not ready yet (it has no logical cluster assigned)")]
    NotReady(WorkspacePath),
    #[error("request to kcp for workspace {path} failed: {}", super::error_message(.source))]
    Api { path: WorkspacePath, source: kube::Error },
    #[error("workspace {path}: {message}")]
    Invalid { path: WorkspacePath, message: String },
}

fn workspaces_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("tenancy.kcp.io", "v1alpha1", "Workspace"), "workspaces")
}

/// Resolves `path` to its logical cluster name by reading the Workspace object in the parent.
/// Addressing by name is what works through a shard directly, and names never change.
pub async fn resolve(clients: &ClusterClients, path: &WorkspacePath) -> Result<LogicalClusterName, WorkspaceError> {
    let Some((parent, name)) = path.parent_and_name() else {
        // The root workspace's logical cluster is called `root`.
        return LogicalClusterName::new(path.as_str())
            .map_err(|e| WorkspaceError::Invalid { path: path.clone(), message: e.to_string() });
    };
    let api: Api<DynamicObject> = Api::all_with(clients.path(&parent), &workspaces_resource());
    let ws = api.get_opt(name).await.map_err(|source| WorkspaceError::Api { path: path.clone(), source })?.ok_or_else(
        || WorkspaceError::NotFound { path: path.clone(), parent: parent.clone(), name: name.to_string() },
    )?;
    let cluster = ws.data["spec"]["cluster"].as_str().unwrap_or_default();
    let phase = ws.data["status"]["phase"].as_str().unwrap_or_default();
    if cluster.is_empty() || phase != "Ready" {
        return Err(WorkspaceError::NotReady(path.clone()));
    }
    LogicalClusterName::new(cluster).map_err(|e| WorkspaceError::Invalid { path: path.clone(), message: e.to_string() })
}

/// Creates the workspace `path` (its parent must exist) unless it exists, and waits until it
/// is ready. Returns its logical cluster name.
pub async fn ensure(
    clients: &ClusterClients,
    path: &WorkspacePath,
    timeout: Duration,
) -> Result<LogicalClusterName, WorkspaceError> {
    let Some((parent, name)) = path.parent_and_name() else {
        return resolve(clients, path).await;
    };
    let api: Api<DynamicObject> = Api::all_with(clients.path(&parent), &workspaces_resource());
    let ws: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tenancy.kcp.io/v1alpha1",
        "kind": "Workspace",
        "metadata": { "name": name },
        "spec": { "type": { "name": "universal", "path": "root" } },
    }))
    .expect("static workspace object");
    match api.create(&PostParams::default(), &ws).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(source) => {
            return Err(WorkspaceError::Api { path: path.clone(), source });
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match resolve(clients, path).await {
            Ok(name) => return Ok(name),
            Err(WorkspaceError::NotReady(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e),
        }
    }
}
