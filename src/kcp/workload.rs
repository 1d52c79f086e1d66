//! Schemas for the workload APIs kcp does not serve itself (Deployments, StatefulSets,
//! DaemonSets, Jobs, Services).
//!
//! kcp serves ConfigMaps, Secrets and Namespaces natively but none of these; tenants get them
//! from kcp-tmc's APIExport. Their schemas are generated from
//! k8s-openapi's own types, with the same schemars settings kube uses for CRDs, then made
//! structural: `metadata` is left to the server, and the scale and status subresources and
//! familiar printer columns are added.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceScale,
    CustomResourceSubresourceStatus, CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde_json::{Value, json};

/// The CRD-shaped definition of `deployments.apps/v1`.
pub fn deployment_crd() -> CustomResourceDefinition {
    let names = names("Deployment", "deployments", "deployment", &["deploy"], &["all"]);
    let columns = vec![
        column("Ready", "integer", ".status.readyReplicas", "Pods ready"),
        column("Up-to-date", "integer", ".status.updatedReplicas", "Pods at the latest template"),
        column("Available", "integer", ".status.availableReplicas", "Pods available"),
        column("Age", "date", ".metadata.creationTimestamp", ""),
    ];
    crd("apps", names, schema_of::<Deployment>(), columns, Some(replicas_scale()))
}

/// The CRD-shaped definition of `statefulsets.apps/v1`.
pub fn statefulset_crd() -> CustomResourceDefinition {
    let names = names("StatefulSet", "statefulsets", "statefulset", &["sts"], &["all"]);
    let columns = vec![
        column("Ready", "integer", ".status.readyReplicas", "Pods ready"),
        column("Age", "date", ".metadata.creationTimestamp", ""),
    ];
    crd("apps", names, schema_of::<StatefulSet>(), columns, Some(replicas_scale()))
}

/// The CRD-shaped definition of `daemonsets.apps/v1`.
pub fn daemonset_crd() -> CustomResourceDefinition {
    let names = names("DaemonSet", "daemonsets", "daemonset", &["ds"], &["all"]);
    let columns = vec![
        column("Desired", "integer", ".status.desiredNumberScheduled", "Pods wanted, over every cluster"),
        column("Ready", "integer", ".status.numberReady", "Pods ready"),
        column("Available", "integer", ".status.numberAvailable", "Pods available"),
        column("Age", "date", ".metadata.creationTimestamp", ""),
    ];
    crd("apps", names, schema_of::<DaemonSet>(), columns, None)
}

/// The CRD-shaped definition of `jobs.batch/v1`.
pub fn job_crd() -> CustomResourceDefinition {
    let names = names("Job", "jobs", "job", &[], &["all"]);
    let columns = vec![
        column("Succeeded", "integer", ".status.succeeded", "Pods succeeded, over every cluster"),
        column("Active", "integer", ".status.active", "Pods running"),
        column("Complete", "string", r#".status.conditions[?(@.type=="Complete")].status"#, "Complete everywhere"),
        column("Age", "date", ".metadata.creationTimestamp", ""),
    ];
    crd("batch", names, schema_of::<Job>(), columns, None)
}

/// The CRD-shaped definition of core `services/v1`.
pub fn service_crd() -> CustomResourceDefinition {
    let names = names("Service", "services", "service", &["svc"], &["all"]);
    let columns = vec![
        column("Type", "string", ".spec.type", "How the service is exposed"),
        column("Cluster-IP", "string", ".spec.clusterIP", "Set by the physical cluster"),
        column("Age", "date", ".metadata.creationTimestamp", ""),
    ];
    crd("", names, schema_of::<Service>(), columns, None)
}

/// The scale subresource of the `apps` kinds: `spec.replicas` and `status.replicas`.
fn replicas_scale() -> CustomResourceSubresourceScale {
    CustomResourceSubresourceScale {
        spec_replicas_path: ".spec.replicas".into(),
        status_replicas_path: ".status.replicas".into(),
        label_selector_path: None,
    }
}

fn names(
    kind: &str,
    plural: &str,
    singular: &str,
    short: &[&str],
    categories: &[&str],
) -> CustomResourceDefinitionNames {
    CustomResourceDefinitionNames {
        kind: kind.into(),
        list_kind: Some(format!("{kind}List")),
        plural: plural.into(),
        singular: Some(singular.into()),
        short_names: Some(short.iter().map(|s| s.to_string()).collect()),
        categories: Some(categories.iter().map(|s| s.to_string()).collect()),
    }
}

fn column(name: &str, type_: &str, path: &str, description: &str) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        description: (!description.is_empty()).then(|| description.into()),
        ..Default::default()
    }
}

fn crd(
    group: &str,
    names: CustomResourceDefinitionNames,
    schema: JSONSchemaProps,
    columns: Vec<CustomResourceColumnDefinition>,
    scale: Option<CustomResourceSubresourceScale>,
) -> CustomResourceDefinition {
    let group_suffix = if group.is_empty() { "core".to_string() } else { group.to_string() };
    CustomResourceDefinition {
        metadata: ObjectMeta { name: Some(format!("{}.{group_suffix}", names.plural)), ..Default::default() },
        spec: CustomResourceDefinitionSpec {
            group: group.into(),
            names,
            scope: "Namespaced".into(),
            versions: vec![CustomResourceDefinitionVersion {
                name: "v1".into(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation { open_api_v3_schema: Some(schema) }),
                subresources: Some(CustomResourceSubresources {
                    // `{}` enables the subresource; the wrapped value must not be null.
                    status: Some(CustomResourceSubresourceStatus(json!({}))),
                    scale,
                }),
                additional_printer_columns: Some(columns),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    }
}

/// The structural OpenAPI v3 schema of a k8s-openapi type, as kube generates it for CRDs.
fn schema_of<T: JsonSchema>() -> JSONSchemaProps {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    let mut value = serde_json::to_value(generator.into_root_schema_for::<T>()).expect("schemars output is JSON");
    make_structural(&mut value);
    serde_json::from_value(value).expect("generated schema is a valid JSONSchemaProps")
}

/// Post-processing the server requires of a CRD schema: metadata belongs to the API server,
/// and `apiVersion`/`kind` are plain strings.
fn make_structural(root: &mut Value) {
    if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("metadata".into(), json!({ "type": "object" }));
        props.insert("apiVersion".into(), json!({ "type": "string" }));
        props.insert("kind".into(), json!({ "type": "string" }));
    }
    if let Some(obj) = root.as_object_mut() {
        obj.remove("required");
        obj.remove("title");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(crd: &CustomResourceDefinition) -> Value {
        serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
            .unwrap()
    }

    fn find_refs(v: &Value, found: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        found.push(v.to_string());
                    }
                    find_refs(v, found);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| find_refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn deployment_schema_is_structural() {
        let crd = deployment_crd();
        let s = schema(&crd);
        let mut refs = vec![];
        find_refs(&s, &mut refs);
        assert!(refs.is_empty(), "schemas must be inlined: {refs:?}");
        assert_eq!(s["properties"]["metadata"], json!({"type": "object"}));
        let replicas = &s["properties"]["spec"]["properties"]["replicas"];
        assert_eq!(replicas["type"], "integer");
        let max_surge =
            &s["properties"]["spec"]["properties"]["strategy"]["properties"]["rollingUpdate"]["properties"]["maxSurge"];
        assert_eq!(max_surge["x-kubernetes-int-or-string"], true);
        assert!(s["properties"]["status"]["properties"]["availableReplicas"].is_object());
        assert_eq!(crd.spec.group, "apps");
        let sub = crd.spec.versions[0].subresources.as_ref().unwrap();
        assert!(sub.scale.is_some());
        assert_eq!(
            sub.status.as_ref().map(|s| s.0.clone()),
            Some(json!({})),
            "status subresource must be {{}}, not null"
        );
    }

    #[test]
    fn more_workload_schemas_are_structural_and_scale_where_kubernetes_does() {
        // (definition, group, plural, has a scale subresource)
        let cases = [
            (statefulset_crd(), "apps", "statefulsets", true),
            (daemonset_crd(), "apps", "daemonsets", false),
            (job_crd(), "batch", "jobs", false),
        ];
        for (crd, group, plural, scales) in cases {
            let s = schema(&crd);
            let mut refs = vec![];
            find_refs(&s, &mut refs);
            assert!(refs.is_empty(), "{plural}: schemas must be inlined: {refs:?}");
            assert_eq!((crd.spec.group.as_str(), crd.spec.names.plural.as_str()), (group, plural));
            assert_eq!(crd.spec.versions[0].subresources.as_ref().unwrap().scale.is_some(), scales, "{plural}");
            assert!(s["properties"]["status"].is_object(), "{plural}");
        }
    }

    #[test]
    fn service_schema_is_core_group() {
        let crd = service_crd();
        assert_eq!(crd.spec.group, "");
        assert_eq!(crd.spec.names.plural, "services");
        let s = schema(&crd);
        assert_eq!(s["properties"]["spec"]["properties"]["ports"]["type"], "array");
    }
}
