//! `tmc status`: one view for a person of what kcp-tmc does in some workspaces: Placements,
//! SyncTargets with readiness, heartbeat and synced object counts, and objects that did not
//! sync (their Warning Events). Reads through the kcp server with the caller's own kubeconfig,
//! so it shows what that person may see; the rendering is in `status_view`.

use clap::{Args, ValueEnum};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use super::status_view::{self, WorkspaceStatus};
use super::{CliError, KubeconfigArgs, parse_workspace};
use crate::apis::placement::v1alpha1::Placement;
use crate::apis::sync::v1alpha1::SyncTarget;
use crate::kcp::{ClusterClients, WorkspacePath, error_message};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub kcp: KubeconfigArgs,

    /// A tenant workspace to show, e.g. root:team (one that binds kcp-tmc's APIExport). Repeat,
    /// or separate with commas, for several.
    #[arg(long = "workspace", env = "TMC_STATUS_WORKSPACES", value_delimiter = ',', required = true,
        value_parser = parse_workspace)]
    pub workspaces: Vec<WorkspacePath>,

    /// Output format: a table for a terminal, or JSON for scripts.
    #[arg(short, long, env = "TMC_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Errors reading one workspace; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "cannot list {what} in {workspace}: {message}\n  fix: check that the workspace exists, binds kcp-tmc's APIExport (config/samples/apibinding.yaml) and that your kubeconfig may read it"
    )]
    List { workspace: WorkspacePath, what: &'static str, message: String },
}

async fn list<K>(client: &kube::Client, workspace: &WorkspacePath, what: &'static str) -> Result<Vec<K>, StatusError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone()).list(&ListParams::default()).await.map(|l| l.items).map_err(|e| StatusError::List {
        workspace: workspace.clone(),
        what,
        message: error_message(&e),
    })
}

/// Reads one workspace and builds its view.
async fn workspace_status(
    clients: &ClusterClients,
    workspace: &WorkspacePath,
    now: jiff::Timestamp,
) -> Result<WorkspaceStatus, StatusError> {
    let client = clients.path(workspace);
    let placements: Vec<Placement> = list(&client, workspace, "placements").await?;
    let targets: Vec<SyncTarget> = list(&client, workspace, "synctargets").await?;
    let events: Vec<Event> = list(&client, workspace, "events").await?;
    let mut problems: Vec<_> = events.iter().filter_map(|e| status_view::problem_row(now, e)).collect();
    // Most recent first: what is failing now matters more than what failed an hour ago.
    problems.sort_by_key(|p| (p.last_seen_seconds.unwrap_or(u64::MAX), p.namespace.clone(), p.object.clone()));
    Ok(WorkspaceStatus {
        workspace: workspace.to_string(),
        placements: placements.iter().map(|p| status_view::placement_row(workspace.as_str(), p)).collect(),
        sync_targets: targets.iter().map(|t| status_view::target_row(now, t)).collect(),
        problems,
    })
}

pub async fn run(args: StatusArgs) -> Result<(), CliError> {
    let config = args.kcp.load().await?;
    let clients = ClusterClients::for_server(&config).map_err(|e| CliError::Failed(e.to_string()))?;
    let now = jiff::Timestamp::now();
    let mut views = vec![];
    for workspace in &args.workspaces {
        views.push(workspace_status(&clients, workspace, now).await.map_err(|e| CliError::Failed(e.to_string()))?);
    }
    let text = match args.output {
        Output::Table => status_view::render_table(&views),
        Output::Json => status_view::render_json(&views),
    };
    super::emit(&text)
}
