//! `tmc install`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

use super::{CliError, KcpArgs, load_kube_config};
use crate::kcp::{ClusterClients, export, install, workspace};

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub kcp: KcpArgs,

    /// Create the workspace (as type universal) if it does not exist; its parent must exist.
    #[arg(long, env = "TMC_CREATE_WORKSPACE")]
    pub create_workspace: bool,

    /// A YAML file of namespaced CustomResourceDefinitions to export as workload APIs too, so
    /// tenants can sync them (list their kinds in a SyncTarget's spec.supportedAPIs). Repeat
    /// for several files. The export is declarative: APIs from an earlier install that are not
    /// given again are removed from it.
    #[arg(long = "workload-crd", env = "TMC_WORKLOAD_CRDS", value_delimiter = ',')]
    pub workload_crds: Vec<PathBuf>,
}

/// Reads the CRDs in `path` (one or more YAML documents).
fn read_crds(path: &PathBuf) -> Result<Vec<CustomResourceDefinition>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Failed(format!("cannot read --workload-crd {}: {e}", path.display())))?;
    let mut out = vec![];
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| CliError::Failed(format!("--workload-crd {} is not YAML: {e}", path.display())))?;
        if value.is_null() {
            continue;
        }
        let crd: CustomResourceDefinition = serde_yaml::from_value(value).map_err(|e| {
            CliError::Failed(format!(
                "--workload-crd {}: not a CustomResourceDefinition (apiextensions.k8s.io/v1): {e}",
                path.display()
            ))
        })?;
        out.push(crd);
    }
    Ok(out)
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
    let mut workload_crds = vec![];
    for path in &args.workload_crds {
        workload_crds.extend(read_crds(path)?);
    }
    let schemas = export::schemas(&workload_crds).map_err(|e| CliError::Failed(e.to_string()))?;
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
