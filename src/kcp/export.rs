//! The APIExport through which tenant workspaces get kcp-tmc's APIs.
//!
//! One export carries everything a tenant binds: the `SyncTarget` and `Placement` APIs, the
//! workload APIs kcp does not serve (Deployments, Services), and permission claims for the
//! built-in resources the manager and syncer must read and write in the tenant's workspace.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::schema::{self, ResourceSchema, SchemaError};
use super::workload;
use crate::apis::placement::v1alpha1::Placement;
use crate::apis::sync::v1alpha1::SyncTarget;

/// Default name of the APIExport (and of its endpoint slice).
pub const DEFAULT_EXPORT_NAME: &str = "tmc.kcp.io";
/// API version used for APIExports and APIBindings.
pub const APIS_V1ALPHA2: &str = "apis.kcp.io/v1alpha2";
/// Label put on every object `tmc install` writes, so they can be found and pruned.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "kcp-tmc";

/// A built-in resource the export claims access to in bound workspaces, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// The claims tenants accept in their APIBinding.
/// - `secrets`: kubeconfigs referenced by `SyncTarget.spec.kubeconfigSecretRef`, and Secrets
///   synced to clusters; created and deleted only as copies from a cluster a Placement's
///   `spec.upsync` asks for;
/// - `configmaps`: ConfigMaps synced to clusters; created and deleted likewise;
/// - `namespaces`: the unit of placement; the assignment marker is written on them;
/// - `events`: Warnings on objects that could not be synced, and why. Claimed as core `events`:
///   kcp's virtual-workspace authorizer normalises `events.k8s.io` requests to the core group
///   before matching claims, so a claim in `events.k8s.io` never matches.
pub const CLAIMS: &[Claim] = &[
    Claim { group: "", resource: "secrets", verbs: &["get", "list", "watch", "create", "update", "patch", "delete"] },
    Claim {
        group: "",
        resource: "configmaps",
        verbs: &["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    Claim { group: "", resource: "namespaces", verbs: &["get", "list", "watch", "update", "patch"] },
    Claim { group: "", resource: "events", verbs: &["create", "patch"] },
];

/// The CRDs of kcp-tmc's own APIs, with descriptions ready for `kubectl explain`.
pub fn own_crds() -> Vec<CustomResourceDefinition> {
    [SyncTarget::crd(), Placement::crd()].into_iter().map(schema::reflow_descriptions).collect()
}

/// The APIResourceSchemas of every exported resource, in a stable order: kcp-tmc's own APIs,
/// the built-in workload APIs, then `extra` workload CRDs (`tmc install --workload-crd`), which
/// must be namespaced and must not collide with an API already exported or claimed.
pub fn schemas(extra: &[CustomResourceDefinition]) -> Result<Vec<ResourceSchema>, SchemaError> {
    let mut crds = own_crds();
    crds.extend([
        workload::deployment_crd(),
        workload::statefulset_crd(),
        workload::daemonset_crd(),
        workload::job_crd(),
        workload::service_crd(),
    ]);
    for crd in extra {
        let (group, plural) = (&crd.spec.group, &crd.spec.names.plural);
        if crd.spec.scope != "Namespaced" {
            return Err(SchemaError::Rejected(format!(
                "{plural}.{group} is {}-scoped: only namespaced APIs can be synced",
                crd.spec.scope
            )));
        }
        let taken = crds.iter().any(|c| c.spec.group == *group && c.spec.names.plural == *plural)
            || CLAIMS.iter().any(|c| c.group == group && c.resource == plural);
        if taken {
            return Err(SchemaError::Rejected(format!("{plural}.{group} is already exported or claimed by kcp-tmc")));
        }
        crds.push(schema::reflow_descriptions(crd.clone()));
    }
    crds.iter().map(schema::from_crd).collect()
}

/// The APIExport object pointing at `schemas`.
pub fn api_export(name: &str, schemas: &[ResourceSchema]) -> Value {
    let resources: Vec<Value> = schemas
        .iter()
        .map(|s| json!({ "name": s.plural, "group": s.group, "schema": s.name, "storage": { "crd": {} } }))
        .collect();
    let claims: Vec<Value> =
        CLAIMS.iter().map(|c| json!({ "group": c.group, "resource": c.resource, "verbs": c.verbs })).collect();
    json!({
        "apiVersion": APIS_V1ALPHA2,
        "kind": "APIExport",
        "metadata": { "name": name, "labels": { MANAGED_BY_LABEL: MANAGED_BY_VALUE } },
        "spec": { "resources": resources, "permissionClaims": claims },
    })
}

/// An APIBinding a tenant applies to bind `export_name` from the workspace `export_path`,
/// accepting every claim for all objects.
pub fn api_binding(export_path: &str, export_name: &str) -> Value {
    let claims: Vec<Value> = CLAIMS
        .iter()
        .map(|c| {
            json!({
                "group": c.group, "resource": c.resource, "verbs": c.verbs,
                "selector": { "matchAll": true }, "state": "Accepted",
            })
        })
        .collect();
    json!({
        "apiVersion": APIS_V1ALPHA2,
        "kind": "APIBinding",
        "metadata": { "name": export_name },
        "spec": {
            "reference": { "export": { "path": export_path, "name": export_name } },
            "permissionClaims": claims,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_every_resource() {
        let s = schemas(&[]).unwrap();
        let names: Vec<(&str, &str)> = s.iter().map(|s| (s.group.as_str(), s.plural.as_str())).collect();
        assert_eq!(
            names,
            [
                ("sync.kcp.io", "synctargets"),
                ("placement.kcp.io", "placements"),
                ("apps", "deployments"),
                ("apps", "statefulsets"),
                ("apps", "daemonsets"),
                ("batch", "jobs"),
                ("", "services")
            ]
        );
        let export = api_export("tmc.kcp.io", &s);
        let res = export["spec"]["resources"].as_array().unwrap();
        assert_eq!(res.len(), s.len());
        for (r, s) in res.iter().zip(&s) {
            assert_eq!(r["schema"], s.name.as_str());
            assert_eq!(r["storage"], json!({"crd": {}}));
        }
    }

    #[test]
    fn extra_workload_crds_are_exported_when_namespaced_and_new() {
        let crd = |group: &str, plural: &str, scope: &str| -> CustomResourceDefinition {
            serde_json::from_value(json!({
                "metadata": { "name": format!("{plural}.{group}") },
                "spec": {
                    "group": group, "scope": scope,
                    "names": { "plural": plural, "singular": "x", "kind": "X", "listKind": "XList" },
                    "versions": [{ "name": "v1", "served": true, "storage": true,
                        "schema": { "openAPIV3Schema": { "type": "object" } } }],
                },
            }))
            .unwrap()
        };
        let ok = schemas(&[crd("example.dev", "widgets", "Namespaced")]).unwrap();
        assert_eq!(ok.last().map(|s| (s.group.as_str(), s.plural.as_str())), Some(("example.dev", "widgets")));
        // (crd, expected error)
        let cases = [
            (crd("example.dev", "gadgets", "Cluster"), "gadgets.example.dev is Cluster-scoped"),
            (crd("apps", "deployments", "Namespaced"), "deployments.apps is already exported"),
            (crd("", "configmaps", "Namespaced"), "configmaps. is already exported or claimed"),
        ];
        for (crd, want) in cases {
            let err = schemas(&[crd]).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn claims_name_verbs_and_binding_accepts_them() {
        let export = api_export("x", &[]);
        let claims = export["spec"]["permissionClaims"].as_array().unwrap();
        let resources: Vec<&str> = claims.iter().map(|c| c["resource"].as_str().unwrap()).collect();
        assert_eq!(resources, ["secrets", "configmaps", "namespaces", "events"]);
        assert!(claims.iter().all(|c| !c["verbs"].as_array().unwrap().is_empty()));
        let binding = api_binding("root:tmc", "x");
        assert_eq!(binding["spec"]["reference"]["export"], json!({"path": "root:tmc", "name": "x"}));
        let accepted = binding["spec"]["permissionClaims"].as_array().unwrap();
        assert_eq!(accepted.len(), CLAIMS.len());
        assert!(accepted.iter().all(|c| c["state"] == "Accepted" && c["selector"]["matchAll"] == true));
    }
}
