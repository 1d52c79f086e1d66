//! Case 1: kill -9 of the manager in the middle of a burst of ConfigMaps, then kill -9 of the
//! leader of two `--leader-elect` replicas in the middle of a second burst. Every object arrives
//! downstream exactly once with kcp's data, nothing is deleted, nothing is stuck.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use crate::checks::{exactly, no_deletes, nothing_stuck, unchanged};
use crate::env::{Tmc, eventually};
use crate::evidence::requests;
use crate::world::{Burst, PROVIDER, WAIT, World};
use crate::{Report, burst_size};

const WS: &str = "root:chaos-burst";
const LEASE: &str = "tmc-manager-chaos";
/// Objects per kubectl call: small enough that the burst lasts several calls after the fault.
const CHUNK: usize = 25;

/// Applies `count` ConfigMaps into `ns` and runs `fault` once a third of them are in kcp; returns
/// when both are done.
async fn burst_with<F: FnOnce() -> Result<(), String> + Send>(
    w: &std::sync::Arc<World>,
    ns: &str,
    count: usize,
    fault: F,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, String> {
    let burst = Burst::start(w, WS, ns, count, CHUNK, Duration::from_secs(300));
    burst.a_third_in().await?;
    fault()?;
    burst.finish().await
}

pub async fn manager_killed_mid_burst(w: std::sync::Arc<World>, r: &Report) -> Result<(), String> {
    w.tenant(WS).await?;
    let key = w.target(WS, "t", 0, serde_json::json!({})).await?;
    let mut manager = w.manager("burst-1", &[]);
    w.wait_ready(WS, "t", "True", WAIT).await?;
    w.namespace(WS, "one", Some(&key), serde_json::json!({}))?;
    let dns = w.downstream_ns(WS, "t", WS, "one").await?;
    let before = requests(&w.clusters[0], "configmaps")?;
    let n = burst_size();
    let want = burst_with(&w, "one", n, || {
        manager.signal("KILL");
        Ok(())
    })
    .await?;
    // `manager` is dead; its replacement starts right away, as a supervisor would restart it.
    let replacement = w.manager("burst-2", &[]);
    drop(std::mem::replace(&mut manager, replacement));
    let (copies, took) = exactly(&w, 0, &dns, &want, WAIT).await?;
    r.figure(format!("{n} objects converged {took:.1?} after the burst (manager killed a third into it)"));
    unchanged(&w, 0, &dns, &copies, Duration::from_secs(10)).await?;
    no_deletes(&before, &requests(&w.clusters[0], "configmaps")?, "manager killed mid-burst")?;
    w.wait_ready(WS, "t", "True", WAIT).await?;
    nothing_stuck(&w, WS).await?;
    drop(manager);
    leader_killed_mid_burst(&w, r, &key).await
}

fn replica(w: &World, identity: &str) -> Tmc {
    let flags = [
        "--leader-elect",
        "--leader-election-lease-name",
        LEASE,
        "--leader-election-identity",
        identity,
        "--leader-election-lease-duration",
        "10s",
        "--leader-election-renew-deadline",
        "6s",
        "--leader-election-retry-period",
        "1s",
    ];
    w.manager(&format!("burst-replica-{identity}"), &flags)
}

async fn leader_killed_mid_burst(w: &std::sync::Arc<World>, r: &Report, key: &str) -> Result<(), String> {
    let leases: Api<Lease> = Api::namespaced(w.clients().await.path(&PROVIDER.parse().unwrap()), "default");
    let replicas = [("a", replica(w, "a")), ("b", replica(w, "b"))];
    let leader = eventually("a leader", WAIT, || async {
        let lease = leases.get_opt(LEASE).await.map_err(|e| e.to_string())?;
        Ok(lease.and_then(|l| l.spec?.holder_identity).filter(|h| !h.is_empty()))
    })
    .await?;
    w.wait_ready(WS, "t", "True", WAIT).await?;
    w.namespace(WS, "two", Some(key), serde_json::json!({}))?;
    let dns = w.downstream_ns(WS, "t", WS, "two").await?;
    let before = requests(&w.clusters[0], "configmaps")?;
    let n = burst_size();
    let want = burst_with(w, "two", n, || {
        let (_, p) = replicas.iter().find(|(id, _)| *id == leader).ok_or("leader is no replica")?;
        p.signal("KILL");
        Ok(())
    })
    .await?;
    let (copies, took) = exactly(w, 0, &dns, &want, WAIT).await?;
    r.figure(format!("{n} objects converged {took:.1?} after the burst (leader {leader} killed a third into it)"));
    let holder = leases.get(LEASE).await.map_err(|e| e.to_string())?.spec.and_then(|s| s.holder_identity);
    if holder.as_deref() == Some(leader.as_str()) {
        return Err(format!("the killed leader {leader} still holds the lease"));
    }
    unchanged(w, 0, &dns, &copies, Duration::from_secs(10)).await?;
    no_deletes(&before, &requests(&w.clusters[0], "configmaps")?, "leader killed mid-burst")?;
    w.wait_ready(WS, "t", "True", WAIT).await?;
    nothing_stuck(w, WS).await
}
