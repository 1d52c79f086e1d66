//! Placement, end to end: the manager chooses SyncTargets and writes the namespaces'
//! assignment labels; the push-mode syncers then run the workloads on real clusters.
//!
//! Each test works in workspaces of its own: a Placement selects namespaces of its whole
//! workspace, and must not reach the namespaces other tests label by hand.

use std::sync::Arc;
use std::time::Duration;

use kcp_tmc::kcp::workspace;
use kcp_tmc::syncer::naming::target_key;
use serde_json::{Value, json};

use crate::env::{TestResult, eventually};
use crate::syncer::{WAIT, downstream_get, downstream_ns, register, wait_downstream};
use crate::{World, ensure};

const ASSIGNED: &str = "placement.tmc.kcp.io/assigned";

/// Creates the workspace `path`, binds kcp-tmc's export there and waits until it serves.
pub async fn tenant(w: &World, path: &str) -> Result<(), String> {
    w.kcp.bind_sample(&w.clients, path, WAIT).await.map(drop)
}

/// A namespace labelled `app=<app>` holding one ConfigMap `cfg`.
pub fn namespace_with_config(w: &World, ws: &str, ns: &str, app: &str) -> Result<(), String> {
    let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{app: {app}}}\n");
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&yaml))?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"ns": ns}});
    w.kcp.kubectl(ws, &["-n", ns, "apply", "-f", "-"], Some(&cm.to_string())).map(|_| ())
}

pub fn placement(name: &str, app: &str, location: Value, number: Option<i32>) -> String {
    let mut spec = json!({ "namespaceSelector": { "matchLabels": { "app": app } }, "locationSelector": location });
    if let Some(n) = number {
        spec["numberOfTargets"] = json!(n);
    }
    json!({ "apiVersion": "placement.kcp.io/v1alpha1", "kind": "Placement", "metadata": { "name": name }, "spec": spec })
        .to_string()
}

pub fn get(w: &World, ws: &str, kind: &str, name: &str) -> Result<Value, String> {
    let out = w.kcp.kubectl(ws, &["get", kind, name, "-o", "json"], None)?;
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

pub fn condition<'a>(obj: &'a Value, type_: &str) -> (&'a str, &'a str) {
    let c = obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    c.map(|c| (c["status"].as_str().unwrap_or_default(), c["reason"].as_str().unwrap_or_default())).unwrap_or_default()
}

pub fn selected(p: &Value) -> Vec<String> {
    p["status"]["selectedTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(Into::into))
        .collect()
}

/// Waits until the Placement's Scheduled reason is `reason`; returns the Placement.
pub async fn wait_scheduled(w: &World, ws: &str, name: &str, reason: &str) -> Result<Value, String> {
    wait_scheduled_within(w, ws, name, reason, WAIT).await
}

/// Waits for the Placement's `Scheduled` reason; a timeout names the condition it had last.
pub async fn wait_scheduled_within(
    w: &World,
    ws: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Result<Value, String> {
    eventually(&format!("Placement {ws}/{name} Scheduled reason {reason}"), timeout, || async {
        let p = get(w, ws, "placement", name)?;
        match condition(&p, "Scheduled").1 == reason {
            true => Ok(Some(p)),
            false => Err(format!("Scheduled is {}", scheduled_condition(&p))),
        }
    })
    .await
}

/// The Placement's `Scheduled` condition as "status reason: message" (for failure messages).
fn scheduled_condition(p: &Value) -> String {
    let c = p["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Scheduled"));
    c.map(|c| format!("{} {}: {}", c["status"], c["reason"], c["message"])).unwrap_or_else(|| "absent".into())
}

async fn wait_selected(w: &World, ws: &str, name: &str, want: &[&str]) -> Result<Value, String> {
    eventually(&format!("Placement {ws}/{name} selects {want:?}"), WAIT, || async {
        let p = get(w, ws, "placement", name)?;
        Ok((selected(&p) == want).then_some(p))
    })
    .await
}

/// The target keys assigned to the namespace by label.
pub fn assigned(w: &World, ws: &str, ns: &str) -> Result<Vec<String>, String> {
    let n = get(w, ws, "namespace", ns)?;
    let labels = n["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    Ok(labels.keys().filter_map(|k| k.strip_prefix("state.tmc.kcp.io/").map(Into::into)).collect())
}

pub async fn wait_assigned(w: &World, ws: &str, ns: &str, want: &[&str]) -> Result<(), String> {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    eventually(&format!("{ws}/{ns} assigned to {want:?}"), WAIT, || async {
        Ok((assigned(w, ws, ns)? == want).then_some(()))
    })
    .await
}

async fn key_of(w: &World, ws: &str, name: &str) -> Result<String, String> {
    let cluster = workspace::resolve(&w.clients, &ws.parse().unwrap()).await.map_err(|e| e.to_string())?;
    Ok(target_key(&cluster, name))
}

pub async fn placement_selects_a_labelled_subset_and_deletion_cleans_up(w: Arc<World>) -> TestResult {
    let ws = "root:pl-subset";
    tenant(&w, ws).await?;
    let east = register(&w, ws, "east", 0).await?;
    let west = register(&w, ws, "west", 1).await?;
    w.kcp.kubectl(ws, &["label", "synctarget", "east", "region=east"], None)?;
    namespace_with_config(&w, ws, "web", "web")?;
    namespace_with_config(&w, ws, "other", "other")?;
    let location = json!({ "matchLabels": { "region": "east" } });
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement("web", "web", location, None)))?;

    let p = wait_scheduled(&w, ws, "web", "Scheduled").await?;
    ensure!(selected(&p) == ["east"], "selected {:?}", selected(&p));
    ensure!(p["status"]["phase"] == "Bound" && p["status"]["placedNamespaces"] == 1, "status {}", p["status"]);
    wait_assigned(&w, ws, "web", &[&east]).await?;
    ensure!(assigned(&w, ws, "other")?.is_empty(), "an unselected namespace was assigned");
    let dns = downstream_ns(&w, ws, "east", ws, "web").await;
    wait_downstream(&w, 0, &dns, "configmap", "cfg").await?;
    let ns = get(&w, ws, "namespace", "web")?;
    ensure!(ns["metadata"]["annotations"][ASSIGNED] == east.as_str(), "annotation {}", ns["metadata"]["annotations"]);

    // A label set by hand is not the controller's: it survives the Placement's deletion.
    w.kcp.kubectl(ws, &["label", "namespace", "web", &format!("state.tmc.kcp.io/{west}=Sync")], None)?;
    w.kcp.kubectl(ws, &["delete", "placement", "web"], None)?;
    wait_assigned(&w, ws, "web", &[&west]).await?;
    eventually("the workload leaves the east cluster", WAIT, || async {
        Ok(downstream_get(&w, 0, &dns, "configmap", "cfg")?.is_none().then_some(()))
    })
    .await?;
    wait_downstream(&w, 1, &downstream_ns(&w, ws, "west", ws, "web").await, "configmap", "cfg").await?;

    // `kubectl get placements` shows every chosen target at a glance.
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement("both", "other", json!({}), None)))?;
    wait_selected(&w, ws, "both", &["east", "west"]).await?;
    let row = eventually("the Targets column lists both targets", WAIT, || async {
        let out = w.kcp.kubectl(ws, &["get", "placements", "both", "--no-headers"], None)?;
        Ok(out.contains("east,west").then_some(out))
    })
    .await?;
    ensure!(row.contains("Bound"), "row {row:?}");
    Ok(())
}

pub async fn placement_is_sticky_and_respects_cordon_and_drain(w: Arc<World>) -> TestResult {
    let ws = "root:pl-sticky";
    tenant(&w, ws).await?;
    let a = register(&w, ws, "a", 0).await?;
    namespace_with_config(&w, ws, "s1", "s1")?;
    // Named like the Placement of the subset test in another workspace: keys include the cluster.
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement("web", "s1", json!({}), Some(1))))?;
    wait_selected(&w, ws, "web", &["a"]).await?;
    wait_assigned(&w, ws, "s1", &[&a]).await?;

    // A second matching target appears: the choice stays put.
    let b = register(&w, ws, "b", 1).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = get(&w, ws, "placement", "web")?;
    ensure!(selected(&p) == ["a"], "moved to a new target: {:?}", selected(&p));
    ensure!(assigned(&w, ws, "s1")? == [a.clone()], "labels {:?}", assigned(&w, ws, "s1")?);

    // Cordon: what runs on a stays, nothing new goes there.
    w.kcp.kubectl(
        ws,
        &["patch", "synctarget", "a", "--type=merge", "-p", r#"{"spec":{"unschedulable":true}}"#],
        None,
    )?;
    namespace_with_config(&w, ws, "s2", "s2")?;
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement("p2", "s2", json!({}), Some(1))))?;
    wait_selected(&w, ws, "p2", &["b"]).await?;
    ensure!(selected(&get(&w, ws, "placement", "web")?) == ["a"], "cordon moved a running placement");

    // Drain: evictAfter in the past moves p1 to b, new label first, then the old one goes.
    let drain = r#"{"spec":{"evictAfter":"2020-01-01T00:00:00Z"}}"#;
    w.kcp.kubectl(ws, &["patch", "synctarget", "a", "--type=merge", "-p", drain], None)?;
    wait_selected(&w, ws, "web", &["b"]).await?;
    wait_assigned(&w, ws, "s1", &[&b]).await?;
    wait_downstream(&w, 1, &downstream_ns(&w, ws, "b", ws, "s1").await, "configmap", "cfg").await?;
    let old = downstream_ns(&w, ws, "a", ws, "s1").await;
    eventually("drained copy removed from cluster 0", WAIT, || async {
        Ok(downstream_get(&w, 0, &old, "configmap", "cfg")?.is_none().then_some(()))
    })
    .await?;
    let events = w.kcp.kubectl(ws, &["get", "events", "-A", "--field-selector", "reason=TargetsChanged"], None)?;
    ensure!(events.contains("TargetsChanged"), "no TargetsChanged event: {events}");
    Ok(())
}

pub async fn placement_across_workspaces_needs_consent(w: Arc<World>) -> TestResult {
    let (clusters, consumer) = ("root:pl-clusters", "root:pl-consumer");
    tenant(&w, clusters).await?;
    tenant(&w, consumer).await?;
    let shared = register(&w, clusters, "shared", 1).await?;
    namespace_with_config(&w, consumer, "app", "app")?;
    let location = json!({ "workspace": clusters });
    w.kcp.kubectl(consumer, &["apply", "-f", "-"], Some(&placement("remote", "app", location, None)))?;
    let p = wait_scheduled(&w, consumer, "remote", "WorkspaceNotAllowed").await?;
    ensure!(p["status"]["phase"] == "Pending", "status {}", p["status"]);
    ensure!(assigned(&w, consumer, "app")?.is_empty(), "assigned without consent");

    let allow = json!({ "spec": { "allowedWorkspaces": [consumer] } }).to_string();
    w.kcp.kubectl(clusters, &["patch", "synctarget", "shared", "--type=merge", "-p", &allow], None)?;
    let p = wait_scheduled(&w, consumer, "remote", "Scheduled").await?;
    ensure!(p["status"]["selectedTargets"][0]["workspace"] == clusters, "status {}", p["status"]);
    wait_assigned(&w, consumer, "app", &[&shared]).await?;
    let dns = downstream_ns(&w, clusters, "shared", consumer, "app").await;
    wait_downstream(&w, 1, &dns, "configmap", "cfg").await?;
    ensure!(key_of(&w, clusters, "shared").await? == shared, "target key mismatch");

    // Consent withdrawn: the Placement loses the target and the copy leaves the cluster.
    let revoke = json!({ "spec": { "allowedWorkspaces": null } }).to_string();
    w.kcp.kubectl(clusters, &["patch", "synctarget", "shared", "--type=merge", "-p", &revoke], None)?;
    wait_scheduled(&w, consumer, "remote", "WorkspaceNotAllowed").await?;
    wait_assigned(&w, consumer, "app", &[]).await?;
    eventually("the copy is removed once consent is withdrawn", WAIT, || async {
        Ok(downstream_get(&w, 1, &dns, "configmap", "cfg")?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

pub async fn placement_fails_over_from_an_unreachable_cluster(w: Arc<World>) -> TestResult {
    let ws = "root:pl-failover";
    tenant(&w, ws).await?;
    let keys = [register(&w, ws, "fa", 0).await?, register(&w, ws, "fb", 1).await?];
    namespace_with_config(&w, ws, "f", "f")?;
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement("pf", "f", json!({}), Some(1))))?;
    let p = wait_scheduled(&w, ws, "pf", "Scheduled").await?;
    let first = selected(&p).first().cloned().ok_or("nothing selected")?;
    let (from, to, to_index) = if first == "fa" { (0, "fb", 1) } else { (1, "fa", 0) };
    wait_assigned(&w, ws, "f", &[&keys[from]]).await?;

    // The chosen cluster becomes unreachable; after the grace (10s here) the namespace moves.
    let kubeconfig = w.clusters[from].kubeconfig_text();
    let dead = crate::syncer::unreachable_kubeconfig(&w, from)?;
    let patch = json!({ "stringData": { "kubeconfig": dead } }).to_string();
    w.kcp.kubectl(
        ws,
        &["-n", "default", "patch", "secret", &format!("{first}-kubeconfig"), "--type=merge", "-p", &patch],
        None,
    )?;
    wait_selected(&w, ws, "pf", &[to]).await?;
    wait_downstream(&w, to_index, &downstream_ns(&w, ws, to, ws, "f").await, "configmap", "cfg").await?;
    wait_assigned(&w, ws, "f", &[&keys[1 - from]]).await?;

    // The cluster comes back: the copy it still holds is removed, and nothing moves back.
    let old_dns = downstream_ns(&w, ws, &first, ws, "f").await;
    ensure!(downstream_get(&w, from, &old_dns, "configmap", "cfg")?.is_some(), "the stale copy should still be there");
    let patch = json!({ "stringData": { "kubeconfig": kubeconfig } }).to_string();
    w.kcp.kubectl(
        ws,
        &["-n", "default", "patch", "secret", &format!("{first}-kubeconfig"), "--type=merge", "-p", &patch],
        None,
    )?;
    eventually("the stale copy removed from the returned cluster", WAIT, || async {
        Ok(downstream_get(&w, from, &old_dns, "configmap", "cfg")?.is_none().then_some(()))
    })
    .await?;
    wait_selected(&w, ws, "pf", &[to]).await?;
    wait_assigned(&w, ws, "f", &[&keys[1 - from]]).await?;
    Ok(())
}

/// `workloadSelector`: only matching objects of a placed namespace run on the chosen target, and
/// relabelling an object moves it in or out.
pub async fn workload_selector_limits_what_is_synced(w: Arc<World>) -> TestResult {
    let ws = "root:pl-workloads";
    tenant(&w, ws).await?;
    let key = register(&w, ws, "only", 1).await?;
    namespace_with_config(&w, ws, "mixed", "mixed")?;
    let cm = |name: &str, tier: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"tier": tier}}, "data": {"t": tier}})
            .to_string()
    };
    w.kcp.kubectl(ws, &["-n", "mixed", "apply", "-f", "-"], Some(&cm("front", "web")))?;
    w.kcp.kubectl(ws, &["-n", "mixed", "apply", "-f", "-"], Some(&cm("store", "db")))?;
    let mut p: Value = serde_json::from_str(&placement("pw", "mixed", json!({}), None))?;
    p["spec"]["workloadSelector"] = json!({ "matchLabels": { "tier": "web" } });
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&p.to_string()))?;
    wait_assigned(&w, ws, "mixed", &[&key]).await?;

    let dns = downstream_ns(&w, ws, "only", ws, "mixed").await;
    wait_downstream(&w, 1, &dns, "configmap", "front").await?;
    // The unselected objects never arrive (give the syncer time to get it wrong).
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(downstream_get(&w, 1, &dns, "configmap", "store")?.is_none(), "a tier=db ConfigMap was synced");
    ensure!(downstream_get(&w, 1, &dns, "configmap", "cfg")?.is_none(), "an unlabelled ConfigMap was synced");

    // Relabelling moves objects in and out.
    w.kcp.kubectl(ws, &["-n", "mixed", "label", "configmap", "store", "tier=web", "--overwrite"], None)?;
    wait_downstream(&w, 1, &dns, "configmap", "store").await?;
    w.kcp.kubectl(ws, &["-n", "mixed", "label", "configmap", "front", "tier=cache", "--overwrite"], None)?;
    eventually("front removed once it no longer matches", WAIT, || async {
        Ok(downstream_get(&w, 1, &dns, "configmap", "front")?.is_none().then_some(()))
    })
    .await?;
    // Dropping the selector runs everything.
    w.kcp.kubectl(
        ws,
        &["patch", "placement", "pw", "--type=json", "-p", r#"[{"op":"remove","path":"/spec/workloadSelector"}]"#],
        None,
    )?;
    wait_downstream(&w, 1, &dns, "configmap", "cfg").await?;
    wait_downstream(&w, 1, &dns, "configmap", "front").await?;
    Ok(())
}

/// A target is chosen only if it syncs every kind of object in the selected namespaces: of two
/// targets on the same cluster, only the one syncing Widgets gets a namespace holding a Widget.
pub async fn placement_needs_targets_that_sync_the_namespaces_kinds(w: Arc<World>) -> TestResult {
    let ws = "root:pl-apis";
    tenant(&w, ws).await?;
    let crd = std::fs::read_to_string(crate::WIDGET_CRD).map_err(|e| e.to_string())?;
    w.clusters[1].kubectl_stdin(&["apply", "-f", "-"], &crd)?;
    w.clusters[1].kubectl(&["wait", "--for=condition=Established", "crd/widgets.example.tmc.dev"])?;
    register(&w, ws, "with-widgets", 1).await?;
    register(&w, ws, "without-widgets", 1).await?;
    let apis = |v: Value| json!({ "spec": { "supportedAPIs": v } }).to_string();
    let with = apis(json!([{"group": "example.tmc.dev", "kind": "Widget"}, {"group": "", "kind": "ConfigMap"}]));
    let without = apis(json!([{"group": "", "kind": "ConfigMap"}]));
    w.kcp.kubectl(ws, &["patch", "synctarget", "with-widgets", "--type=merge", "-p", &with], None)?;
    w.kcp.kubectl(ws, &["patch", "synctarget", "without-widgets", "--type=merge", "-p", &without], None)?;
    for (name, kinds) in [("with-widgets", 2), ("without-widgets", 1)] {
        eventually(&format!("{name} reports its APIs syncing"), WAIT, || async {
            let t = get(&w, ws, "synctarget", name)?;
            let syncing = t["status"]["syncedResources"].as_array().into_iter().flatten();
            Ok((syncing.filter(|r| r["state"] == "Syncing").count() == kinds).then_some(()))
        })
        .await?;
    }
    namespace_with_config(&w, ws, "gadgets", "gadgets")?;
    let widget =
        json!({"apiVersion": "example.tmc.dev/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 1}});
    w.kcp.kubectl(ws, &["-n", "gadgets", "apply", "-f", "-"], Some(&widget.to_string()))?;
    // Every matching target would be chosen (no numberOfTargets), but one cannot run a Widget.
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement("pg", "gadgets", json!({}), None)))?;
    wait_selected(&w, ws, "pg", &["with-widgets"]).await?;
    let dns = downstream_ns(&w, ws, "with-widgets", ws, "gadgets").await;
    wait_downstream(&w, 1, &dns, "widget", "w1").await?;
    Ok(())
}
