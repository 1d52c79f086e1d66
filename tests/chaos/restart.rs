//! Case 2: a plain restart of the manager, with many unrelated objects in bound workspaces and
//! added latency to kcp through the proxy, deletes or recreates nothing downstream (checked by
//! UID and by the cluster's DELETE counter).
//! Case 3: kcp killed and restarted (same data directory, same flags) in the middle of a burst:
//! everything arrives exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::checks::{exactly, no_deletes, nothing_stuck, unchanged};
use crate::env::eventually;
use crate::evidence::{downstream, recreated, requests};
use crate::proxy::Mode;
use crate::world::{Burst, WAIT, World, apply_configmaps, configmaps};
use crate::{Report, burst_size, noise_size};

pub async fn manager_restart_with_unrelated_objects_and_latency(w: Arc<World>, r: &Report) -> Result<(), String> {
    let (ws, noise) = ("root:chaos-quiet", "root:chaos-noise");
    w.tenant(ws).await?;
    w.tenant(noise).await?;
    let n = noise_size();
    let t = Instant::now();
    for part in 0..n.div_ceil(1000) {
        let ns = format!("noise-{part}");
        w.namespace(noise, &ns, None, json!({}))?;
        let objects = configmaps(&ns, 1000.min(n - part * 1000), "x");
        let w2 = w.clone();
        tokio::task::spawn_blocking(move || {
            apply_configmaps(&w2.kcp, noise, &ns, &objects, 500, Instant::now() + Duration::from_secs(120), None)
        })
        .await
        .map_err(|e| e.to_string())??;
    }
    r.figure(format!("{n} unrelated ConfigMaps created in {noise} in {:.1?}", t.elapsed()));
    let key = w.target(ws, "t", 1, json!({})).await?;
    let manager = w.manager("quiet-1", &[]);
    w.wait_ready(ws, "t", "True", WAIT).await?;
    w.namespace(ws, "app", Some(&key), json!({}))?;
    let want = configmaps("app", 30, "1");
    let w2 = w.clone();
    let want2 = want.clone();
    tokio::task::spawn_blocking(move || {
        apply_configmaps(&w2.kcp, ws, "app", &want2, 50, Instant::now() + Duration::from_secs(60), None)
    })
    .await
    .map_err(|e| e.to_string())??;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}});
    w.kcp.kubectl(ws, &["-n", "app", "apply", "-f", "-"], Some(&secret.to_string()))?;
    let dns = w.downstream_ns(ws, "t", ws, "app").await?;
    let (copies, _) = exactly(&w, 1, &dns, &want, WAIT).await?;
    let secrets = eventually("the Secret downstream", WAIT, || async {
        let s = downstream(&w.clusters[1], &dns, "secrets")?;
        Ok((!s.is_empty()).then_some(s))
    })
    .await?;
    let (cms, sec) = (requests(&w.clusters[1], "configmaps")?, requests(&w.clusters[1], "secrets")?);

    w.kcp_proxy.set(Mode::Delay(Duration::from_millis(200)));
    drop(manager);
    let t = Instant::now();
    let manager = w.manager("quiet-2", &[]);
    // The restarted manager lists everything through the slow link; give it time to act on
    // whatever it believes, then look at what the cluster saw.
    let result = async {
        eventually("the restarted manager ready", WAIT, || async {
            Ok((!manager.output().is_empty() && manager.output().contains("starting controllers")).then_some(()))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(45)).await;
        Ok::<_, String>(())
    }
    .await;
    w.kcp_proxy.set(Mode::Pass);
    result?;
    r.figure(format!("observed {:.1?} after the restart with 200 ms added per chunk to kcp", t.elapsed()));
    unchanged(&w, 1, &dns, &copies, Duration::ZERO).await?;
    let gone = recreated(&secrets, &downstream(&w.clusters[1], &dns, "secrets")?);
    if !gone.is_empty() {
        return Err(format!("Secrets deleted or recreated: {gone:?}"));
    }
    no_deletes(&cms, &requests(&w.clusters[1], "configmaps")?, "ConfigMaps after restart")?;
    no_deletes(&sec, &requests(&w.clusters[1], "secrets")?, "Secrets after restart")?;
    exactly(&w, 1, &dns, &want, WAIT).await?;
    w.wait_ready(ws, "t", "True", WAIT).await?;
    nothing_stuck(&w, ws).await
}

pub async fn kcp_restarted_mid_burst(w: Arc<World>, r: &Report) -> Result<(), String> {
    let ws = "root:chaos-kcp";
    w.tenant(ws).await?;
    let key = w.target(ws, "t", 0, json!({})).await?;
    let _manager = w.manager("kcp-restart", &[]);
    w.wait_ready(ws, "t", "True", WAIT).await?;
    w.namespace(ws, "burst", Some(&key), json!({}))?;
    let dns = w.downstream_ns(ws, "t", ws, "burst").await?;
    let before = requests(&w.clusters[0], "configmaps")?;
    let n = burst_size();
    let burst = Burst::start(&w, ws, "burst", n, 25, Duration::from_secs(400));
    burst.a_third_in().await?;
    w.kcp_proc.lock().unwrap().kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.kcp_proc.lock().unwrap().restart()?;
    let t = Instant::now();
    eventually("kcp serving again", Duration::from_secs(180), || async {
        Ok(w.kcp.kubectl(ws, &["get", "namespace", "burst"], None).ok().map(|_| ()))
    })
    .await?;
    r.figure(format!("kcp served again {:.1?} after its restart", t.elapsed()));
    let want = burst.finish().await?;
    let (copies, took) = exactly(&w, 0, &dns, &want, Duration::from_secs(240)).await?;
    r.figure(format!("{n} objects converged {took:.1?} after the burst"));
    unchanged(&w, 0, &dns, &copies, Duration::from_secs(10)).await?;
    no_deletes(&before, &requests(&w.clusters[0], "configmaps")?, "kcp restarted mid-burst")?;
    w.wait_ready(ws, "t", "True", WAIT).await?;
    nothing_stuck(&w, ws).await
}
