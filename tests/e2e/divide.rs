//! Divided replicas (`spec.replicaPolicy: {type: Divide}`) on real kcp and real clusters: the
//! copies' replicas add up to what the tenant asked for, kcp's status shows `n/n`, and the
//! division follows scaling, weights, cordon, an unreachable cluster and a change of policy.

use std::collections::BTreeMap;
use std::sync::Arc;

use kcp_tmc::apis::placement::replicas::share;
use serde_json::{Value, json};

use crate::env::{TestResult, eventually};
use crate::placement::{namespace_with_config, placement, tenant, wait_assigned};
use crate::syncer::{WAIT, deployment, downstream_get, downstream_ns, register, upstream_get};
use crate::{World, ensure};

/// The replicas of each target's copy, expected from the weights by the same division the
/// syncers make.
fn expected(total: i64, weights: &[(&String, u32)]) -> Vec<i64> {
    let map: BTreeMap<String, u32> = weights.iter().map(|(k, w)| (k.to_string(), *w)).collect();
    weights.iter().map(|(k, _)| share(total, &map, k).unwrap()).collect()
}

/// Waits until the copies in the two clusters run `want` replicas (first cluster, second).
async fn wait_copies(w: &World, dns: &[String; 2], want: &[i64]) -> Result<(), String> {
    eventually(&format!("copies with {want:?} replicas"), WAIT, || async {
        let mut got = vec![];
        for (i, ns) in dns.iter().enumerate() {
            let d = downstream_get(w, i, ns, "deployment", "web")?;
            got.push(d.and_then(|d| d["spec"]["replicas"].as_i64()).unwrap_or(-1));
        }
        match got == want {
            true => Ok(Some(())),
            false => Err(format!("copies run {got:?}")),
        }
    })
    .await
}

/// Waits until kcp's Deployment reads `n/n` in kubectl's READY column.
async fn wait_ready(w: &World, ws: &str, n: i64) -> Result<Value, String> {
    eventually(&format!("kcp's Deployment {n}/{n} ready"), WAIT, || async {
        let d = upstream_get(w, ws, "web", "deployment", "web")?.ok_or("gone")?;
        Ok((d["spec"]["replicas"] == n && d["status"]["readyReplicas"] == n).then_some(d))
    })
    .await
}

pub async fn divided_replicas_add_up_and_follow_scale_weights_and_outages(w: Arc<World>) -> TestResult {
    let ws = "root:pl-divide";
    tenant(&w, ws).await?;
    let (a, b) = (register(&w, ws, "da", 0).await?, register(&w, ws, "db", 1).await?);
    namespace_with_config(&w, ws, "web", "web")?;
    let mut divide: Value = serde_json::from_str(&placement("web", "web", json!({}), None))?;
    divide["spec"]["replicaPolicy"] = json!({"type": "Divide", "weightLabel": "example.dev/weight"});
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&divide.to_string()))?;
    wait_assigned(&w, ws, "web", &[&a, &b]).await?;
    w.kcp.kubectl(ws, &["-n", "web", "apply", "-f", "-"], Some(&deployment("web", 3)))?;
    let dns = [downstream_ns(&w, ws, "da", ws, "web").await, downstream_ns(&w, ws, "db", ws, "web").await];

    // 3 over two equal targets: 2 + 1, and kcp shows 3/3, not 6/3.
    wait_copies(&w, &dns, &expected(3, &[(&a, 1), (&b, 1)])).await?;
    let d = wait_ready(&w, ws, 3).await?;
    ensure!(d["status"]["availableReplicas"] == 3, "status {}", d["status"]);

    // Scaled in kcp: divided again.
    w.kcp.kubectl(ws, &["-n", "web", "scale", "deployment", "web", "--replicas=5"], None)?;
    wait_copies(&w, &dns, &expected(5, &[(&a, 1), (&b, 1)])).await?;
    wait_ready(&w, ws, 5).await?;

    // Weighted by a SyncTarget label: 3:1.
    w.kcp.kubectl(ws, &["label", "synctarget", "da", "example.dev/weight=3"], None)?;
    wait_copies(&w, &dns, &expected(5, &[(&a, 3), (&b, 1)])).await?;

    // Cordoned: its share goes to the other target while it lasts, and comes back.
    let cordon = |on: bool| json!({"spec": {"unschedulable": on}}).to_string();
    w.kcp.kubectl(ws, &["patch", "synctarget", "db", "--type=merge", "-p", &cordon(true)], None)?;
    wait_copies(&w, &dns, &[5, 0]).await?;
    wait_ready(&w, ws, 5).await?;
    w.kcp.kubectl(ws, &["patch", "synctarget", "db", "--type=merge", "-p", &cordon(false)], None)?;
    wait_copies(&w, &dns, &expected(5, &[(&a, 3), (&b, 1)])).await?;

    // The first cluster becomes unreachable: past the failover grace (10 s here) the second
    // runs all five.
    let kubeconfig = w.clusters[0].kubeconfig_text();
    let dead = crate::syncer::unreachable_kubeconfig(&w, 0)?;
    let set_kubeconfig = |text: &str| {
        let patch = json!({ "stringData": { "kubeconfig": text } }).to_string();
        w.kcp.kubectl(ws, &["-n", "default", "patch", "secret", "da-kubeconfig", "--type=merge", "-p", &patch], None)
    };
    set_kubeconfig(&dead)?;
    eventually("the second cluster runs all five", WAIT, || async {
        let d = downstream_get(&w, 1, &dns[1], "deployment", "web")?;
        Ok((d.and_then(|d| d["spec"]["replicas"].as_i64()) == Some(5)).then_some(()))
    })
    .await?;
    set_kubeconfig(&kubeconfig)?;
    wait_copies(&w, &dns, &expected(5, &[(&a, 3), (&b, 1)])).await?;
    wait_ready(&w, ws, 5).await?;

    // Back to Duplicate: every cluster runs every replica again.
    divide["spec"]["replicaPolicy"] = json!({"type": "Duplicate"});
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&divide.to_string()))?;
    wait_copies(&w, &dns, &[5, 5]).await?;
    Ok(())
}
