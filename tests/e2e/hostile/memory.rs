//! Bounded per-tenant cost (issue 9, item 5): a tenant that stores 600 Secrets of 1 MiB in a
//! namespace placed nowhere must not grow the manager's peak memory (VmHWM) by 20 MB or more —
//! neither while they are written (watch events) nor when a manager starts with them in kcp
//! (the initial list, which is also what a relist after 410 Gone does).
//!
//! The test runs a manager of its own on a provider workspace and export of its own, so that the
//! other tests of the suite, which all go through the shared manager, neither see the 600 MiB
//! nor move the figure. It deletes the Secrets at the end (they sit in the suite's shared kcp).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use super::Bystander;
use crate::env::{self, TestResult, eventually};
use crate::syncer::{assigned_namespace, downstream_get, downstream_ns, register};
use crate::{World, ensure};

const PROVIDER: &str = "root:memory-provider";
const TENANT: &str = "root:memory-tenant";
const TARGET: &str = "memory";
const CLUSTER: usize = 1;
const PLACED: &str = "placed";
const HOARD: &str = "hoard";
const SECRETS: usize = 600;
/// A Secret's data may total 1 MiB (key lengths included); kcp's API and etcd accept it.
const SECRET_BYTES: usize = 1024 * 1024;
/// What is measured here is memory, not latency: generous, since behind 600 MiB kcp delivers slowly
/// when the two cores are shared (90 s was missed beside a concurrent soak).
const MARKER_WAIT: Duration = Duration::from_secs(180);
/// The bound issue 9 sets: 20 MB (VmHWM counts KiB).
const BOUND_KIB: u64 = 20_000_000 / 1024;

/// Peak resident memory (VmHWM) of `pid`, in KiB.
fn peak_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// How long a manager started beside the 600 Secrets may take to list them.
const LIST_WAIT: Duration = Duration::from_secs(240);

/// Writes the Secret `name` into the placed namespace and waits for its copy in the cluster.
/// Events of one resource arrive in order through the manager's one watch, so once this copy
/// exists the manager has taken in every Secret written before it.
async fn caught_up(w: &World, secrets: &Api<Secret>, dns: &str, name: &str) -> Result<(), String> {
    let marker = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        string_data: Some([("marker".to_string(), name.to_string())].into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &marker).await.map_err(|e| format!("create {name}: {e}"))?;
    // Longer than the suite's usual wait: behind 600 MiB, kcp's virtual workspace is slow to
    // deliver the marker when two cores are shared by the whole suite.
    eventually(&format!("secret {dns}/{name} in cluster {CLUSTER}"), MARKER_WAIT, || async {
        downstream_get(w, CLUSTER, dns, "secret", name)
    })
    .await
    .map(|_| ())
}

/// Creates `secret`, retrying what a loaded kcp answers with 5xx (quota evaluation and storage
/// time-outs under a full suite); "already exists" after a retry means an earlier try landed.
async fn create_retrying(api: &Api<Secret>, secret: &Secret) -> Result<(), kube::Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        match api.create(&PostParams::default(), secret).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && tries > 1 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code >= 500 && tries < 5 => {
                tokio::time::sleep(Duration::from_millis(500 * tries)).await
            }
            Err(e) => return Err(e),
        }
    }
}

pub async fn unplaced_secrets_do_not_grow_the_manager(w: Arc<World>) -> TestResult {
    let measured = measure(&w).await;
    // Whatever happened, the 600 MiB leave the shared kcp.
    // (kcp deletes the namespace's contents in the background.)
    let cleaned = w.kcp.kubectl(TENANT, &["delete", "namespace", HOARD, "--ignore-not-found", "--wait=false"], None);
    let (base, watched, listed) = measured?;
    cleaned?;
    let watch_growth = watched.saturating_sub(base);
    let list_growth = listed.saturating_sub(base);
    ensure!(
        watch_growth < BOUND_KIB,
        "watching {SECRETS} unplaced 1 MiB Secrets grew the manager's peak memory by {watch_growth} KiB ({base} → {watched})"
    );
    ensure!(
        list_growth < BOUND_KIB,
        "listing {SECRETS} unplaced 1 MiB Secrets at start-up grew the manager's peak memory by {list_growth} KiB ({base} → {listed})"
    );
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}

/// The manager's VmHWM (KiB) before the Secrets, after watching them arrive, and of a manager
/// started with them in kcp.
async fn measure(w: &World) -> Result<(u64, u64, u64), Box<dyn std::error::Error + Send + Sync>> {
    let started = Instant::now();
    let admin = w.kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &admin, "--workspace", PROVIDER, "--create-workspace"]);
    ensure!(code == 0, "tmc install failed: {out}{err}");
    w.bind_tenant(TENANT, PROVIDER, Duration::from_secs(60)).await?;
    let first = w.own_manager(PROVIDER, "memory-first");
    let key = register(w, TENANT, TARGET, CLUSTER).await?;
    assigned_namespace(w, TENANT, PLACED, &key)?;
    w.kcp.kubectl(TENANT, &["create", "namespace", HOARD], None)?;
    let client = w.clients.path(&TENANT.parse()?);
    let placed: Api<Secret> = Api::namespaced(client.clone(), PLACED);
    let hoard: Api<Secret> = Api::namespaced(client, HOARD);
    let dns = downstream_ns(w, TENANT, TARGET, TENANT, PLACED).await;
    caught_up(w, &placed, &dns, "marker-before").await?;
    let base = peak_kib(first.pid())?;
    let set_up = started.elapsed();

    // 600 MiB into a namespace no target runs, a few writes at a time.
    let payload = ByteString(vec![b'x'; SECRET_BYTES - "blob".len()]);
    futures::stream::iter(0..SECRETS)
        .map(|i| {
            let (hoard, payload) = (hoard.clone(), payload.clone());
            async move {
                let secret = Secret {
                    metadata: kube::api::ObjectMeta { name: Some(format!("hoard-{i:03}")), ..Default::default() },
                    data: Some([("blob".to_string(), payload)].into()),
                    ..Default::default()
                };
                create_retrying(&hoard, &secret).await
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<()>>()
        .await?;
    let written = started.elapsed();
    caught_up(w, &placed, &dns, "marker-watched").await?;
    let watched = peak_kib(first.pid())?;
    println!("memory: VmHWM {base} KiB before, {watched} KiB after watching {SECRETS} unplaced 1 MiB Secrets arrive");
    drop(first);

    // A manager that starts with them in kcp lists them.
    let second = w.own_manager(PROVIDER, "memory-second");
    // Streaming 800 MB of JSON through the virtual workspace takes a while on two cores.
    eventually("the second manager to list the Secrets", LIST_WAIT, || async {
        let log = second.output();
        Ok(log.lines().any(|l| l.contains("listed a resource in kcp") && l.contains("resource=secrets")).then_some(()))
    })
    .await
    .map_err(|e| {
        let log = second.output();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        format!("{e}\nlast lines of its log:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    })?;
    caught_up(w, &placed, &dns, "marker-listed").await?;
    let listed = peak_kib(second.pid())?;
    drop(second);
    let watch_growth = watched.saturating_sub(base);
    let list_growth = listed.saturating_sub(base);
    println!(
        "memory: manager VmHWM {base} KiB before {SECRETS} × 1 MiB unplaced Secrets, {watched} KiB after watching \
         them arrive (+{watch_growth} KiB), {listed} KiB for a manager started with them (+{list_growth} KiB); \
         set-up {set_up:.1?}, written by {written:.1?}, done in {:.1?}",
        started.elapsed()
    );
    Ok((base, watched, listed))
}
