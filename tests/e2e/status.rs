//! `tmc status` against the shared kcp: a SyncTarget of this test's own with a syncer's report
//! (as a pull-mode syncer writes it), a Placement choosing it, and a Warning Event on an object
//! that did not sync all show up, in the table and in JSON.

use std::sync::Arc;
use std::time::Duration;

use kcp_tmc::apis::sync::v1alpha1::SyncTarget;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::env::{self, TestResult, eventually};
use crate::{TENANT_A, World, ensure};

const TARGET: &str = "status-east";
const NS: &str = "status-demo";

fn apply(w: &World, yaml: &str) -> Result<(), String> {
    w.kcp.kubectl(TENANT_A, &["apply", "-f", "-"], Some(yaml)).map(|_| ())
}

pub async fn status_shows_targets_placements_and_failed_objects(w: Arc<World>) -> TestResult {
    let target = json!({
        "apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget",
        "metadata": {"name": TARGET, "labels": {"status-test": "yes"}}, "spec": {},
    });
    apply(&w, &target.to_string())?;
    // The report a syncer writes with its heartbeat.
    let now = jiff::Timestamp::now().round(jiff::Unit::Second)?;
    let report = json!({"status": {"lastSyncTime": now.to_string(), "syncedResources": [
        {"group": "apps", "kind": "Deployment", "resource": "deployments", "version": "v1", "state": "Syncing", "syncedObjects": 3},
        {"group": "", "kind": "Service", "resource": "services", "version": "v1", "state": "Syncing", "syncedObjects": 1},
    ]}});
    let targets: Api<SyncTarget> = Api::all(w.clients.path(&TENANT_A.parse()?));
    targets.patch_status(TARGET, &PatchParams::default(), &Patch::Merge(&report)).await?;
    // Keep heart-beating like a syncer would, so the target stays Ready however long a loaded
    // machine takes to place the namespace.
    let beating = targets.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let Ok(now) = jiff::Timestamp::now().round(jiff::Unit::Second) else { continue };
            let beat = json!({"status": {"lastSyncTime": now.to_string()}});
            let _ = beating.patch_status(TARGET, &PatchParams::default(), &Patch::Merge(&beat)).await;
        }
    });
    let _stop = AbortOnDrop(heartbeat);

    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"status-test-app": "web"}}});
    apply(&w, &ns.to_string())?;
    let placement = json!({
        "apiVersion": "placement.kcp.io/v1alpha1", "kind": "Placement", "metadata": {"name": "status-web"},
        "spec": {"namespaceSelector": {"matchLabels": {"status-test-app": "web"}},
                 "locationSelector": {"matchLabels": {"status-test": "yes"}}},
    });
    apply(&w, &placement.to_string())?;
    // A Warning as the syncer records it when a cluster rejects an object.
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.status-test", "namespace": NS},
        "eventTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "reportingController": "tmc.kcp.io/syncer", "reportingInstance": "e2e", "action": "Sync",
        "type": "Warning", "reason": "SyncRejected", "note": "status-east rejected it (422): spec is invalid; retrying",
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": NS},
    });
    apply(&w, &event.to_string())?;

    let kubeconfig = w.kcp.kubeconfig.display().to_string();
    let table = eventually(
        "tmc status to show the target, the placement and the failed object",
        Duration::from_secs(60),
        || {
            let kubeconfig = kubeconfig.clone();
            async move {
                let (code, out, err) = env::tmc(&["status", "--kubeconfig", &kubeconfig, "--workspace", TENANT_A]);
                if code != 0 {
                    return Err(format!("tmc status exited {code}: {err}"));
                }
                let placed =
                    out.lines().any(|l| l.starts_with("status-web") && l.contains("Bound") && l.contains(TARGET));
                Ok((placed).then_some(out))
            }
        },
    )
    .await?;
    let row = table.lines().find(|l| l.starts_with(TARGET)).ok_or(format!("no {TARGET} row:\n{table}"))?;
    ensure!(row.contains("Deployment=3 Service=1"), "synced counts missing from {row:?}");
    ensure!(table.contains(&format!("WORKSPACE {TENANT_A}")), "{table}");
    let failed = table.lines().find(|l| l.starts_with(NS)).ok_or(format!("no failed object row:\n{table}"))?;
    ensure!(failed.contains("Deployment/web") && failed.contains("SyncRejected"), "{failed:?}");

    let (code, out, err) = env::tmc(&["status", "--kubeconfig", &kubeconfig, "--workspace", TENANT_A, "-o", "json"]);
    ensure!(code == 0, "tmc status -o json: {err}");
    let v: Value = serde_json::from_str(&out)?;
    let st = v[0]["syncTargets"].as_array().into_iter().flatten().find(|t| t["name"] == TARGET).ok_or("no target")?;
    ensure!(st["synced"][0]["syncedObjects"] == 3 && st["ready"].is_string(), "{st}");
    let p = v[0]["placements"].as_array().into_iter().flatten().find(|p| p["name"] == "status-web").ok_or("no pl")?;
    ensure!(p["namespaces"] == 1 && p["targets"] == json!([TARGET]), "{p}");

    let (code, _, err) = env::tmc(&["status", "--kubeconfig", &kubeconfig, "--workspace", "root:no-such-tenant"]);
    ensure!(code == 1 && err.contains("fix:"), "an unknown workspace must say what to check: {err}");
    Ok(())
}

/// Aborts the task when the test ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
