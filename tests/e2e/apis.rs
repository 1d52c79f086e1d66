//! `spec.supportedAPIs` end to end: a custom API exported with `tmc install --workload-crd`
//! syncs to the cluster that serves it, is reported missing where the cluster does not, is
//! picked up once the cluster installs it, and an API dropped from the spec is cleaned up.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::env::{TestResult, eventually};
use crate::syncer::{WAIT, assigned_namespace, downstream_get, downstream_ns, register, upstream_get, wait_downstream};
use crate::{TENANT_B, WIDGET_CRD, World, ensure};

fn set_supported_apis(w: &World, name: &str, apis: Value) -> Result<(), String> {
    let patch = json!({ "spec": { "supportedAPIs": apis } }).to_string();
    w.kcp.kubectl(TENANT_B, &["patch", "synctarget", name, "--type", "merge", "-p", &patch], None).map(|_| ())
}

/// The target's `status.syncedResources` entry for `kind`.
fn reported(w: &World, name: &str, kind: &str) -> Result<Option<Value>, String> {
    let out = w.kcp.kubectl(TENANT_B, &["get", "synctarget", name, "-o", "json"], None)?;
    let target: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(target["status"]["syncedResources"].as_array().into_iter().flatten().find(|r| r["kind"] == kind).cloned())
}

/// The target's report for `kind`, once it says `state`.
async fn wait_reported(w: &World, name: &str, kind: &str, state: &str) -> Result<Value, String> {
    eventually(&format!("{name} reports {kind} {state}"), WAIT, || async {
        Ok(reported(w, name, kind)?.filter(|r| r["state"] == state))
    })
    .await
}

async fn wait_condition(w: &World, name: &str, status: &str, reason: &str) -> Result<String, String> {
    eventually(&format!("{name} APIsAvailable={status}/{reason}"), WAIT, || async {
        let path = "jsonpath={.status.conditions[?(@.type==\"APIsAvailable\")]['status','reason','message']}";
        let out = w.kcp.kubectl(TENANT_B, &["get", "synctarget", name, "-o", path], None)?;
        Ok(out.starts_with(&format!("{status} {reason} ")).then_some(out))
    })
    .await
}

fn widget(name: &str, size: i64) -> String {
    json!({"apiVersion": "example.tmc.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size}})
        .to_string()
}

pub async fn custom_apis_sync_where_both_sides_serve_them(w: Arc<World>) -> TestResult {
    let crd = std::fs::read_to_string(WIDGET_CRD).map_err(|e| e.to_string())?;
    w.clusters[1].kubectl_stdin(&["apply", "-f", "-"], &crd)?;
    w.clusters[1].kubectl(&["wait", "--for=condition=Established", "crd/widgets.example.tmc.dev"])?;

    // Cluster 1 serves Widgets; kcp does not serve ServiceAccounts through the export.
    let with = register(&w, TENANT_B, "widgets-1", 1).await?;
    let apis = json!([{"group": "example.tmc.dev", "kind": "Widget"}, {"group": "", "kind": "ServiceAccount"}]);
    set_supported_apis(&w, "widgets-1", apis)?;
    // Cluster 0 does not serve Widgets (yet).
    let without = register(&w, TENANT_B, "widgets-0", 0).await?;
    let apis = json!([{"group": "example.tmc.dev", "kind": "Widget"}, {"group": "", "kind": "ConfigMap"}]);
    set_supported_apis(&w, "widgets-0", apis)?;

    let missing = wait_condition(&w, "widgets-0", "False", "APIMissingOnCluster").await?;
    ensure!(missing.contains("Widget.example.tmc.dev: MissingOnCluster"), "condition message: {missing}");
    let not_served = wait_reported(&w, "widgets-1", "ServiceAccount", "NotServedByKcp").await?;
    ensure!(not_served["message"].as_str().is_some_and(|m| m.contains("serviceaccounts")), "{not_served}");
    wait_condition(&w, "widgets-1", "False", "APIUnavailable").await?;
    // A missing API does not take the target out of service.
    let ready = w.kcp.kubectl(
        TENANT_B,
        &["get", "synctarget", "widgets-0", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
        None,
    )?;
    ensure!(ready == "True", "Ready with a missing API: {ready}");

    assigned_namespace(&w, TENANT_B, "widgets-b", &with)?;
    assigned_namespace(&w, TENANT_B, "widgets-a", &without)?;
    w.kcp.kubectl(TENANT_B, &["-n", "widgets-b", "apply", "-f", "-"], Some(&widget("gear", 3)))?;
    let config =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gear-config"}, "data": {"a": "b"}});
    w.kcp.kubectl(TENANT_B, &["-n", "widgets-a", "apply", "-f", "-"], Some(&widget("cog", 5)))?;
    w.kcp.kubectl(TENANT_B, &["-n", "widgets-a", "apply", "-f", "-"], Some(&config.to_string()))?;

    // The Widget runs on cluster 1 and its status comes back.
    let dns_b = downstream_ns(&w, TENANT_B, "widgets-1", TENANT_B, "widgets-b").await;
    let copy = wait_downstream(&w, 1, &dns_b, "widget", "gear").await?;
    ensure!(copy["spec"]["size"] == 3, "widget spec downstream: {}", copy["spec"]);
    let status = json!({"status": {"phase": "Spinning"}}).to_string();
    w.clusters[1].kubectl(&[
        "-n",
        &dns_b,
        "patch",
        "widget",
        "gear",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        &status,
    ])?;
    eventually("the Widget's status in kcp", WAIT, || async {
        let up = upstream_get(&w, TENANT_B, "widgets-b", "widget", "gear")?.ok_or("upstream widget gone")?;
        Ok((up["status"]["phase"] == "Spinning").then_some(()))
    })
    .await?;
    eventually("widgets-1 counts one synced Widget", WAIT, || async {
        let entry = reported(&w, "widgets-1", "Widget")?;
        Ok(entry.filter(|e| e["state"] == "Syncing" && e["syncedObjects"] == 1).map(|_| ()))
    })
    .await?;

    // On cluster 0 only the ConfigMap runs until the cluster serves Widgets; then the Widget too.
    let dns_a = downstream_ns(&w, TENANT_B, "widgets-0", TENANT_B, "widgets-a").await;
    wait_downstream(&w, 0, &dns_a, "configmap", "gear-config").await?;
    w.clusters[0].kubectl_stdin(&["apply", "-f", "-"], &crd)?;
    wait_condition(&w, "widgets-0", "True", "AllAvailable").await?;
    wait_downstream(&w, 0, &dns_a, "widget", "cog").await?;

    // Dropping ConfigMaps from the spec removes their copies and releases the finalizer.
    set_supported_apis(&w, "widgets-0", json!([{"group": "example.tmc.dev", "kind": "Widget"}]))?;
    eventually("the ConfigMap copy removed from cluster 0", WAIT, || async {
        Ok(downstream_get(&w, 0, &dns_a, "configmap", "gear-config")?.is_none().then_some(()))
    })
    .await?;
    eventually("the ConfigMap's finalizer released", WAIT, || async {
        let up = upstream_get(&w, TENANT_B, "widgets-a", "configmap", "gear-config")?.ok_or("configmap gone")?;
        let finalizers = up["metadata"]["finalizers"].as_array().map(Vec::len).unwrap_or(0);
        Ok((finalizers == 0).then_some(()))
    })
    .await?;
    ensure!(downstream_get(&w, 0, &dns_a, "widget", "cog")?.is_some(), "the Widget must stay");
    Ok(())
}
