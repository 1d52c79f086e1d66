//! The comparison at the end: every churned object in kcp against its copies in both clusters,
//! object by object (name and a hash of the content the churn varies), and the kcp objects left
//! in deletion.

use std::collections::BTreeMap;

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::churn::{Kind, SLOTS};
use crate::world::{NAMESPACE, SOAK_LABEL, World};

/// (cluster index, downstream namespace, kind, name).
type Key = (usize, String, String, String);

/// What differs between kcp and the clusters; empty when they agree exactly.
#[derive(Debug, Default)]
pub struct Diff {
    /// Objects in kcp that are expected downstream.
    pub expected: usize,
    pub missing: Vec<String>,
    /// Downstream objects of the churn that kcp does not hold (or not for that namespace).
    pub orphans: Vec<String>,
    pub different: Vec<String>,
    /// kcp objects (or churn namespaces) with a deletionTimestamp: a finalizer not released.
    pub terminating: Vec<String>,
}

impl Diff {
    pub fn equal(&self) -> bool {
        self.missing.is_empty() && self.orphans.is_empty() && self.different.is_empty()
    }

    pub fn describe(&self) -> String {
        let few = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        format!(
            "{} expected; {} missing [{}]; {} orphans [{}]; {} different [{}]; {} terminating in kcp [{}]",
            self.expected,
            self.missing.len(),
            few(&self.missing),
            self.orphans.len(),
            few(&self.orphans),
            self.different.len(),
            few(&self.different),
            self.terminating.len(),
            few(&self.terminating)
        )
    }
}

/// A hash of what the churn varies in an object of `kind`: its labels `soak` and `rev` and its
/// data (ConfigMap, Secret) or replicas and container images (Deployment).
pub fn fingerprint(kind: Kind, obj: &Value) -> String {
    let labels = &obj["metadata"]["labels"];
    let content = match kind {
        Kind::ConfigMap | Kind::Secret => obj["data"].clone(),
        // Only what the churn writes: the cluster defaults fields (imagePullPolicy, …) that
        // kcp's schema does not.
        Kind::Deployment => {
            let containers = obj["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
            let written: Vec<Value> = containers.iter().map(|c| json!([c["name"], c["image"]])).collect();
            json!([obj["spec"]["replicas"], written])
        }
    };
    let canonical = json!([labels[SOAK_LABEL], labels["rev"], content]).to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares kcp with both clusters once.
pub async fn compare(w: &World) -> Result<Diff, String> {
    let selector = ListParams::default().labels(&format!("{SOAK_LABEL}=yes"));
    let mut expected: BTreeMap<Key, String> = BTreeMap::new();
    let mut actual: BTreeMap<Key, String> = BTreeMap::new();
    let mut diff = Diff::default();
    for &(kind, _) in &SLOTS {
        let resource = kind.resource();
        for t in &w.tenants {
            let client = w.clients.path(&t.path.parse().map_err(|e| format!("{e}"))?);
            let api: Api<DynamicObject> = Api::namespaced_with(client, NAMESPACE, &resource);
            for obj in api.list(&selector).await.map_err(|e| format!("list {} in {}: {e}", resource.kind, t.path))? {
                let name = obj.metadata.name.clone().unwrap_or_default();
                if obj.metadata.deletion_timestamp.is_some() {
                    let finalizers = obj.metadata.finalizers.clone().unwrap_or_default().join(" ");
                    let since = obj.metadata.deletion_timestamp.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
                    let what = format!("{}/{NAMESPACE}/{}/{name} since {since} [{finalizers}]", t.path, resource.kind);
                    diff.terminating.push(what);
                    continue;
                }
                let fp = fingerprint(kind, &serde_json::to_value(&obj).map_err(|e| e.to_string())?);
                for (i, ns) in t.downstream.iter().enumerate() {
                    expected.insert((i, ns.clone(), resource.kind.clone(), name.clone()), fp.clone());
                }
            }
        }
        for (i, client) in w.downstream.iter().enumerate() {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            for obj in api.list(&selector).await.map_err(|e| format!("list {} in cluster {i}: {e}", resource.kind))? {
                let ns = obj.metadata.namespace.clone().unwrap_or_default();
                let name = obj.metadata.name.clone().unwrap_or_default();
                let fp = fingerprint(kind, &serde_json::to_value(&obj).map_err(|e| e.to_string())?);
                actual.insert((i, ns, resource.kind.clone(), name), fp);
            }
        }
    }
    for t in &w.tenants {
        let client = w.clients.path(&t.path.parse().map_err(|e| format!("{e}"))?);
        let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(client).get(NAMESPACE).await;
        if ns.map_err(|e| e.to_string())?.metadata.deletion_timestamp.is_some() {
            diff.terminating.push(format!("{}/namespace/{NAMESPACE}", t.path));
        }
    }
    diff.expected = expected.len();
    let show = |(i, ns, kind, name): &Key| format!("cluster-{}:{ns}/{kind}/{name}", i + 1);
    for (key, fp) in &expected {
        match actual.get(key) {
            None => diff.missing.push(show(key)),
            Some(got) if got != fp => diff.different.push(show(key)),
            Some(_) => {}
        }
    }
    diff.orphans = actual.keys().filter(|k| !expected.contains_key(*k)).map(show).collect();
    Ok(diff)
}
