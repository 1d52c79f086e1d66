//! Leader election between `tmc manager` replicas: exactly one holds the Lease and reconciles,
//! a standby takes over from a killed leader once the lease expires, and a leader stopped with
//! SIGTERM releases the lease so the next one starts at once.
//!
//! The replicas serve a provider workspace of their own, so they never fight the shared manager.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kcp_tmc::apis::sync::v1alpha1::SyncTarget;
use kube::api::Api;

use crate::env::{self, TestResult, Tmc, eventually};
use crate::ops::get;
use crate::{World, ensure};

const PROVIDER: &str = "root:leader-test";
const TENANT: &str = "root:leader-tenant";
const LEASE: &str = "tmc-manager-e2e";
/// Short, so the test can wait for expiry; the renew deadline and retry period fit inside it.
const LEASE_DURATION: Duration = Duration::from_secs(10);

struct Replica {
    identity: &'static str,
    process: Tmc,
    health: String,
}

fn start(w: &World, identity: &'static str) -> Replica {
    let kubeconfig = w.kcp.kubeconfig.display().to_string();
    let duration = format!("{}s", LEASE_DURATION.as_secs());
    let manager = Tmc::manager(
        &kubeconfig,
        PROVIDER,
        &[
            "--leader-elect",
            "--leader-election-lease-name",
            LEASE,
            "--leader-election-identity",
            identity,
            "--leader-election-lease-duration",
            &duration,
            "--leader-election-renew-deadline",
            "6s",
            "--leader-election-retry-period",
            "1s",
            "--cluster-address-allow",
            "127.0.0.1/32",
        ],
        w.kcp.dir.path().join(format!("leader-{identity}.log")),
    );
    let (process, health) = (manager.process, manager.health);
    Replica { identity, process, health: format!("http://{health}") }
}

/// The Lease's holder ("" when released), or `None` before it exists.
async fn holder(leases: &Api<Lease>) -> Result<Option<String>, String> {
    let lease = leases.get_opt(LEASE).await.map_err(|e| e.to_string())?;
    Ok(lease.map(|l| l.spec.and_then(|s| s.holder_identity).unwrap_or_default()))
}

async fn wait_holder(leases: &Api<Lease>, what: &str, timeout: Duration, want: &[&str]) -> Result<String, String> {
    eventually(what, timeout, || async {
        match holder(leases).await? {
            Some(h) if want.contains(&h.as_str()) => Ok(Some(h)),
            other => Err(format!("holder is {other:?}")),
        }
    })
    .await
}

/// The holder of every write to the Lease after resourceVersion `from`, until `last` holds it
/// (at most 60 s).
async fn holder_writes(leases: Api<Lease>, from: String, last: &str) -> Result<Vec<String>, String> {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    let params = WatchParams::default().fields(&format!("metadata.name={LEASE}")).timeout(60);
    let mut events = leases.watch(&params, &from).await.map_err(|e| e.to_string())?.boxed();
    let mut writes = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(next) = tokio::time::timeout_at(end, events.try_next()).await {
        match next.map_err(|e| e.to_string())? {
            Some(WatchEvent::Added(l) | WatchEvent::Modified(l)) => {
                let holder = l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
                let done = holder == last;
                writes.push(holder);
                if done {
                    return Ok(writes);
                }
            }
            Some(WatchEvent::Error(e)) => return Err(format!("watching the lease: {e:?}")),
            Some(_) => {}
            None => break,
        }
    }
    Err(format!("{last:?} did not take the lease within 60 s; holder writes {writes:?}"))
}

/// Whether a write history shows a handover by release: the old holder's renewals, one write
/// clearing the holder, then the new holder — never the new holder straight over the old one,
/// which is what an expiry takeover looks like.
fn handed_over_by_release(writes: &[String], old: &str, new: &str) -> bool {
    let mut rest = writes.iter().map(String::as_str).skip_while(|h| *h == old);
    rest.next() == Some("") && rest.next() == Some(new) && rest.next().is_none()
}

/// Creates a SyncTarget and waits for the manager to write its status.
async fn reconciled(w: &World, targets: &Api<SyncTarget>, name: &str) -> Result<(), String> {
    let yaml = format!("apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {{name: {name}}}\nspec: {{}}\n");
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(&yaml))?;
    eventually(&format!("status of synctarget {name}"), Duration::from_secs(30), || async {
        let st = targets.get(name).await.map_err(|e| e.to_string())?;
        Ok(st.status.filter(|s| !s.conditions.is_empty()).map(|_| ()))
    })
    .await
}

/// Waits until `/readyz` of `r` answers 200 with a body containing `want`.
async fn ready_as(r: &Replica, want: &str) -> Result<(), String> {
    let url = format!("{}/readyz", r.health);
    eventually(&format!("/readyz of {} to say {want:?}", r.identity), Duration::from_secs(30), || async {
        match get(&url).await {
            Ok((200, body)) if body.contains(want) => Ok(Some(())),
            Ok((status, body)) => Err(format!("{status} {}", body.trim())),
            Err(e) => Err(e),
        }
    })
    .await
}

pub async fn one_leader_reconciles_and_hands_over(w: Arc<World>) -> TestResult {
    let kubeconfig = w.kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &kubeconfig, "--workspace", PROVIDER, "--create-workspace"]);
    ensure!(code == 0, "tmc install into {PROVIDER} failed: {out}{err}");
    w.bind_tenant(TENANT, PROVIDER, Duration::from_secs(30)).await?;
    let leases: Api<Lease> = Api::namespaced(w.clients.path(&PROVIDER.parse()?), "default");
    let targets: Api<SyncTarget> = Api::all(w.clients.path(&TENANT.parse()?));

    // Two replicas: exactly one takes the lease and reconciles; the other stands by, ready.
    let mut replicas = vec![start(&w, "a"), start(&w, "b")];
    let first = wait_holder(&leases, "a first leader", Duration::from_secs(30), &["a", "b"]).await?;
    let (leader, standby) = if first == "a" { (0, 1) } else { (1, 0) };
    ready_as(&replicas[standby], "standby, waiting to lead").await?;
    ready_as(&replicas[leader], "ok").await?;
    let (_, body) = get(&format!("{}/readyz", replicas[leader].health)).await?;
    ensure!(body.trim() == "ok", "the leader's /readyz: {body:?}");
    reconciled(&w, &targets, "first").await?;
    let log = replicas[standby].process.output();
    ensure!(!log.contains("starting controllers"), "the standby must not run controllers:\n{log}");
    ensure!(log.contains("standby: waiting to lead"), "the standby's log should say it waits:\n{log}");
    ensure!(holder(&leases).await?.as_deref() == Some(first.as_str()), "the leader changed without cause");

    // kill -9 the leader: nothing releases the lease; the standby takes over once it expires.
    let killed = Instant::now();
    replicas[leader].process.signal("KILL");
    let second = replicas[standby].identity;
    wait_holder(&leases, "the standby to take over", LEASE_DURATION + Duration::from_secs(15), &[second]).await?;
    ensure!(
        killed.elapsed() >= LEASE_DURATION - Duration::from_secs(2),
        "took over after {:?}, before the lease of the killed leader expired",
        killed.elapsed()
    );
    reconciled(&w, &targets, "second").await?;
    replicas.swap_remove(leader);

    // A new standby; then SIGTERM the leader: it releases the lease and the standby takes it
    // without waiting for expiry. The proof is the Lease's own write history, watched from the
    // resourceVersion before the signal: a write clearing the holder, then the standby's write.
    // (Wall-clock bounds fail on a loaded two-core CI machine; the history does not.)
    replicas.push(start(&w, "c"));
    ready_as(&replicas[1], "standby, waiting to lead").await?;
    let from = leases.get(LEASE).await.map_err(|e| e.to_string())?.metadata.resource_version.unwrap_or_default();
    let history = tokio::spawn(holder_writes(leases.clone(), from, "c"));
    let stopped = Instant::now();
    replicas[0].process.signal("TERM");
    let writes = history.await.map_err(|e| e.to_string())??;
    let took = stopped.elapsed();
    println!("leader: SIGTERM → lease taken by the standby after {took:?}; holder writes {writes:?}");
    let old = replicas[0].identity;
    ensure!(
        handed_over_by_release(&writes, old, "c"),
        "after SIGTERM the lease must be released (holder \"\") and then taken by \"c\"; holder writes were {writes:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        match replicas[0].process.exit_code() {
            Some(code) => break code,
            None if Instant::now() > deadline => return Err("the stopped leader did not exit within 10s".into()),
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let log = replicas[0].process.output();
    ensure!(code == 0, "a SIGTERMed leader must exit 0, exited {code}:\n{log}");
    ensure!(log.contains("released the leader-election lease"), "no release in the log:\n{log}");
    reconciled(&w, &targets, "third").await?;
    Ok(())
}
