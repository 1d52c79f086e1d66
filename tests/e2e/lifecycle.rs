//! A SyncTarget's end: deleting it stops its syncer and releases the kcp objects it held, so
//! tenants can still delete them; what runs in the cluster is left alone (deregistering a
//! cluster does not tear down its workloads).

use std::sync::Arc;

use serde_json::json;

use crate::env::{TestResult, eventually};
use crate::syncer::{WAIT, assigned_namespace, downstream_get, downstream_ns, register, upstream_get, wait_downstream};
use crate::{TENANT_B, World, ensure};

pub async fn deleting_a_synctarget_releases_its_objects(w: Arc<World>) -> TestResult {
    let key = register(&w, TENANT_B, "phys-retired", 0).await?;
    assigned_namespace(&w, TENANT_B, "retired", &key)?;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}, "data": {"a": "b"}});
    w.kcp.kubectl(TENANT_B, &["-n", "retired", "apply", "-f", "-"], Some(&cm.to_string()))?;
    let dns = downstream_ns(&w, TENANT_B, "phys-retired", TENANT_B, "retired").await;
    wait_downstream(&w, 0, &dns, "configmap", "kept").await?;
    let finalizer = format!("tmc.kcp.io/syncer-{key}");
    eventually("the syncer's finalizer on the kcp object", WAIT, || async {
        let up = upstream_get(&w, TENANT_B, "retired", "configmap", "kept")?.ok_or("gone")?;
        Ok(up["metadata"]["finalizers"].to_string().contains(&finalizer).then_some(()))
    })
    .await?;

    w.kcp.kubectl(TENANT_B, &["delete", "synctarget", "phys-retired"], None)?;
    eventually("the finalizer released", WAIT, || async {
        let up = upstream_get(&w, TENANT_B, "retired", "configmap", "kept")?.ok_or("gone")?;
        Ok((!up["metadata"]["finalizers"].to_string().contains(&finalizer)).then_some(()))
    })
    .await?;
    // The tenant can delete the object; nothing waits on the removed target.
    w.kcp.kubectl(TENANT_B, &["-n", "retired", "delete", "configmap", "kept", "--timeout=20s"], None)?;
    ensure!(upstream_get(&w, TENANT_B, "retired", "configmap", "kept")?.is_none(), "still in kcp");
    // The cluster is no longer managed: its copy stays where it was.
    ensure!(downstream_get(&w, 0, &dns, "configmap", "kept")?.is_some(), "the copy was torn down");
    Ok(())
}
