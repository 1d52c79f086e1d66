//! Relists that must not lose anything: a downstream copy deleted while the cluster's API server
//! was down (so the syncer's watch missed the delete and, with etcd compacted, must relist) is
//! restored within seconds of the watch coming back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::env::{TestResult, eventually};
use crate::syncer::{WAIT, assigned_namespace, downstream_ns};
use crate::{TENANT_A, World, ensure};

/// How soon after the API server is back the copy must be there again: the watcher's backoff
/// after a failed watch is at most a few seconds, then one relist and one sync.
const RESTORED_WITHIN: Duration = Duration::from_secs(30);

/// A cluster of its own: its API server is killed and restarted, which would disturb every
/// test sharing a cluster.
pub async fn copy_deleted_while_the_api_server_was_down_is_restored(w: Arc<World>) -> TestResult {
    let cluster = Arc::new(tokio::task::spawn_blocking(|| Cluster::start("relist")).await.map_err(|e| e.to_string())??);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "relist-kubeconfig", "namespace": "default" },
        "stringData": { "kubeconfig": cluster.kubeconfig_text() },
    });
    w.kcp.kubectl(TENANT_A, &["apply", "-f", "-"], Some(&secret.to_string()))?;
    let target = "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: phys-relist}\nspec:\n  kubeconfigSecretRef: {namespace: default, name: relist-kubeconfig}\n";
    w.kcp.kubectl(TENANT_A, &["apply", "-f", "-"], Some(target))?;
    let ws = kcp_tmc::kcp::workspace::resolve(&w.clients, &TENANT_A.parse()?).await?;
    let key = kcp_tmc::syncer::naming::target_key(&ws, "phys-relist");
    assigned_namespace(&w, TENANT_A, "relist", &key)?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}, "data": {"mode": "prod"}});
    w.kcp.kubectl(TENANT_A, &["-n", "relist", "apply", "-f", "-"], Some(&cm.to_string()))?;

    let dns = downstream_ns(&w, TENANT_A, "phys-relist", TENANT_A, "relist").await;
    let get = |cluster: Arc<Cluster>, dns: String| async move {
        let out = cluster.kubectl(&["-n", &dns, "get", "configmap", "kept", "-o", "json", "--ignore-not-found"])?;
        if out.trim().is_empty() {
            Ok(None)
        } else {
            serde_json::from_str::<Value>(&out).map(Some).map_err(|e| e.to_string())
        }
    };
    let first = eventually("the copy in the relist cluster", WAIT, || get(cluster.clone(), dns.clone())).await?;
    let old_uid = first["metadata"]["uid"].as_str().ok_or("copy without a UID")?.to_string();

    // The API server goes away; behind its back the copy is deleted in etcd and etcd compacted,
    // so the syncer's watch cannot resume from where it was: it must relist.
    cluster.kill_apiserver()?;
    let deleted = cluster.etcd_delete(&format!("/registry/configmaps/{dns}/kept"))?;
    ensure!(deleted == 1, "etcd deleted {deleted} keys, not the copy");
    cluster.etcd_compact()?;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start_apiserver()).await.map_err(|e| e.to_string())??;
    let back = Instant::now();

    let restored = eventually("the copy restored after the relist", RESTORED_WITHIN, || {
        let (cluster, dns, old_uid) = (cluster.clone(), dns.clone(), old_uid.clone());
        async move {
            let copy = get(cluster, dns).await?;
            Ok(copy.filter(|c| c["metadata"]["uid"].as_str().is_some_and(|uid| uid != old_uid)))
        }
    })
    .await?;
    ensure!(restored["data"] == json!({"mode": "prod"}), "restored copy has other data: {restored}");
    eprintln!("relist: copy restored {:?} after the API server was back", back.elapsed());
    Ok(())
}
