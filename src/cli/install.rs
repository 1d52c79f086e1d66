//! `tmc install`.

use std::time::Duration;

use clap::Args;

use super::{CliError, KcpArgs, load_kube_config};
use crate::kcp::{ClusterClients, export, install, workspace};

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub kcp: KcpArgs,

    /// Create the workspace (as type universal) if it does not exist; its parent must exist.
    #[arg(long, env = "TMC_CREATE_WORKSPACE")]
    pub create_workspace: bool,
}

pub async fn run(args: InstallArgs) -> Result<(), CliError> {
    let config = load_kube_config(&args.kcp).await?;
    let clients = ClusterClients::for_server(&config).map_err(|e| CliError::Failed(e.to_string()))?;
    let path = &args.kcp.workspace;
    let cluster = if args.create_workspace {
        workspace::ensure(&clients, path, Duration::from_secs(60)).await
    } else {
        workspace::resolve(&clients, path).await
    }
    .map_err(|e| CliError::Failed(format!("{e}\n  fix: create the workspace first, or pass --create-workspace")))?;
    let schemas = export::schemas().map_err(|e| CliError::Failed(e.to_string()))?;
    let report = install::install(&clients, &cluster, &args.kcp.export_name, &schemas)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    for s in &report.schemas_created {
        println!("apiresourceschema/{s} created");
    }
    for s in &report.schemas_pruned {
        println!("apiresourceschema/{s} deleted (no longer exported)");
    }
    let export_state = if report.export_written { "configured" } else { "unchanged" };
    println!("apiexport/{} {export_state} in workspace {path} (logical cluster {cluster})", args.kcp.export_name);
    Ok(())
}
