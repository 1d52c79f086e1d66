//! What a cluster cannot take: a downstream namespace name already taken by something else, and
//! an object larger than the cluster's etcd stores. Each is reported on the kcp object, retried, and
//! nothing foreign is touched or lost.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::cluster::Cluster;
use crate::env::{TestResult, eventually};
use crate::syncer::{WAIT, assigned_namespace, downstream_get, downstream_ns, events, register, upstream_get};
use crate::{TENANT_A, World, ensure};

pub async fn foreign_downstream_namespace_is_reported_not_overwritten(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_A, "phys-conflict", 0).await?;
    let dns = downstream_ns(&w, TENANT_A, "phys-conflict", TENANT_A, "conflict").await;
    // Someone else's namespace with exactly the name the syncer would use.
    w.clusters[0].kubectl(&["create", "namespace", &dns])?;
    w.clusters[0].kubectl(&["label", "namespace", &dns, "owner=someone-else"])?;

    assigned_namespace(&w, TENANT_A, "conflict", &key)?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "blocked"}, "data": {"a": "b"}});
    w.kcp.kubectl(TENANT_A, &["-n", "conflict", "apply", "-f", "-"], Some(&cm.to_string()))?;

    let found = eventually("a DownstreamNamespaceConflict event", WAIT, || async {
        let found = events(&w, TENANT_A, "conflict", "DownstreamNamespaceConflict")?;
        Ok((!found.is_empty()).then_some(found))
    })
    .await?;
    ensure!(
        found.iter().any(|e| e.contains("blocked") && e.contains(&dns) && e.contains("phys-conflict")),
        "event names the object, the namespace and the target: {found:?}"
    );
    // Retried with backoff, still never touched: no locator, no label of ours, nothing inside.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ns = downstream_get(&w, 0, "", "namespace", &dns)?.ok_or("the foreign namespace is gone")?;
    ensure!(ns["metadata"]["annotations"].get("tmc.kcp.io/namespace-locator").is_none(), "locator written: {ns}");
    ensure!(ns["metadata"]["labels"].get("tmc.kcp.io/target").is_none(), "target label written: {ns}");
    ensure!(downstream_get(&w, 0, &dns, "configmap", "blocked")?.is_none(), "object synced into a foreign namespace");
    Ok(())
}

/// A cluster of its own whose etcd refuses requests over 256 KiB; kcp accepts a 400 KiB Secret.
pub async fn objects_too_large_for_the_cluster_are_reported(w: Arc<World>) -> TestResult {
    let small = tokio::task::spawn_blocking(|| {
        Cluster::start_with("small-etcd", &[("TMC_ETCD_ARGS", "--max-request-bytes=262144")])
    })
    .await
    .map_err(|e| e.to_string())??;
    let kubeconfig = small.kubeconfig_text();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "small-kubeconfig", "namespace": "default" },
        "stringData": { "kubeconfig": kubeconfig },
    });
    w.kcp.kubectl(TENANT_A, &["apply", "-f", "-"], Some(&secret.to_string()))?;
    let target = "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: phys-small}\nspec:\n  kubeconfigSecretRef: {namespace: default, name: small-kubeconfig}\n";
    w.kcp.kubectl(TENANT_A, &["apply", "-f", "-"], Some(target))?;
    let cluster = kcp_tmc::kcp::workspace::resolve(&w.clients, &TENANT_A.parse()?).await?;
    let key = kcp_tmc::syncer::naming::target_key(&cluster, "phys-small");
    assigned_namespace(&w, TENANT_A, "big", &key)?;
    let big = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "huge"},
                     "stringData": {"blob": "x".repeat(400 * 1024)}});
    let fine = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "small"}, "data": {"a": "b"}});
    // create, not apply: apply's last-applied annotation would be too long for kcp itself.
    w.kcp.kubectl(TENANT_A, &["-n", "big", "create", "-f", "-"], Some(&big.to_string()))?;
    w.kcp.kubectl(TENANT_A, &["-n", "big", "apply", "-f", "-"], Some(&fine.to_string()))?;

    let dns = downstream_ns(&w, TENANT_A, "phys-small", TENANT_A, "big").await;
    let read = |args: &[&str]| {
        let mut full = vec![format!("--kubeconfig={}", small.kubeconfig.display())];
        full.extend(args.iter().map(|a| a.to_string()));
        std::process::Command::new("kubectl").args(&full).output().map_err(|e| e.to_string())
    };
    // The small object is synced; the large one is refused by the cluster, reported, kept in kcp.
    eventually("the small ConfigMap in the small cluster", WAIT, || async {
        let out = read(&["-n", &dns, "get", "configmap", "small", "--ignore-not-found", "-o", "name"])?;
        Ok((!out.stdout.is_empty()).then_some(()))
    })
    .await?;
    // etcd refuses it and the kube-apiserver answers 500: not the tenant's invalid input, but
    // still something only the tenant can fix.
    let found = eventually("a SyncFailed event for the large Secret", WAIT, || async {
        let found = events(&w, TENANT_A, "big", "SyncFailed")?;
        Ok(found.iter().any(|e| e.contains("huge")).then_some(found))
    })
    .await?;
    ensure!(found.iter().any(|e| e.contains("phys-small") && e.to_lowercase().contains("too large")), "{found:?}");
    ensure!(upstream_get(&w, TENANT_A, "big", "secret", "huge")?.is_some(), "the upstream Secret must never be lost");
    Ok(())
}
