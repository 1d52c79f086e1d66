//! `tmc install`: create the APIResourceSchemas and point the APIExport at them.
//!
//! Idempotent: schemas are named by their content, so an unchanged schema is never written
//! again, and the APIExport is only applied when what it says differs from what we want.
//! After a schema change the export moves to the new schema names and the schemas this tool
//! created earlier and no longer references are deleted.

use std::collections::BTreeSet;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

use super::client::ClusterClients;
use super::cluster::LogicalClusterName;
use super::export::{self, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use super::schema::ResourceSchema;

/// The field manager `tmc install` applies with.
pub const FIELD_MANAGER: &str = "tmc-install";

/// Errors while installing into kcp.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot {action}: {}", super::error_message(.source))]
    Api { action: String, source: kube::Error },
    #[error("object {0} is malformed: {1}")]
    Malformed(String, serde_json::Error),
}

/// What an install changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InstallReport {
    pub schemas_created: Vec<String>,
    pub export_written: bool,
    pub schemas_pruned: Vec<String>,
}

impl InstallReport {
    pub fn changed(&self) -> bool {
        !self.schemas_created.is_empty() || self.export_written || !self.schemas_pruned.is_empty()
    }
}

pub fn schema_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apis.kcp.io", "v1alpha1", "APIResourceSchema"),
        "apiresourceschemas",
    )
}

pub fn export_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apis.kcp.io", "v1alpha2", "APIExport"), "apiexports")
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> InstallError {
    let action = action.into();
    move |source| InstallError::Api { action, source }
}

/// Installs `schemas` and the APIExport `export_name` into the workspace `cluster`.
pub async fn install(
    clients: &ClusterClients,
    cluster: &LogicalClusterName,
    export_name: &str,
    schemas: &[ResourceSchema],
) -> Result<InstallReport, InstallError> {
    let client = clients.cluster(cluster);
    let schema_api: Api<DynamicObject> = Api::all_with(client.clone(), &schema_resource());
    let export_api: Api<DynamicObject> = Api::all_with(client, &export_resource());
    let mut report = InstallReport::default();

    for schema in schemas {
        if schema_api
            .get_opt(&schema.name)
            .await
            .map_err(api_err(format!("read APIResourceSchema {}", schema.name)))?
            .is_some()
        {
            continue;
        }
        let mut obj = schema.object.clone();
        obj["metadata"]["labels"] = serde_json::json!({ MANAGED_BY_LABEL: MANAGED_BY_VALUE });
        let obj: DynamicObject =
            serde_json::from_value(obj).map_err(|e| InstallError::Malformed(schema.name.clone(), e))?;
        match schema_api.create(&PostParams::default(), &obj).await {
            Ok(_) => report.schemas_created.push(schema.name.clone()),
            // Created concurrently by another install: same name means same content.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(api_err(format!("create APIResourceSchema {}", schema.name))(e)),
        }
    }

    let desired = export::api_export(export_name, schemas);
    let current = export_api.get_opt(export_name).await.map_err(api_err(format!("read APIExport {export_name}")))?;
    let up_to_date = current.as_ref().is_some_and(|c| {
        let current = serde_json::to_value(c).unwrap_or_default();
        crate::json::is_subset(&desired["spec"], &current["spec"])
    });
    if !up_to_date {
        export_api
            .patch(export_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired))
            .await
            .map_err(api_err(format!("apply APIExport {export_name}")))?;
        report.export_written = true;
    }

    let wanted: BTreeSet<&str> = schemas.iter().map(|s| s.name.as_str()).collect();
    let ours = schema_api
        .list_metadata(&ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")))
        .await
        .map_err(api_err("list APIResourceSchemas"))?;
    for old in ours.items.iter().filter_map(|o| o.metadata.name.as_deref()).filter(|n| !wanted.contains(n)) {
        match schema_api.delete(old, &DeleteParams::default()).await {
            Ok(_) => report.schemas_pruned.push(old.to_string()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_err(format!("delete unused APIResourceSchema {old}"))(e)),
        }
    }
    Ok(report)
}
