//! `tmc install`: create the APIResourceSchemas and point the APIExport at them.
//!
//! Idempotent: schemas are named by their content, so an unchanged schema is never written
//! again, and the APIExport is only applied when what it says differs from what we want.
//! After a schema change the export moves to the new schema names and the schemas this tool
//! created earlier and no longer references are deleted.

use std::collections::BTreeSet;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

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
        is_subset(&desired["spec"], &current["spec"])
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

/// True when every field set in `want` has the same value in `have`. Arrays must have the same
/// length and match element by element; fields the server adds (defaults) are ignored,
/// and empty values match absent ones (the server omits them).
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, v)| is_subset(v, h.get(k).unwrap_or(&Value::Null))),
        // The server omits empty values: a wanted empty value matches an absent one.
        (Value::Object(w), Value::Null) => w.is_empty(),
        (Value::Array(w), Value::Null) => w.is_empty(),
        (Value::Array(w), Value::Array(h)) => w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b)),
        (Value::String(w), Value::Null) => w.is_empty(),
        (w, h) => w == h,
    }
}

/// The path of the first field where [`is_subset`] fails, for logs (`None`: `want ⊆ have`).
pub fn first_difference(want: &Value, have: &Value) -> Option<String> {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .find_map(|(k, v)| first_difference(v, h.get(k).unwrap_or(&Value::Null)).map(|rest| format!(".{k}{rest}"))),
        (Value::Array(w), Value::Array(h)) if w.len() == h.len() => w
            .iter()
            .zip(h)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(a, b).map(|rest| format!("[{i}]{rest}"))),
        _ if is_subset(want, have) => None,
        _ => Some(format!(" (want {want}, have {have})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_comparison() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1, "b": 2}), true),
            (json!({"a": 1}), json!({"a": 2}), false),
            (json!({"a": [1, 2]}), json!({"a": [1, 2]}), true),
            (json!({"a": [1, 2]}), json!({"a": [1, 2, 3]}), false),
            (json!({"a": [{"x": 1}]}), json!({"a": [{"x": 1, "y": 0}]}), true),
            (json!({"a": {}}), json!({}), true),
            (json!({"a": {"b": 1}}), json!({}), false),
            (json!({"a": []}), json!({}), true),
            (json!({"crd": {}}), json!({"crd": null}), true),
            (json!({"group": ""}), json!({}), true),
            (json!({"group": "apps"}), json!({}), false),
            (json!({"group": ""}), json!({"group": null}), true),
            (json!({"a": "x"}), json!({"a": "y"}), false),
        ];
        for (want, have, expected) in cases {
            assert_eq!(is_subset(&want, &have), expected, "{want} ⊆ {have}");
            assert_eq!(first_difference(&want, &have).is_none(), expected, "{want} vs {have}");
        }
        assert_eq!(
            first_difference(&json!({"a": [{"x": 1}]}), &json!({"a": [{"x": 2}]})).as_deref(),
            Some(".a[0].x (want 1, have 2)")
        );
    }
}
