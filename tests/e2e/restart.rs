//! A restart deletes nothing (issue 10, item 2): with thousands of unrelated ConfigMaps in
//! another bound workspace, the kcp view of ConfigMaps takes a while to list after a manager
//! starts, while the cluster's view of the copies is there at once. A syncer that read "not in
//! the kcp view yet" as "gone from kcp" deleted synced copies and created them again.
//!
//! The test runs a manager of its own on a provider workspace of its own (the shared manager
//! never sees the load), restarts it, and checks the cluster's own evidence: every copy keeps
//! its UID and the API server counted no write to ConfigMaps or Secrets. It runs serially:
//! cluster 1's write counter must not move for other tests' reasons.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::env::{self, TestResult, Tmc, eventually};
use crate::syncer::{assigned_namespace, downstream_get, downstream_ns, register, wait_downstream};
use crate::{World, ensure};

const PROVIDER: &str = "root:restart-provider";
const TENANT: &str = "root:restart-tenant";
const CROWD: &str = "root:restart-crowd";
const TARGET: &str = "restart";
const CLUSTER: usize = 1;
const NAMESPACE: &str = "app";
const UNRELATED: usize = 3000;
const COPIES: usize = 6;
/// Long enough for the restarted syncer to work through every key the cluster's view queued.
const SETTLE: Duration = Duration::from_secs(15);

/// The (kind, name, uid) of every downstream copy.
fn uids(w: &World, dns: &str) -> Result<Vec<(&'static str, String, String)>, String> {
    let mut out = vec![];
    for i in 0..COPIES {
        for kind in ["configmap", "secret"] {
            let name = format!("{kind}-{i}");
            let copy = downstream_get(w, CLUSTER, dns, kind, &name)?.ok_or(format!("{kind} {dns}/{name} is gone"))?;
            out.push((kind, name, copy["metadata"]["uid"].as_str().unwrap_or_default().to_string()));
        }
    }
    Ok(out)
}

fn writes(w: &World) -> Result<(u64, u64), String> {
    Ok((w.clusters[CLUSTER].write_requests("configmaps")?, w.clusters[CLUSTER].write_requests("secrets")?))
}

/// Waits for `m` to log that it listed `resource` in kcp.
async fn listed(m: &Tmc, resource: &str) -> Result<(), String> {
    eventually(&format!("the manager to list {resource} in kcp"), Duration::from_secs(240), || async {
        let log = m.output();
        let line = format!("resource={resource}");
        Ok(log.lines().any(|l| l.contains("listed a resource in kcp") && l.contains(&line)).then_some(()))
    })
    .await
}

pub async fn restart_with_unrelated_objects_deletes_nothing(w: Arc<World>) -> TestResult {
    let started = Instant::now();
    let admin = w.kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &admin, "--workspace", PROVIDER, "--create-workspace"]);
    ensure!(code == 0, "tmc install failed: {out}{err}");
    w.bind_tenant(TENANT, PROVIDER, Duration::from_secs(60)).await?;
    w.bind_tenant(CROWD, PROVIDER, Duration::from_secs(60)).await?;
    let first = w.own_manager(PROVIDER, "restart-first");
    let key = register(&w, TENANT, TARGET, CLUSTER).await?;
    assigned_namespace(&w, TENANT, NAMESPACE, &key)?;
    let mut objects = vec![];
    for i in 0..COPIES {
        objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("configmap-{i}")},
                            "data": {"n": i.to_string()}}));
        objects.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("secret-{i}")},
                            "stringData": {"n": i.to_string()}}));
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string();
    w.kcp.kubectl(TENANT, &["-n", NAMESPACE, "apply", "-f", "-"], Some(&list))?;
    let dns = downstream_ns(&w, TENANT, TARGET, TENANT, NAMESPACE).await;
    for i in 0..COPIES {
        wait_downstream(&w, CLUSTER, &dns, "configmap", &format!("configmap-{i}")).await?;
        wait_downstream(&w, CLUSTER, &dns, "secret", &format!("secret-{i}")).await?;
    }

    // Thousands of ConfigMaps in a namespace of another workspace that no target runs.
    w.kcp.kubectl(CROWD, &["create", "namespace", "crowd"], None)?;
    let crowd: Api<ConfigMap> = Api::namespaced(w.clients.path(&CROWD.parse()?), "crowd");
    futures::stream::iter(0..UNRELATED)
        .map(|i| {
            let crowd = crowd.clone();
            async move {
                let cm = ConfigMap {
                    metadata: kube::api::ObjectMeta { name: Some(format!("crowd-{i:04}")), ..Default::default() },
                    data: Some([("n".to_string(), i.to_string())].into()),
                    ..Default::default()
                };
                match crowd.create(&PostParams::default(), &cm).await {
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    let written = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let before = uids(&w, &dns)?;
    let writes_before = writes(&w)?;

    // A plain restart.
    drop(first);
    let second = w.own_manager(PROVIDER, "restart-second");
    listed(&second, "configmaps").await?;
    listed(&second, "secrets").await?;
    tokio::time::sleep(SETTLE).await;
    let writes_after = writes(&w)?;
    let after = uids(&w, &dns);
    let log = second.output();
    let deleted = log.lines().filter(|l| l.contains("deleted downstream copy")).count();
    println!(
        "restart: {UNRELATED} unrelated ConfigMaps written by {written:.1?}; cluster writes (configmaps, secrets) \
         {writes_before:?} → {writes_after:?}; {deleted} copies deleted by the restarted manager"
    );
    let after = after?;
    let changed: Vec<_> = before.iter().filter(|b| !after.contains(b)).map(|(k, n, _)| format!("{k}/{n}")).collect();
    ensure!(changed.is_empty(), "the restart recreated {} of {} copies: {changed:?}", changed.len(), before.len());
    ensure!(writes_after == writes_before, "the restart wrote to the cluster: {writes_before:?} → {writes_after:?}");
    ensure!(deleted == 0, "the restarted manager deleted {deleted} copies");

    // The restarted syncer still syncs: a change in kcp arrives.
    w.kcp.kubectl(TENANT, &["-n", NAMESPACE, "create", "configmap", "after-restart", "--from-literal=a=b"], None)?;
    wait_downstream(&w, CLUSTER, &dns, "configmap", "after-restart").await?;
    drop(second);
    let _ = w.kcp.kubectl(CROWD, &["delete", "namespace", "crowd", "--wait=false"], None);
    Ok(())
}
