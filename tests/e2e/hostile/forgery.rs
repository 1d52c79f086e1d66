//! Forgeries: what a cluster user or a tenant can write that kcp-tmc reads as bookkeeping — a
//! copied locator annotation on a pre-created downstream namespace, per-target status and
//! workload-selector annotations, and an assignment label naming another workspace's target.

use std::sync::Arc;
use std::time::Duration;

use kcp_tmc::kcp::workspace;
use kcp_tmc::syncer::naming::{Locator, TargetRef};
use serde_json::{Value, json};

use super::{BYSTANDER_WS, Bystander};
use crate::env::{TestResult, eventually};
use crate::syncer::{WAIT, assigned_namespace, downstream_get, downstream_ns, events, list, register, upstream_get};
use crate::{TENANT_A, TENANT_B, World, ensure};

/// The bystander's SyncTarget (cluster 1), as `hostile/mod.rs` registers it.
const BYSTANDER_TARGET: &str = "bystander";

fn configmap(name: &str, labels: Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels},
           "data": {"k": "v"}})
    .to_string()
}

fn secret(name: &str, value: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"password": value}})
        .to_string()
}

/// Warning Events on the kcp namespace `ns` of `ws` with `reason` (namespace Events live in
/// `default`), as "note" strings.
fn namespace_events(w: &World, ws: &str, ns: &str, reason: &str) -> Result<Vec<String>, String> {
    let prefix = format!("\"Namespace\" {ns}: ");
    Ok(events(w, ws, "default", reason)?
        .into_iter()
        .filter_map(|e| e.strip_prefix(&prefix).map(str::to_string))
        .collect())
}

/// The bystander target's `tmc_syncer_operations_total` series: any write its syncer made.
async fn bystander_writes(w: &World, key: &str) -> Result<Vec<String>, String> {
    let (_, body) = crate::ops::get(&format!("{}/metrics", w.manager_metrics)).await?;
    let label = format!("sync_target=\"{key}\"");
    Ok(body
        .lines()
        .filter(|l| l.starts_with("tmc_syncer_operations_total{") && l.contains(&label))
        .map(String::from)
        .collect())
}

/// Secrets or ConfigMaps named `name` anywhere in cluster `index`.
fn anywhere(w: &World, index: usize, kind: &str, name: &str) -> Result<String, String> {
    w.clusters[index].kubectl(&["get", kind, "-A", "--field-selector", &format!("metadata.name={name}"), "-o", "name"])
}

/// Row: a cluster user pre-creates the tenant's downstream namespace, copying the locator
/// annotation and the target label, with a RoleBinding of their own. The syncer refuses it
/// (`DownstreamNamespaceConflict`) and the namespace receives none of the tenant's objects; once
/// it is gone, the syncer creates its own namespace, records its UID in kcp and syncs there.
pub async fn precreated_downstream_namespace_receives_nothing(w: Arc<World>) -> TestResult {
    let bystander = Bystander::get(&w).await?;
    let key = register(&w, TENANT_A, "forge-ns", 0).await?;
    let target_cluster = workspace::resolve(&w.clients, &TENANT_A.parse()?).await?;
    let target = TargetRef { cluster: target_cluster.to_string(), name: "forge-ns".into() };
    let locator = Locator::new(target, &target_cluster, "forge-ns");
    let dns = locator.downstream_namespace();
    let impostor = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": dns, "labels": { "tmc.kcp.io/target": key },
                      "annotations": { "tmc.kcp.io/namespace-locator": locator.to_annotation() } },
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "mallory-reads-all", "namespace": dns },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin" },
        "subjects": [{ "kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io" }],
    });
    w.clusters[0].kubectl_stdin(&["apply", "-f", "-"], &impostor.to_string())?;
    w.clusters[0].kubectl_stdin(&["apply", "-f", "-"], &binding.to_string())?;

    assigned_namespace(&w, TENANT_A, "forge-ns", &key)?;
    let objects = list(&[secret("tenant-secret", "tenant-a-password"), configmap("tenant-config", json!({}))]);
    w.kcp.kubectl(TENANT_A, &["-n", "forge-ns", "apply", "-f", "-"], Some(&objects))?;
    let found = eventually("DownstreamNamespaceConflict on both objects", WAIT, || async {
        let found = events(&w, TENANT_A, "forge-ns", "DownstreamNamespaceConflict")?;
        let both = ["tenant-secret", "tenant-config"].iter().all(|n| found.iter().any(|e| e.contains(n)));
        Ok(both.then_some(found))
    })
    .await?;
    ensure!(
        found.iter().all(|e| e.contains(&dns) && e.contains("was not created by kcp-tmc") && e.contains("forge-ns")),
        "events name the namespace, the cause and the target: {found:?}"
    );
    // Retried with backoff, never written into: check the cluster itself.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(downstream_get(&w, 0, &dns, "secret", "tenant-secret")?.is_none(), "the Secret reached the impostor");
    ensure!(downstream_get(&w, 0, &dns, "configmap", "tenant-config")?.is_none(), "the ConfigMap reached it");
    let ours = w.clusters[0].kubectl(&[
        "-n",
        &dns,
        "get",
        "secrets,configmaps",
        "-l",
        &format!("tmc.kcp.io/target={key}"),
        "-o",
        "name",
    ])?;
    ensure!(ours.trim().is_empty(), "objects of the syncer in the impostor namespace: {ours}");
    let ns = w.kcp.kubectl(TENANT_A, &["get", "namespace", "forge-ns", "-o", "json"], None)?;
    let ns: Value = serde_json::from_str(&ns)?;
    let record = format!("downstream.tmc.kcp.io/{key}");
    ensure!(ns["metadata"]["annotations"].get(&record).is_none(), "the impostor was recorded: {}", ns["metadata"]);

    // The cluster admin removes the impostor: the syncer creates its own namespace and proves it.
    w.clusters[0].kubectl(&["delete", "namespace", &dns, "--wait=true", "--timeout=60s"])?;
    // The refused objects are retried with backoff (up to minutes by now); a change syncs at once.
    for kind in ["secret/tenant-secret", "configmap/tenant-config"] {
        w.kcp.kubectl(TENANT_A, &["-n", "forge-ns", "annotate", kind, "retry=1"], None)?;
    }
    let synced = eventually("the Secret in the syncer's own namespace", Duration::from_secs(90), || async {
        downstream_get(&w, 0, &dns, "secret", "tenant-secret")
    })
    .await?;
    ensure!(synced["data"]["password"] == "dGVuYW50LWEtcGFzc3dvcmQ=", "secret data {}", synced["data"]);
    let ns = downstream_get(&w, 0, "", "namespace", &dns)?.ok_or("the syncer's namespace is gone")?;
    let uid = ns["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    ensure!(ns["metadata"]["annotations"].get("tmc.kcp.io/namespace-claim").is_some(), "no claim: {}", ns["metadata"]);
    let bindings = w.clusters[0].kubectl(&["-n", &dns, "get", "rolebindings", "-o", "name"])?;
    ensure!(!bindings.contains("mallory"), "the impostor's RoleBinding survived into the new namespace: {bindings}");
    eventually("the namespace's UID recorded in kcp", WAIT, || async {
        let up = w.kcp.kubectl(TENANT_A, &["get", "namespace", "forge-ns", "-o", "json"], None)?;
        let up: Value = serde_json::from_str(&up).map_err(|e| e.to_string())?;
        Ok((up["metadata"]["annotations"][&record].as_str() == Some(&format!("uid:{uid}"))).then_some(()))
    })
    .await?;
    bystander.untouched(&w).await?;
    Ok(())
}

/// Row: a tenant writes `status.tmc.kcp.io/<key>` entries on its own Deployment — for a target
/// its namespace names that does not run the object, for another tenant's target, and for the
/// target that does run it. Only entries of targets that run the object count (their syncer
/// finalizer is on it), and a running target's syncer overwrites a forged entry of its own;
/// the upstream status shows the one real cluster, and `Available` reads `NotOnAllTargets`.
pub async fn forged_status_annotations_do_not_drive_status(w: Arc<World>) -> TestResult {
    let bystander = Bystander::get(&w).await?;
    let writes_before = bystander_writes(&w, &bystander.target_key).await?;
    let key = register(&w, TENANT_B, "forge-status", 0).await?;
    // A second assignment to a key no target has: the namespace should run there, nothing does.
    let absent = "0000000000000000f0f0";
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: forge-status\n  labels: {{state.tmc.kcp.io/{key}: Sync, state.tmc.kcp.io/{absent}: Sync}}\n"
    );
    w.kcp.kubectl(TENANT_B, &["apply", "-f", "-"], Some(&yaml))?;
    let forged = |n: i64| {
        json!({"replicas": n, "readyReplicas": n, "availableReplicas": n, "observedGeneration": 1,
               "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]})
        .to_string()
    };
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "annotations": {
            format!("status.tmc.kcp.io/{absent}"): forged(50),
            format!("status.tmc.kcp.io/{}", bystander.target_key): forged(70),
        }},
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } },
                          "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }] } },
        },
    });
    w.kcp.kubectl(TENANT_B, &["-n", "forge-status", "apply", "-f", "-"], Some(&deployment.to_string()))?;
    let status = |d: &Value| {
        let available = d["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Available");
        (d["status"]["availableReplicas"].clone(), available.cloned().unwrap_or(Value::Null))
    };
    let (_, available) = eventually("the real cluster's one replica upstream", WAIT, || async {
        let d = upstream_get(&w, TENANT_B, "forge-status", "deployment", "web")?.ok_or("gone")?;
        let (replicas, available) = status(&d);
        Ok((replicas == 1 && !available.is_null()).then_some((replicas, available)))
    })
    .await?;
    ensure!(
        available["status"] == "False" && available["reason"] == "NotOnAllTargets",
        "Available with a target that does not run it: {available}"
    );
    let message = available["message"].as_str().unwrap_or_default();
    ensure!(message.contains(absent) && !message.contains(&key), "Available message: {message}");
    ensure!(!message.contains(&bystander.target_key), "another tenant's target shows up: {message}");

    // The running target's own entry, forged: its syncer puts the truth back.
    let own = format!("status.tmc.kcp.io/{key}");
    let forged_own = format!("{own}={}", forged(9));
    w.kcp.kubectl(
        TENANT_B,
        &["-n", "forge-status", "annotate", "deployment", "web", "--overwrite", &forged_own],
        None,
    )?;
    eventually("the syncer's own entry restored", WAIT, || async {
        let d = upstream_get(&w, TENANT_B, "forge-status", "deployment", "web")?.ok_or("gone")?;
        let entry = d["metadata"]["annotations"][&own].as_str().unwrap_or_default().to_string();
        let entry: Value = serde_json::from_str(&entry).unwrap_or(Value::Null);
        Ok((entry["availableReplicas"] == 1 && status(&d).0 == 1).then_some(()))
    })
    .await?;
    let d = upstream_get(&w, TENANT_B, "forge-status", "deployment", "web")?.ok_or("gone")?;
    let finalizers = d["metadata"]["finalizers"].to_string();
    ensure!(!finalizers.contains(&bystander.target_key), "another tenant's syncer took the object: {finalizers}");
    let bystander_dns = downstream_ns(&w, BYSTANDER_WS, BYSTANDER_TARGET, TENANT_B, "forge-status").await;
    ensure!(downstream_get(&w, 1, "", "namespace", &bystander_dns)?.is_none(), "synced to the bystander's cluster");
    ensure!(bystander_writes(&w, &bystander.target_key).await? == writes_before, "the bystander's syncer wrote");
    bystander.untouched(&w).await?;
    Ok(())
}

/// Row: hand-written `workload.tmc.kcp.io/<key>` annotations — garbage and an unknown operator
/// for the namespace's own target, a selector for another tenant's target it is not assigned
/// to. Nothing is synced (fail closed), each invalid selector is named in an
/// `InvalidWorkloadSelector` Event, the other tenant's target ignores it; a valid selector then
/// syncs exactly what it selects.
pub async fn forged_workload_selectors_fail_closed(w: Arc<World>) -> TestResult {
    let bystander = Bystander::get(&w).await?;
    let writes_before = bystander_writes(&w, &bystander.target_key).await?;
    let key = register(&w, TENANT_A, "forge-sel", 0).await?;
    let own = format!("workload.tmc.kcp.io/{key}");
    // Garbage in one namespace, an unknown operator in another (kube's event recorder folds a
    // second note on the same object and reason into the first Event's series for minutes).
    let unknown = r#"[{"matchExpressions":[{"key":"app","operator":"Gt","values":["1"]}]}]"#;
    let other = format!("workload.tmc.kcp.io/{}", bystander.target_key);
    for (name, selector) in [("forge-sel", "{not json"), ("forge-sel-op", unknown)] {
        let ns = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": name, "labels": { format!("state.tmc.kcp.io/{key}"): "Sync" },
                          "annotations": { &own: selector, &other: "[{}]" } },
        });
        w.kcp.kubectl(TENANT_A, &["apply", "-f", "-"], Some(&ns.to_string()))?;
        let objects = list(&[configmap("web-config", json!({"app": "web"})), secret("plain-secret", "sel-password")]);
        w.kcp.kubectl(TENANT_A, &["-n", name, "apply", "-f", "-"], Some(&objects))?;
    }
    for (name, why) in [("forge-sel", "not valid JSON"), ("forge-sel-op", "operator is not one of")] {
        let found = eventually(&format!("InvalidWorkloadSelector on {name}"), WAIT, || async {
            let found = namespace_events(&w, TENANT_A, name, "InvalidWorkloadSelector")?;
            Ok(found.iter().any(|e| e.contains(why)).then_some(found))
        })
        .await?;
        ensure!(found.iter().all(|e| e.starts_with(&own) && e.contains("forge-sel")), "events: {found:?}");
        ensure!(found.iter().all(|e| !e.contains("{not json") && !e.contains("Gt")), "the value is echoed: {found:?}");
    }
    let op_dns = downstream_ns(&w, TENANT_A, "forge-sel", TENANT_A, "forge-sel-op").await;
    let dns = downstream_ns(&w, TENANT_A, "forge-sel", TENANT_A, "forge-sel").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (kind, name) in [("configmap", "web-config"), ("secret", "plain-secret")] {
        for d in [&dns, &op_dns] {
            ensure!(
                downstream_get(&w, 0, d, kind, name)?.is_none(),
                "{kind} {name} synced through an invalid selector"
            );
        }
        ensure!(anywhere(&w, 1, kind, name)?.trim().is_empty(), "{kind} {name} reached the bystander's cluster");
    }
    // A valid selector: exactly what it selects.
    let valid = format!(r#"{own}=[{{"matchLabels":{{"app":"web"}}}}]"#);
    w.kcp.kubectl(TENANT_A, &["annotate", "namespace", "forge-sel", "--overwrite", &valid], None)?;
    crate::syncer::wait_downstream(&w, 0, &dns, "configmap", "web-config").await?;
    ensure!(downstream_get(&w, 0, &dns, "secret", "plain-secret")?.is_none(), "an unselected Secret was synced");
    ensure!(bystander_writes(&w, &bystander.target_key).await? == writes_before, "the bystander's syncer wrote");
    bystander.untouched(&w).await?;
    Ok(())
}

/// Row: a tenant labels its namespace `state.tmc.kcp.io/<another workspace's target key>: Sync`
/// without that target's consent. Nothing reaches the other workspace's cluster, and the tenant
/// reads a `WorkspaceNotAllowed` Event whose text is the same as for a key no target has.
pub async fn forged_assignment_to_another_workspace_gets_nothing(w: Arc<World>) -> TestResult {
    let bystander = Bystander::get(&w).await?;
    let writes_before = bystander_writes(&w, &bystander.target_key).await?;
    let nowhere = "00000000000000000bad";
    for (ns, key) in [("forge-assign", bystander.target_key.as_str()), ("forge-assign-nowhere", nowhere)] {
        assigned_namespace(&w, TENANT_B, ns, key)?;
        let objects = list(&[secret("stolen-secret", "tenant-b-password"), configmap("stolen-config", json!({}))]);
        w.kcp.kubectl(TENANT_B, &["-n", ns, "apply", "-f", "-"], Some(&objects))?;
    }
    let notes = eventually("WorkspaceNotAllowed on both namespaces", WAIT, || async {
        let a = namespace_events(&w, TENANT_B, "forge-assign", "WorkspaceNotAllowed")?;
        let b = namespace_events(&w, TENANT_B, "forge-assign-nowhere", "WorkspaceNotAllowed")?;
        Ok((!a.is_empty() && !b.is_empty()).then(|| (a[0].clone(), b[0].clone())))
    })
    .await?;
    let (real, none) = (notes.0.replace(&bystander.target_key, "KEY"), notes.1.replace(nowhere, "KEY"));
    ensure!(real == none, "the text tells an existing target from none: {real:?} vs {none:?}");
    ensure!(real.starts_with("state.tmc.kcp.io/KEY: "), "the event names the label: {real}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dns = downstream_ns(&w, BYSTANDER_WS, BYSTANDER_TARGET, TENANT_B, "forge-assign").await;
    ensure!(downstream_get(&w, 1, "", "namespace", &dns)?.is_none(), "a namespace for the tenant in cluster 1");
    for (kind, name) in [("secret", "stolen-secret"), ("configmap", "stolen-config")] {
        ensure!(anywhere(&w, 1, kind, name)?.trim().is_empty(), "{kind} {name} reached the other workspace's cluster");
        let up = upstream_get(&w, TENANT_B, "forge-assign", kind, name)?.ok_or("upstream object gone")?;
        let finalizers = up["metadata"]["finalizers"].to_string();
        ensure!(!finalizers.contains("tmc.kcp.io/syncer"), "a syncer took {kind} {name}: {finalizers}");
    }
    ensure!(bystander_writes(&w, &bystander.target_key).await? == writes_before, "the bystander's syncer wrote");
    bystander.untouched(&w).await?;
    Ok(())
}
