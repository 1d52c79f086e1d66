//! APIResourceSchemas from CustomResourceDefinitions.
//!
//! kcp serves exported APIs from immutable APIResourceSchemas. Each schema here is converted
//! field by field from the CRD that kube's derive (or [`super::workload`]) produces, and named
//! `<content hash>.<plural>.<group>`: a changed schema gets a new name, an unchanged one keeps
//! its name, so `tmc install` can re-run safely.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

/// The API group and version of kcp's APIs API.
pub const APIS_GROUP_VERSION: &str = "apis.kcp.io/v1alpha1";

/// An APIResourceSchema ready to be created in kcp.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceSchema {
    /// `<prefix>.<plural>.<group or "core">`.
    pub name: String,
    /// Plural resource name, e.g. `synctargets`.
    pub plural: String,
    /// API group; empty for the core group.
    pub group: String,
    /// The full object (`apiVersion`, `kind`, `metadata`, `spec`).
    pub object: Value,
}

/// Why a CRD could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("CRD {0} has no versions")]
    NoVersions(String),
    #[error("CRD {crd} cannot be serialized: {source}")]
    Serialize { crd: String, source: serde_json::Error },
    #[error("CRD not exportable: {0}")]
    Rejected(String),
}

/// Converts a CRD into an APIResourceSchema named by the hash of its spec.
pub fn from_crd(crd: &CustomResourceDefinition) -> Result<ResourceSchema, SchemaError> {
    let crd_name = crd.metadata.name.clone().unwrap_or_default();
    let spec =
        serde_json::to_value(&crd.spec).map_err(|source| SchemaError::Serialize { crd: crd_name.clone(), source })?;
    let versions = spec["versions"].as_array().filter(|v| !v.is_empty()).ok_or(SchemaError::NoVersions(crd_name))?;
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut out = json!({
                "name": v["name"],
                "served": v["served"],
                "storage": v["storage"],
                "schema": v["schema"]["openAPIV3Schema"],
            });
            for field in
                ["subresources", "additionalPrinterColumns", "deprecated", "deprecationWarning", "selectableFields"]
            {
                if !v[field].is_null() {
                    out[field] = v[field].clone();
                }
            }
            out
        })
        .collect();
    let group = crd.spec.group.clone();
    let plural = crd.spec.names.plural.clone();
    // CRDs default listKind on the server; APIResourceSchemas require it.
    let mut names = spec["names"].clone();
    if names["listKind"].is_null() {
        names["listKind"] = json!(format!("{}List", crd.spec.names.kind));
    }
    let schema_spec = json!({
        "group": group,
        "names": names,
        "scope": spec["scope"],
        "versions": versions,
    });
    let name =
        format!("{}.{}.{}", content_prefix(&schema_spec), plural, if group.is_empty() { "core" } else { &group });
    let object = json!({
        "apiVersion": APIS_GROUP_VERSION,
        "kind": "APIResourceSchema",
        "metadata": { "name": name },
        "spec": schema_spec,
    });
    Ok(ResourceSchema { name, plural, group, object })
}

/// Joins the hard-wrapped lines of doc comments in every `description` of a CRD, so that
/// `kubectl explain` re-wraps the text for the terminal. Blank lines (paragraphs) and lines
/// that start a list item or an indented block are kept.
pub fn reflow_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    reflow(&mut value);
    serde_json::from_value(value).expect("reflowing descriptions keeps a valid CRD")
}

fn reflow(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(text) if k == "description" => *text = reflow_text(text),
                    _ => reflow(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(reflow),
        _ => {}
    }
}

/// `"a\nb\n\nc\n- d"` -> `"a b\n\nc\n- d"`.
pub fn reflow_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut prev = '\0';
    while let Some(c) = chars.next() {
        if c == '\n' {
            let next = chars.peek().copied().unwrap_or('\n');
            let keep = prev == '\n' || matches!(next, '\n' | '-' | '*' | ' ' | '\t');
            out.push(if keep { '\n' } else { ' ' });
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// A name prefix that changes whenever `spec` changes: `v` and 12 hex digits of its SHA-256.
/// kcp requires the prefix to start with a letter, hence the `v`.
pub fn content_prefix(spec: &Value) -> String {
    // serde_json's map is ordered by key, so the serialization is canonical.
    format!("v{}", crate::json::sha256_hex(spec.to_string().as_bytes(), 6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::sync::v1alpha1::SyncTarget;
    use kube::CustomResourceExt;

    #[test]
    fn synctarget_schema_shape() {
        let s = from_crd(&SyncTarget::crd()).unwrap();
        assert_eq!(s.plural, "synctargets");
        assert_eq!(s.group, "sync.kcp.io");
        assert!(s.name.ends_with(".synctargets.sync.kcp.io"), "{}", s.name);
        let prefix = s.name.split('.').next().unwrap();
        assert!(prefix.starts_with('v') && prefix.len() == 13, "{prefix}");
        let spec = &s.object["spec"];
        assert_eq!(spec["scope"], "Cluster");
        assert_eq!(spec["names"]["kind"], "SyncTarget");
        assert_eq!(spec["names"]["listKind"], "SyncTargetList", "kcp requires listKind");
        let v = &spec["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["schema"]["type"], "object");
        assert!(v["subresources"]["status"].is_object());
        assert!(v["additionalPrinterColumns"].as_array().unwrap().len() >= 3);
    }

    #[test]
    fn name_follows_content() {
        let a = from_crd(&SyncTarget::crd()).unwrap();
        let b = from_crd(&SyncTarget::crd()).unwrap();
        assert_eq!(a.name, b.name, "same content, same name");
        let mut crd = SyncTarget::crd();
        crd.spec.versions[0].served = false;
        let c = from_crd(&crd).unwrap();
        assert_ne!(a.name, c.name, "changed content, new name");
    }

    #[test]
    fn core_group_is_named_core() {
        let mut crd = SyncTarget::crd();
        crd.spec.group = String::new();
        crd.spec.names.plural = "services".into();
        let s = from_crd(&crd).unwrap();
        assert!(s.name.ends_with(".services.core"), "{}", s.name);
        assert_eq!(s.object["spec"]["group"], "");
    }

    #[test]
    fn reflowed_text() {
        let cases = [
            ("one line", "one line"),
            ("wrapped\nline", "wrapped line"),
            ("para one\n\npara two", "para one\n\npara two"),
            ("list:\n- a\n- b", "list:\n- a\n- b"),
            ("code:\n    x = 1", "code:\n    x = 1"),
        ];
        for (input, want) in cases {
            assert_eq!(reflow_text(input), want, "{input:?}");
        }
        let crd = reflow_descriptions(SyncTarget::crd());
        let text = serde_json::to_string(&crd).unwrap();
        assert!(!text.contains("the manager\\nitself"), "doc comment wrapping left in descriptions");
    }

    #[test]
    fn crd_without_versions_is_an_error() {
        let mut crd = SyncTarget::crd();
        crd.spec.versions.clear();
        assert!(matches!(from_crd(&crd), Err(SchemaError::NoVersions(_))));
    }
}
