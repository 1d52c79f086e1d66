//! The SyncTarget reconciler, observed through a real kcp: objects are created with kubectl in
//! tenant workspaces, and the conditions the `tmc manager` process writes are asserted.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kcp_tmc::apis::sync::v1alpha1::SyncTarget;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::env::{TestResult, eventually};
use crate::{HEARTBEAT_THRESHOLD, TENANT_A, TENANT_B, World, ensure};

const WAIT: Duration = Duration::from_secs(30);

fn api(w: &World, ws: &str) -> Api<SyncTarget> {
    Api::all(w.clients.path(&ws.parse().unwrap()))
}

fn apply(w: &World, ws: &str, yaml: &str) -> Result<(), String> {
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(yaml)).map(|_| ())
}

/// Merge-patches the spec of a SyncTarget with kubectl, as a user would.
fn patch_spec(w: &World, ws: &str, name: &str, patch: &str) -> Result<(), String> {
    w.kcp.kubectl(ws, &["patch", "synctarget", name, "--type=merge", "-p", patch], None).map(|_| ())
}

fn condition<'a>(st: &'a SyncTarget, type_: &str) -> Option<&'a Condition> {
    st.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// Waits until condition `type_` of `ws`/`name` has `status` and `reason`.
async fn wait_condition(
    w: &World,
    ws: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Result<SyncTarget, String> {
    let api = api(w, ws);
    eventually(&format!("{ws} synctarget/{name} {type_}={status} ({reason})"), WAIT, || async {
        let st = api.get(name).await.map_err(|e| e.to_string())?;
        let found = condition(&st, type_).map(|c| (c.status.clone(), c.reason.clone()));
        if found == Some((status.into(), reason.into())) { Ok(Some(st)) } else { Err(format!("currently {found:?}")) }
    })
    .await
}

/// Writes `status.lastSyncTime = now`, as a syncer's heartbeat does.
async fn heartbeat(w: &World, ws: &str, name: &str) -> Result<(), String> {
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).map_err(|e| e.to_string())?;
    let patch = json!({ "status": { "lastSyncTime": now.to_string() } });
    api(w, ws)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn pull_target(name: &str) -> String {
    format!("apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata:\n  name: {name}\nspec:\n  cells: [c1]\n")
}

fn push_target(name: &str, ns: &str, secret: &str) -> String {
    format!(
        "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata:\n  name: {name}\nspec:\n  kubeconfigSecretRef: {{namespace: {ns}, name: {secret}}}\n"
    )
}

pub async fn pull_mode_target_waits_for_syncer(w: Arc<World>) -> TestResult {
    apply(&w, TENANT_A, &pull_target("pull"))?;
    let st = wait_condition(&w, TENANT_A, "pull", "Ready", "False", "WaitingForSyncer").await?;
    let hb = condition(&st, "HeartbeatHealthy").map(|c| (c.status.as_str(), c.reason.as_str()));
    ensure!(hb == Some(("False", "HeartbeatMissing")), "HeartbeatHealthy is {hb:?}");
    let sched = condition(&st, "Schedulable").map(|c| c.status.as_str());
    ensure!(sched == Some("True"), "Schedulable is {sched:?}");
    let status = st.status.as_ref().unwrap();
    ensure!(
        status.observed_generation == st.metadata.generation,
        "observedGeneration {:?}",
        status.observed_generation
    );
    // `kubectl get` shows the manager's verdict in the printer columns.
    let table = w.kcp.kubectl(TENANT_A, &["get", "synctargets", "pull"], None)?;
    ensure!(table.contains("WaitingForSyncer") && table.contains("READY"), "kubectl get shows:\n{table}");
    Ok(())
}

pub async fn same_name_in_two_workspaces_reconciled_independently(w: Arc<World>) -> TestResult {
    apply(&w, TENANT_A, &pull_target("east"))?;
    apply(&w, TENANT_B, &push_target("east", "default", "missing-kubeconfig"))?;
    wait_condition(&w, TENANT_A, "east", "Ready", "False", "WaitingForSyncer").await?;
    wait_condition(&w, TENANT_B, "east", "Ready", "False", "KubeconfigSecretNotFound").await?;

    // A heartbeat in one workspace makes only that target ready.
    heartbeat(&w, TENANT_A, "east").await?;
    wait_condition(&w, TENANT_A, "east", "Ready", "True", "Ready").await?;
    let b = api(&w, TENANT_B).get("east").await?;
    ensure!(b.status.as_ref().unwrap().last_sync_time.is_none(), "heartbeat leaked into tenant-b");
    let reason = condition(&b, "Ready").map(|c| c.reason.clone());
    ensure!(reason.as_deref() == Some("KubeconfigSecretNotFound"), "tenant-b Ready reason {reason:?}");

    // Change only tenant-b's object, then let tenant-a's heartbeat expire: the timer-driven
    // reconcile of tenant-a must read tenant-a's object, not the one cached last.
    patch_spec(&w, TENANT_B, "east", r#"{"spec":{"unschedulable":true}}"#)?;
    wait_condition(&w, TENANT_B, "east", "Schedulable", "False", "Unschedulable").await?;
    let a = wait_condition(&w, TENANT_A, "east", "HeartbeatHealthy", "False", "HeartbeatStale").await?;
    let a_ready = condition(&a, "Ready").map(|c| c.reason.clone());
    let a_sched = condition(&a, "Schedulable").map(|c| c.status.clone());
    ensure!(
        a_ready.as_deref() == Some("HeartbeatStale"),
        "tenant-a Ready reason {a_ready:?} (tenant-b's spec leaked?)"
    );
    ensure!(a_sched.as_deref() == Some("True"), "tenant-a Schedulable {a_sched:?} (tenant-b's spec leaked?)");

    // Deleting one leaves the other in the cache and in the queue.
    w.kcp.kubectl(TENANT_A, &["delete", "synctarget", "east"], None)?;
    patch_spec(&w, TENANT_B, "east", r#"{"spec":{"unschedulable":false}}"#)?;
    wait_condition(&w, TENANT_B, "east", "Schedulable", "True", "Schedulable").await?;
    Ok(())
}

pub async fn heartbeat_flips_and_recovers(w: Arc<World>) -> TestResult {
    apply(&w, TENANT_A, &pull_target("hb"))?;
    wait_condition(&w, TENANT_A, "hb", "HeartbeatHealthy", "False", "HeartbeatMissing").await?;
    heartbeat(&w, TENANT_A, "hb").await?;
    // Ready is computed in the same write as HeartbeatHealthy: check both in one snapshot, since
    // the heartbeat goes stale again by itself after the threshold.
    let fresh = wait_condition(&w, TENANT_A, "hb", "HeartbeatHealthy", "True", "HeartbeatFresh").await?;
    let ready = condition(&fresh, "Ready").map(|c| (c.status.clone(), c.reason.clone()));
    ensure!(ready == Some(("True".into(), "Ready".into())), "with a fresh heartbeat Ready is {ready:?}");
    // No more heartbeats: the manager flips it by itself once the threshold has passed.
    let flipped = wait_condition(&w, TENANT_A, "hb", "HeartbeatHealthy", "False", "HeartbeatStale").await?;
    let flipped_at = condition(&flipped, "HeartbeatHealthy").unwrap().last_transition_time.0;
    let beat_at = flipped.status.as_ref().unwrap().last_sync_time.as_ref().unwrap().0;
    let age = flipped_at.duration_since(beat_at).as_secs_f64();
    ensure!(
        age >= HEARTBEAT_THRESHOLD.as_secs_f64() - 1.0 && age <= HEARTBEAT_THRESHOLD.as_secs_f64() + 5.0,
        "flipped {age}s after the heartbeat; threshold is {HEARTBEAT_THRESHOLD:?}"
    );
    let ready = condition(&flipped, "Ready").map(|c| (c.status.clone(), c.reason.clone()));
    ensure!(ready == Some(("False".into(), "HeartbeatStale".into())), "Ready is {ready:?}");
    // The transition is also an Event on the SyncTarget (cluster-scoped: in namespace default).
    eventually("a HeartbeatStale Warning on synctarget/hb", WAIT, || async {
        let out = w.kcp.kubectl(
            TENANT_A,
            &[
                "-n",
                "default",
                "get",
                "events.events.k8s.io",
                "--field-selector",
                "reason=HeartbeatStale",
                "-o",
                "jsonpath={range .items[*]}{.regarding.kind}/{.regarding.name} {.type}{\"\\n\"}{end}",
            ],
            None,
        )?;
        Ok(out.lines().any(|l| l == "SyncTarget/hb Warning").then_some(()))
    })
    .await?;
    heartbeat(&w, TENANT_A, "hb").await?;
    wait_condition(&w, TENANT_A, "hb", "HeartbeatHealthy", "True", "HeartbeatFresh").await?;
    Ok(())
}

const VALID_KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\nclusters:\n- name: k\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\n";

pub async fn bad_kubeconfig_secrets_are_named(w: Arc<World>) -> TestResult {
    let ws = TENANT_B;
    w.kcp.kubectl(ws, &["create", "namespace", "clusters"], None)?;
    apply(&w, ws, &push_target("push", "clusters", "push-kubeconfig"))?;
    wait_condition(&w, ws, "push", "Ready", "False", "KubeconfigSecretNotFound").await?;
    // Each fix or new mistake in the Secret alone re-reconciles the SyncTarget.
    w.kcp.kubectl(
        ws,
        &["-n", "clusters", "create", "secret", "generic", "push-kubeconfig", "--from-literal=config=x"],
        None,
    )?;
    let st = wait_condition(&w, ws, "push", "Ready", "False", "KubeconfigKeyMissing").await?;
    let msg = condition(&st, "Ready").unwrap().message.clone();
    ensure!(
        msg.contains("\"kubeconfig\"") && msg.contains("config"),
        "message should name the missing and present keys: {msg}"
    );
    let garbage = json!({ "stringData": { "kubeconfig": "{{ this is not a kubeconfig" } }).to_string();
    w.kcp.kubectl(
        ws,
        &["-n", "clusters", "patch", "secret", "push-kubeconfig", "--type=merge", "-p", &garbage],
        None,
    )?;
    wait_condition(&w, ws, "push", "SyncerReady", "False", "KubeconfigInvalid").await?;
    let valid = json!({ "stringData": { "kubeconfig": VALID_KUBECONFIG } }).to_string();
    w.kcp.kubectl(ws, &["-n", "clusters", "patch", "secret", "push-kubeconfig", "--type=merge", "-p", &valid], None)?;
    // A kubeconfig that parses but points nowhere: the syncer starts, probes, and says so.
    let st = wait_condition(&w, ws, "push", "SyncerReady", "False", "ClusterUnreachable").await?;
    let msg = &condition(&st, "Ready").unwrap().message;
    ensure!(msg.contains("https://127.0.0.1:1"), "the message should name the server: {msg}");
    w.kcp.kubectl(ws, &["-n", "clusters", "delete", "secret", "push-kubeconfig"], None)?;
    wait_condition(&w, ws, "push", "Ready", "False", "KubeconfigSecretNotFound").await?;
    Ok(())
}

pub async fn invalid_spec_is_reported_and_others_proceed(w: Arc<World>) -> TestResult {
    // Passes schema validation, but no namespace can be called that.
    apply(&w, TENANT_A, &push_target("badref", "Not_A_Namespace", "kc"))?;
    let st = wait_condition(&w, TENANT_A, "badref", "Ready", "False", "InvalidSpec").await?;
    let msg = &condition(&st, "Ready").unwrap().message;
    ensure!(msg.contains("kubeconfigSecretRef.namespace"), "message should name the field: {msg}");
    apply(&w, TENANT_A, &pull_target("after-badref"))?;
    wait_condition(&w, TENANT_A, "after-badref", "Ready", "False", "WaitingForSyncer").await?;
    // The schema rejects what it can, with kubectl's usual error.
    let rejected = apply(
        &w,
        TENANT_A,
        "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: typo}\nspec: {unschedulable: maybe}\n",
    );
    ensure!(rejected.as_ref().is_err_and(|e| e.contains("unschedulable")), "schema should reject: {rejected:?}");
    let mut manager = w.manager.lock().unwrap();
    ensure!(manager.running(), "the manager must not crash");
    Ok(())
}

pub async fn cordon_and_eviction_are_visible(w: Arc<World>) -> TestResult {
    // Far enough ahead that a loaded machine still shows the scheduled state first.
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30)).round(jiff::Unit::Second)?;
    let yaml = format!(
        "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {{name: cordoned}}\nspec: {{unschedulable: true}}\n---\n\
         apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {{name: drained}}\nspec: {{evictAfter: '2020-01-01T00:00:00Z'}}\n---\n\
         apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {{name: draining-soon}}\nspec: {{evictAfter: '{soon}'}}\n"
    );
    apply(&w, TENANT_A, &yaml)?;
    wait_condition(&w, TENANT_A, "cordoned", "Schedulable", "False", "Unschedulable").await?;
    wait_condition(&w, TENANT_A, "drained", "Schedulable", "False", "Evicting").await?;
    wait_condition(&w, TENANT_A, "draining-soon", "Schedulable", "True", "EvictionScheduled").await?;
    // Nothing is written by the test from here on: the manager requeues itself for the deadline.
    let until = Duration::try_from(soon.duration_since(jiff::Timestamp::now())).unwrap_or_default();
    tokio::time::sleep(until).await;
    wait_condition(&w, TENANT_A, "draining-soon", "Schedulable", "False", "Evicting").await?;
    patch_spec(&w, TENANT_A, "cordoned", r#"{"spec":{"unschedulable":false}}"#)?;
    wait_condition(&w, TENANT_A, "cordoned", "Schedulable", "True", "Schedulable").await?;
    Ok(())
}

pub async fn observed_generation_follows_spec(w: Arc<World>) -> TestResult {
    apply(&w, TENANT_B, &pull_target("gen"))?;
    wait_condition(&w, TENANT_B, "gen", "Ready", "False", "WaitingForSyncer").await?;
    patch_spec(&w, TENANT_B, "gen", r#"{"spec":{"cells":["c1","c2"]}}"#)?;
    let api = api(&w, TENANT_B);
    eventually("observedGeneration to reach generation 2", WAIT, || async {
        let st = api.get("gen").await.map_err(|e| e.to_string())?;
        let observed = st.status.as_ref().and_then(|s| s.observed_generation);
        let conds_ok =
            st.status.as_ref().is_some_and(|s| s.conditions.iter().all(|c| c.observed_generation == Some(2)));
        Ok((st.metadata.generation == Some(2) && observed == Some(2) && conds_ok).then_some(()))
    })
    .await?;
    Ok(())
}

pub async fn settled_status_is_not_rewritten(w: Arc<World>) -> TestResult {
    apply(&w, TENANT_B, &pull_target("quiet"))?;
    let settled = wait_condition(&w, TENANT_B, "quiet", "Ready", "False", "WaitingForSyncer").await?;
    // Touch the object without changing anything the status depends on: the manager
    // reconciles again but must not write.
    w.kcp.kubectl(TENANT_B, &["label", "synctarget", "quiet", "touched=yes"], None)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let touched = api(&w, TENANT_B).get("quiet").await?;
    tokio::time::sleep(HEARTBEAT_THRESHOLD + Duration::from_secs(2)).await;
    let later = api(&w, TENANT_B).get("quiet").await?;
    ensure!(
        touched.metadata.resource_version == later.metadata.resource_version,
        "status was rewritten without a change: {:?} -> {:?}",
        touched.metadata.resource_version,
        later.metadata.resource_version
    );
    ensure!(settled.status == later.status, "status changed: {:?} -> {:?}", settled.status, later.status);
    Ok(())
}
