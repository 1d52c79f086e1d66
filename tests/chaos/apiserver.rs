//! Case 4: a cluster's kube-apiserver killed; while it is down a copy is deleted through a
//! second kube-apiserver on the same etcd, behind the syncer's back; the first comes back and
//! the copy must be restored within seconds of the syncer's watch resuming.
//! Case 5: etcd compacted while the syncer cannot reach the cluster and the kube-apiserver
//! restarted, so the resumed watch gets 410 Gone: the syncer relists, restores the deleted copy,
//! reverts the changed one, writes nothing else and deletes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::Report;
use crate::checks::{exactly, no_deletes, nothing_stuck, unchanged};
use crate::env::{eventually, free_port};
use crate::evidence::{requests, writes};
use crate::procs::etcd_compact;
use crate::proxy::Mode;
use crate::world::{WAIT, World, apply_configmaps, configmaps};

/// A tenant with target `t` on cluster `index`, a running manager and ten synced ConfigMaps.
async fn synced(w: &Arc<World>, ws: &str, index: usize, log: &str) -> Result<Synced, String> {
    w.tenant(ws).await?;
    let key = w.target(ws, "t", index, json!({})).await?;
    let manager = w.manager(log, &[]);
    w.wait_ready(ws, "t", "True", WAIT).await?;
    w.namespace(ws, "app", Some(&key), json!({}))?;
    let want = configmaps("c", 10, "1");
    let (w2, want2, ws2) = (w.clone(), want.clone(), ws.to_string());
    tokio::task::spawn_blocking(move || {
        apply_configmaps(&w2.kcp, &ws2, "app", &want2, 50, Instant::now() + Duration::from_secs(60), None)
    })
    .await
    .map_err(|e| e.to_string())??;
    let dns = w.downstream_ns(ws, "t", ws, "app").await?;
    let (copies, _) = exactly(w, index, &dns, &want, WAIT).await?;
    Ok(Synced { _manager: manager, want, dns, copies })
}

struct Synced {
    _manager: crate::env::Tmc,
    want: std::collections::BTreeMap<String, serde_json::Value>,
    dns: String,
    copies: std::collections::BTreeMap<String, crate::evidence::Copy>,
}

async fn wait_apiserver(w: &World, index: usize) -> Result<(), String> {
    eventually("the kube-apiserver ready", Duration::from_secs(120), || async {
        Ok(w.clusters[index].kubectl(&["get", "--raw", "/readyz"]).ok().map(|_| ()))
    })
    .await
}

pub async fn copy_deleted_behind_the_syncers_back(w: Arc<World>, r: &Report) -> Result<(), String> {
    let (ws, index) = ("root:chaos-behind", 1);
    let s = synced(&w, ws, index, "behind").await?;
    w.apiservers[index].lock().unwrap().kill9();
    // A second kube-apiserver on the same etcd; the copy is deleted through it.
    let port = free_port().to_string();
    let log = w.clusters[index].dir.path().join("kube-apiserver-2.log");
    let mut second = w.apiservers[index].lock().unwrap().spawn_variant("--secure-port", &port, &log)?;
    let kc = w.clusters[index].kubeconfig.display().to_string();
    let server = format!("--server=https://127.0.0.1:{port}");
    let kubectl = |args: &[&str]| {
        let out =
            std::process::Command::new("kubectl").arg(format!("--kubeconfig={kc}")).arg(&server).args(args).output();
        out.map_err(|e| e.to_string()).and_then(|o| {
            o.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&o.stderr).into_owned())
        })
    };
    let deleted = eventually("delete through the second kube-apiserver", Duration::from_secs(120), || async {
        Ok(kubectl(&["-n", &s.dns, "delete", "configmap", "c-0"]).ok())
    })
    .await;
    let _ = second.kill();
    let _ = second.wait();
    deleted?;
    w.apiservers[index].lock().unwrap().restart()?;
    wait_apiserver(&w, index).await?;
    let t = Instant::now();
    let (_, took) = exactly(&w, index, &s.dns, &s.want, Duration::from_secs(90)).await?;
    r.figure(format!("deleted copy restored {:.1?} after the kube-apiserver was ready again", t.elapsed()));
    if took > Duration::from_secs(30) {
        return Err(format!("the copy came back only after {took:.1?}; wanted within 30 s"));
    }
    let mut others = s.copies.clone();
    others.remove("c-0");
    unchanged(&w, index, &s.dns, &others, Duration::from_secs(5)).await?;
    nothing_stuck(&w, ws).await
}

pub async fn compaction_forces_a_relist(w: Arc<World>, r: &Report) -> Result<(), String> {
    let (ws, index) = ("root:chaos-compact", 0);
    let s = synced(&w, ws, index, "compact").await?;
    w.cluster_proxies[index].set(Mode::Cut);
    let cluster = &w.clusters[index];
    let ns = s.dns.as_str();
    let changed = async {
        cluster.kubectl(&["-n", ns, "delete", "configmap", "c-0"])?;
        cluster.kubectl(&[
            "-n",
            ns,
            "patch",
            "configmap",
            "c-1",
            "--type=merge",
            "-p",
            r#"{"data":{"rev":"drift"}}"#,
        ])?;
        // Churn elsewhere so the compacted revision lies well past the syncer's last one.
        for i in 0..20 {
            cluster.kubectl(&["-n", "default", "create", "configmap", &format!("churn-{i}")])?;
        }
        let endpoint = w.apiservers[index].lock().unwrap().flag("--etcd-servers").ok_or("no --etcd-servers")?;
        let rev = etcd_compact(&endpoint)?;
        r.figure(format!("etcd compacted at revision {rev}"));
        Ok::<_, String>(())
    }
    .await;
    if let Err(e) = changed {
        w.cluster_proxies[index].set(Mode::Pass);
        return Err(e);
    }
    // A fresh kube-apiserver's watch cache starts at the compacted revision: the syncer's
    // resumed watch gets 410 Gone from it (and etcd could not serve the old revision either).
    w.apiservers[index].lock().unwrap().kill9();
    w.apiservers[index].lock().unwrap().restart()?;
    wait_apiserver(&w, index).await?;
    let before = requests(cluster, "configmaps")?;
    w.cluster_proxies[index].set(Mode::Pass);
    let (_, took) = exactly(&w, index, ns, &s.want, Duration::from_secs(90)).await?;
    r.figure(format!("deleted and changed copies repaired {took:.1?} after the link came back"));
    let mut others = s.copies.clone();
    others.retain(|n, _| n != "c-0" && n != "c-1");
    unchanged(&w, index, ns, &others, Duration::from_secs(10)).await?;
    let after = requests(cluster, "configmaps")?;
    no_deletes(&before, &after, "after the relist")?;
    let written = writes(&before, &after);
    r.figure(format!("ConfigMap writes after the relist: {written} (2 needed)"));
    if written > 2 {
        return Err(format!("{written} ConfigMap writes after the relist; 2 were needed ({before:?} -> {after:?})"));
    }
    nothing_stuck(&w, ws).await
}
