//! The servers' own evidence: downstream objects with their UIDs, resourceVersions and data; the
//! cluster's request counters by verb from the kube-apiserver's /metrics; kcp objects stuck in
//! deletion behind a finalizer.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::env::Kcp;

/// One downstream object as the cluster stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Copy {
    pub uid: String,
    pub resource_version: String,
    pub data: Value,
}

/// Objects of `kind` in the downstream namespace `ns`, by name (the cluster's own
/// `kube-root-ca.crt` left out).
pub fn downstream(cluster: &Cluster, ns: &str, kind: &str) -> Result<BTreeMap<String, Copy>, String> {
    copies(&cluster.kubectl(&["-n", ns, "get", kind, "-o", "json", "--chunk-size=2000"])?)
}

/// Objects of `kind` in kcp's `ws`/`ns` matching the label `selector`, by name.
pub fn upstream(kcp: &Kcp, ws: &str, ns: &str, kind: &str, selector: &str) -> Result<BTreeMap<String, Copy>, String> {
    copies(&kcp.kubectl(ws, &["-n", ns, "get", kind, "-l", selector, "-o", "json"], None)?)
}

/// The objects of a `kubectl get -o json` list, by name (`kube-root-ca.crt` left out).
fn copies(out: &str) -> Result<BTreeMap<String, Copy>, String> {
    let list: Value = serde_json::from_str(out).map_err(|e| e.to_string())?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["metadata"]["name"] != "kube-root-ca.crt")
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let copy = Copy {
                uid: o["metadata"]["uid"].as_str().unwrap_or_default().into(),
                resource_version: o["metadata"]["resourceVersion"].as_str().unwrap_or_default().into(),
                data: o["data"].clone(),
            };
            (name, copy)
        })
        .collect())
}

/// `apiserver_request_total` of this kube-apiserver process for `resource`, summed by verb
/// (counters restart at zero with the process).
pub fn requests(cluster: &Cluster, resource: &str) -> Result<BTreeMap<String, u64>, String> {
    let metrics = cluster.kubectl(&["get", "--raw", "/metrics"])?;
    let mut by_verb = BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        if !line.contains(&format!("resource=\"{resource}\"")) {
            continue;
        }
        let verb = line.split("verb=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or_default();
        let n = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()).unwrap_or_default() as u64;
        *by_verb.entry(verb.to_string()).or_insert(0) += n;
    }
    Ok(by_verb)
}

pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, verb: &str) -> u64 {
    after.get(verb).copied().unwrap_or(0).saturating_sub(before.get(verb).copied().unwrap_or(0))
}

/// Writes (create, update, patch, apply) between two counter snapshots.
pub fn writes(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> u64 {
    ["POST", "PUT", "PATCH", "APPLY"].iter().map(|v| delta(before, after, v)).sum()
}

/// kcp objects in `ws` that are being deleted but still hold a finalizer (kind/ns/name: finalizers).
pub fn stuck_in_kcp(kcp: &Kcp, ws: &str, kinds: &str) -> Result<Vec<String>, String> {
    let out = kcp.kubectl(ws, &["get", kinds, "-A", "-o", "json"], None)?;
    let list: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| !o["metadata"]["deletionTimestamp"].is_null())
        .map(|o| {
            let m = &o["metadata"];
            format!("{}/{}/{}: {}", o["kind"], m["namespace"], m["name"], m["finalizers"])
        })
        .collect())
}

/// Compares the downstream copies with what kcp holds (`want`: name → data): missing names,
/// extra names (orphans) and copies with other data.
pub fn diff(want: &BTreeMap<String, Value>, got: &BTreeMap<String, Copy>) -> Vec<String> {
    let mut problems = vec![];
    for (name, data) in want {
        match got.get(name) {
            None => problems.push(format!("missing {name}")),
            Some(c) if &c.data != data => problems.push(format!("{name} has {} not {data}", c.data)),
            Some(_) => {}
        }
    }
    problems.extend(got.keys().filter(|n| !want.contains_key(*n)).map(|n| format!("orphan {n}")));
    problems
}

/// Names whose UID changed between two snapshots (deleted and recreated), or that vanished.
pub fn recreated(before: &BTreeMap<String, Copy>, after: &BTreeMap<String, Copy>) -> Vec<String> {
    before
        .iter()
        .filter(|(n, c)| after.get(*n).is_none_or(|a| a.uid != c.uid))
        .map(|(n, c)| format!("{n} (uid {} -> {:?})", c.uid, after.get(n).map(|a| &a.uid)))
        .collect()
}
