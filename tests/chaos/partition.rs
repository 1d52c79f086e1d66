//! Case 6: the chosen cluster's kube-apiserver hung (SIGSTOP), later the other one partitioned
//! through its proxy: each time the target goes NotReady within the heartbeat threshold, the
//! Placement fails over after the grace period, the stale copy is removed when the cluster
//! returns, and nothing moves back.
//! Case 7: kcp unreachable for 90 s through the proxy during a cross-workspace placement: the
//! workload keeps running (same UID, no DELETE) and stays assigned.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Report;
use crate::checks::{no_deletes, nothing_stuck};
use crate::env::eventually;
use crate::evidence::{downstream, requests};
use crate::proxy::Mode;
use crate::world::{FAILOVER_GRACE, HEARTBEAT_THRESHOLD, WAIT, World};

fn placement(name: &str, location: Value, number: Option<i32>) -> String {
    let mut spec = json!({ "namespaceSelector": { "matchLabels": { "app": "chaos" } }, "locationSelector": location });
    if let Some(n) = number {
        spec["numberOfTargets"] = json!(n);
    }
    json!({ "apiVersion": "placement.kcp.io/v1alpha1", "kind": "Placement", "metadata": { "name": name }, "spec": spec })
        .to_string()
}

fn selected(w: &World, ws: &str, name: &str) -> Result<Vec<String>, String> {
    let out =
        w.kcp.kubectl(ws, &["get", "placement", name, "-o", "jsonpath={.status.selectedTargets[*].name}"], None)?;
    Ok(out.split_whitespace().map(Into::into).collect())
}

/// The namespace's assignment labels (target keys).
fn assigned(w: &World, ws: &str, ns: &str) -> Result<Vec<String>, String> {
    let out = w.kcp.kubectl(ws, &["get", "namespace", ns, "-o", "json"], None)?;
    let n: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let labels = n["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    Ok(labels.keys().filter_map(|k| k.strip_prefix("state.tmc.kcp.io/").map(Into::into)).collect())
}

fn app_namespace(w: &World, ws: &str) -> Result<(), String> {
    w.namespace(ws, "app", None, json!({ "app": "chaos" }))?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"v": "1"}});
    w.kcp.kubectl(ws, &["-n", "app", "apply", "-f", "-"], Some(&cm.to_string())).map(|_| ())
}

async fn copy_in(w: &World, index: usize, dns: &str, present: bool) -> Result<(), String> {
    eventually(&format!("cfg {} cluster {index}", if present { "in" } else { "gone from" }), WAIT, || async {
        Ok((downstream(&w.clusters[index], dns, "configmaps")?.contains_key("cfg") == present).then_some(()))
    })
    .await
}

/// One fault on the cluster of the selected target `from` (index `fi`), moving to `to`.
#[allow(clippy::too_many_arguments)]
async fn fail_over(
    w: &World,
    r: &Report,
    ws: &str,
    (from, fi): (&str, usize),
    (to, ti): (&str, usize),
    fault: &(dyn Fn() + Sync),
    heal: &(dyn Fn() + Sync),
    what: &str,
) -> Result<(), String> {
    let t = Instant::now();
    fault();
    let result = async {
        w.wait_ready(ws, from, "False", WAIT).await?;
        let not_ready = t.elapsed();
        eventually(&format!("Placement moves to {to}"), WAIT, || async {
            Ok((selected(w, ws, "p")? == [to]).then_some(()))
        })
        .await?;
        let moved = t.elapsed();
        r.figure(format!("{what}: NotReady after {not_ready:.1?}, moved after {moved:.1?}"));
        if not_ready > HEARTBEAT_THRESHOLD + Duration::from_secs(10) {
            return Err(format!("{what}: NotReady only after {not_ready:?} (threshold {HEARTBEAT_THRESHOLD:?})"));
        }
        if moved < not_ready + FAILOVER_GRACE - Duration::from_secs(1) {
            return Err(format!("{what}: moved {moved:?} after the fault, before the grace {FAILOVER_GRACE:?}"));
        }
        copy_in(w, ti, &w.downstream_ns(ws, to, ws, "app").await?, true).await
    }
    .await;
    heal();
    result?;
    // The returned cluster's stale copy goes; the Placement stays where it moved.
    let stale = w.downstream_ns(ws, from, ws, "app").await?;
    copy_in(w, fi, &stale, false).await?;
    // And its emptied namespace, whose deletion makes the cluster's namespace controller delete
    // what is left in it (kube-root-ca.crt): the next case counts that cluster's DELETEs.
    eventually(&format!("namespace {stale} gone from cluster {fi}"), WAIT, || async {
        let found = w.clusters[fi].kubectl(&["get", "namespace", &stale, "--ignore-not-found", "-o", "name"])?;
        Ok(found.trim().is_empty().then_some(()))
    })
    .await?;
    w.wait_ready(ws, from, "True", WAIT).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let now = selected(w, ws, "p")?;
    if now != [to] {
        return Err(format!("{what}: the Placement moved back: {now:?}"));
    }
    Ok(())
}

pub async fn hung_and_partitioned_clusters_fail_over(w: Arc<World>, r: &Report) -> Result<(), String> {
    let ws = "root:chaos-failover";
    w.tenant(ws).await?;
    w.target(ws, "fa", 0, json!({})).await?;
    w.target(ws, "fb", 1, json!({})).await?;
    let _manager = w.manager("failover", &[]);
    w.wait_ready(ws, "fa", "True", WAIT).await?;
    w.wait_ready(ws, "fb", "True", WAIT).await?;
    app_namespace(&w, ws)?;
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&placement("p", json!({}), Some(1))))?;
    let first =
        eventually("Placement selects one target", WAIT, || async { Ok(selected(&w, ws, "p")?.into_iter().next()) })
            .await?;
    let (a, b) = if first == "fa" { (("fa", 0), ("fb", 1)) } else { (("fb", 1), ("fa", 0)) };
    copy_in(&w, a.1, &w.downstream_ns(ws, a.0, ws, "app").await?, true).await?;

    let hung = &w.apiservers[a.1];
    let stop = || hung.lock().unwrap().signal("STOP");
    let cont = || hung.lock().unwrap().signal("CONT");
    fail_over(&w, r, ws, a, b, &stop, &cont, "SIGSTOPped kube-apiserver").await?;

    let proxy = &w.cluster_proxies[b.1];
    let cut = || proxy.set(Mode::Blackhole);
    let pass = || proxy.set(Mode::Pass);
    fail_over(&w, r, ws, b, a, &cut, &pass, "partition (blackhole proxy)").await?;
    let keys = assigned(&w, ws, "app")?;
    if keys.len() != 1 {
        return Err(format!("app assigned to {keys:?}; wanted exactly one target"));
    }
    nothing_stuck(&w, ws).await
}

pub async fn kcp_unreachable_keeps_cross_workspace_workload(w: Arc<World>, r: &Report) -> Result<(), String> {
    let (location, consumer) = ("root:chaos-location", "root:chaos-consumer");
    w.tenant(location).await?;
    w.tenant(consumer).await?;
    w.target(location, "shared", 1, json!({ "allowedWorkspaces": [consumer] })).await?;
    let _manager = w.manager("consent", &[]);
    w.wait_ready(location, "shared", "True", WAIT).await?;
    app_namespace(&w, consumer)?;
    w.kcp.kubectl(consumer, &["apply", "-f", "-"], Some(&placement("p", json!({ "workspace": location }), None)))?;
    let dns = w.downstream_ns(location, "shared", consumer, "app").await?;
    copy_in(&w, 1, &dns, true).await?;
    let keys = assigned(&w, consumer, "app")?;
    let uid = downstream(&w.clusters[1], &dns, "configmaps")?.get("cfg").map(|c| c.uid.clone());
    let before = requests(&w.clusters[1], "configmaps")?;

    let outage = if std::env::var_os("TMC_CHAOS_SHORT").is_some() { 45 } else { 90 };
    w.kcp_proxy.set(Mode::Cut);
    let t = Instant::now();
    let mut lost = None;
    // Watch the copy through the outage and a minute after it.
    while t.elapsed() < Duration::from_secs(outage + 60) {
        if t.elapsed() >= Duration::from_secs(outage) {
            w.kcp_proxy.set(Mode::Pass);
        }
        let now = downstream(&w.clusters[1], &dns, "configmaps")?.get("cfg").map(|c| c.uid.clone());
        if now != uid && lost.is_none() {
            lost = Some(format!("copy {uid:?} became {now:?} {:.1?} into the outage", t.elapsed()));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    w.kcp_proxy.set(Mode::Pass);
    r.figure(format!("kcp unreachable for {outage} s, copy watched for {:.1?}", t.elapsed()));
    if let Some(lost) = lost {
        return Err(lost);
    }
    no_deletes(&before, &requests(&w.clusters[1], "configmaps")?, "kcp unreachable")?;
    let now = assigned(&w, consumer, "app")?;
    if now != keys {
        return Err(format!("assignment changed from {keys:?} to {now:?}"));
    }
    w.wait_ready(location, "shared", "True", WAIT).await?;
    nothing_stuck(&w, consumer).await
}
