//! Nothing stranded: syncer finalizers whose owner is gone, or whose owner's syncer cannot run,
//! are released by the manager's finalizer sweeper. Each test runs a manager of its own (beside
//! the shared one) and asserts on kcp's own evidence: the finalizers list, the object gone, the
//! Event, and the manager's log naming the release. They run alone (serial): a manager's sweeper
//! looks at every bound workspace, so two of these managers side by side would release each
//! other's objects. Each manager gets the shared one's heartbeat settings, so that the two
//! compute the same SyncTarget status and do not overwrite each other's.

use std::sync::Arc;
use std::time::Duration;

use kcp_tmc::kcp::workspace;
use kcp_tmc::syncer::naming::target_key;
use serde_json::json;

use crate::env::{TestResult, Tmc, eventually};
use crate::syncer::{
    assigned_namespace, downstream_get, downstream_ns, events, register, upstream_get, wait_downstream,
};
use crate::{HEARTBEAT_THRESHOLD, PROVIDER, TENANT_A, World, ensure};

const WAIT: Duration = Duration::from_secs(90);

fn own_manager(w: &World, name: &str, extra: &[&str]) -> (Tmc, std::path::PathBuf) {
    let log = w.kcp.dir.path().join(format!("{name}.log"));
    let threshold = format!("{}s", HEARTBEAT_THRESHOLD.as_secs());
    let mut args = vec![
        "--cluster-address-allow",
        "127.0.0.1/32",
        "--heartbeat-threshold",
        &threshold,
        "--syncer-heartbeat-interval",
        "1s",
    ];
    args.extend(extra);
    (Tmc::manager(&w.kcp.kubeconfig.display().to_string(), PROVIDER, &args, log.clone()).process, log)
}

fn configmap(name: &str, finalizers: &[String], annotations: serde_json::Value) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "finalizers": finalizers, "annotations": annotations}, "data": {"v": "1"}})
    .to_string()
}

fn finalizers_of(w: &World, ns: &str, name: &str) -> Result<Option<Vec<String>>, String> {
    Ok(upstream_get(w, TENANT_A, ns, "configmap", name)?.map(|cm| {
        cm["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(String::from))
            .collect()
    }))
}

/// The state a SyncTarget deleted while the manager was down leaves behind: kcp objects holding
/// the finalizer (and status annotation) of a target key no SyncTarget has. A manager started
/// afterwards releases them once its caches have synced; a live target's finalizer stays.
pub async fn finalizers_of_targets_gone_while_down_are_released_at_start(w: Arc<World>) -> TestResult {
    let ns = "stranded-gone";
    w.kcp.kubectl(TENANT_A, &["create", "namespace", ns], None)?;
    // A pull-mode target that exists but never reports: its marker on an object that is not
    // being deleted is its syncer's business, not the sweeper's.
    let pull = "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: stranded-live}\nspec: {}\n";
    w.kcp.kubectl(TENANT_A, &["apply", "-f", "-"], Some(pull))?;
    let cluster = workspace::resolve(&w.clients, &TENANT_A.parse().unwrap()).await.map_err(|e| e.to_string())?;
    let (gone, live) = (target_key(&cluster, "stranded-gone-target"), target_key(&cluster, "stranded-live"));
    let fin = |k: &str| format!("tmc.kcp.io/syncer-{k}");
    let keep = "example.com/test-keep".to_string();
    let status = json!({ format!("status.tmc.kcp.io/{gone}"): "{}" });
    for (name, finalizers, annotations) in [
        ("deleting", vec![fin(&gone)], json!({})),
        ("kept", vec![fin(&gone), keep.clone()], status),
        ("live", vec![fin(&live)], json!({})),
    ] {
        w.kcp.kubectl(TENANT_A, &["-n", ns, "apply", "-f", "-"], Some(&configmap(name, &finalizers, annotations)))?;
    }
    w.kcp.kubectl(TENANT_A, &["-n", ns, "delete", "configmap", "deleting", "--wait=false"], None)?;
    let stranded = upstream_get(&w, TENANT_A, ns, "configmap", "deleting")?.ok_or("deleting: gone too early")?;
    ensure!(!stranded["metadata"]["deletionTimestamp"].is_null(), "not terminating: {stranded}");

    let (manager, log) = own_manager(&w, "stranded-restart", &[]);
    eventually("the stranded object is gone from kcp", WAIT, || async {
        Ok(upstream_get(&w, TENANT_A, ns, "configmap", "deleting")?.is_none().then_some(()))
    })
    .await?;
    eventually("the orphaned finalizer and annotation are released, other finalizers kept", WAIT, || async {
        let cm = upstream_get(&w, TENANT_A, ns, "configmap", "kept")?.ok_or("kept: gone")?;
        let finalizers = cm["metadata"]["finalizers"].clone();
        let annotated = cm["metadata"]["annotations"].get(format!("status.tmc.kcp.io/{gone}")).is_some();
        Ok((finalizers == json!([keep]) && !annotated).then_some(()))
    })
    .await?;
    let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
    ensure!(text.contains("released syncer markers"), "the new manager's log names no release");
    ensure!(finalizers_of(&w, ns, "live")? == Some(vec![fin(&live)]), "a live target's finalizer was released");
    drop(manager);

    for name in ["kept", "live"] {
        let patch = r#"{"metadata":{"finalizers":null}}"#;
        w.kcp.kubectl(TENANT_A, &["-n", ns, "patch", "configmap", name, "--type=merge", "-p", patch], None)?;
    }
    w.kcp.kubectl(TENANT_A, &["delete", "synctarget", "stranded-live", "--wait=false"], None)?;
    w.kcp.kubectl(TENANT_A, &["delete", "namespace", ns, "--wait=false"], None)?;
    Ok(())
}

/// A push-mode target whose kubeconfig Secret is deleted has no syncer: a synced object deleted
/// in kcp then waits only the deletion timeout, and is released with a `DownstreamOrphaned`
/// Event naming the target. Its copy stays in the cluster (no syncer could delete it).
pub async fn deletion_times_out_when_the_targets_syncer_cannot_run(w: Arc<World>) -> TestResult {
    let (name, ns) = ("stranded-push", "stranded-push");
    let key = register(&w, TENANT_A, name, 1).await?;
    assigned_namespace(&w, TENANT_A, ns, &key)?;
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"v": "1"}}).to_string();
    w.kcp.kubectl(TENANT_A, &["-n", ns, "apply", "-f", "-"], Some(&cm))?;
    let dns = downstream_ns(&w, TENANT_A, name, TENANT_A, ns).await;
    wait_downstream(&w, 1, &dns, "configmap", "c").await?;
    let finalizer = format!("tmc.kcp.io/syncer-{key}");
    eventually("the syncer's finalizer on the kcp object", WAIT, || async {
        Ok(finalizers_of(&w, ns, "c")?.is_some_and(|f| f.contains(&finalizer)).then_some(()))
    })
    .await?;

    let timeout = Duration::from_secs(5);
    let (manager, _log) =
        own_manager(&w, "stranded-timeout", &["--syncer-deletion-timeout", "5s", "--finalizer-sweep-interval", "2s"]);
    w.kcp.kubectl(TENANT_A, &["-n", "default", "delete", "secret", &format!("{name}-kubeconfig")], None)?;
    crate::syncer::wait_ready_reason(&w, TENANT_A, name, "KubeconfigSecretNotFound").await?;
    // The new manager must have decided too before the clock starts (its own reconcile).
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.kcp.kubectl(TENANT_A, &["-n", ns, "delete", "configmap", "c", "--wait=false"], None)?;
    let started = std::time::Instant::now();
    eventually("the deleted object released from the syncerless target", timeout + Duration::from_secs(40), || async {
        Ok(upstream_get(&w, TENANT_A, ns, "configmap", "c")?.is_none().then_some(()))
    })
    .await?;
    ensure!(started.elapsed() >= timeout - Duration::from_secs(1), "released before the deletion timeout");
    let orphaned = events(&w, TENANT_A, ns, "DownstreamOrphaned")?;
    ensure!(orphaned.iter().any(|e| e.contains(name) && e.contains("c:")), "events: {orphaned:?}");
    ensure!(downstream_get(&w, 1, &dns, "configmap", "c")?.is_some(), "no syncer ran, yet the copy is gone");
    drop(manager);

    w.kcp.kubectl(TENANT_A, &["delete", "synctarget", name, "--wait=false"], None)?;
    w.kcp.kubectl(TENANT_A, &["delete", "namespace", ns, "--wait=false"], None)?;
    Ok(())
}
