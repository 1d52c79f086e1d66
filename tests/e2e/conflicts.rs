//! A downstream namespace name that is already taken by something else: reported on the kcp
//! objects that cannot be synced, and the foreign namespace is never touched.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::env::{TestResult, eventually};
use crate::syncer::{WAIT, assigned_namespace, downstream_get, downstream_ns, events, register};
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
