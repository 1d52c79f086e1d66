//! Tenant-written times cannot crash the shared manager or hold it off: a SyncTarget whose
//! status claims a heartbeat and transitions in year 9999 (jiff's last second; `+ grace` there
//! overflowed and panicked the Placement worker), one whose `lastSyncTime` is past jiff's range
//! altogether, one from year 1, an `evictAfter` in year 9999, and a Placement whose status
//! (tenant-writable too) holds the future target with year-9999 condition times.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Bystander;
use crate::env::{TestResult, eventually};
use crate::syncer::WAIT;
use crate::{World, ensure};

const TENANT: &str = "root:hostile-time";
/// jiff's last representable second (kcp, in Go, accepts up to 9999-12-31T23:59:59Z).
const END: &str = "9999-12-30T21:59:59Z";
/// Valid for kcp, beyond what the manager can represent.
const BEYOND: &str = "9999-12-31T23:59:59Z";

fn get(w: &World, kind: &str, name: &str) -> Result<Value, String> {
    let out = w.kcp.kubectl(TENANT, &["get", kind, name, "-o", "json"], None)?;
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

/// (status, reason) of condition `type_`, empty when absent.
fn condition(obj: &Value, type_: &str) -> (String, String) {
    let c = obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    let field = |f: &str| c.and_then(|c| c[f].as_str()).unwrap_or_default().to_string();
    (field("status"), field("reason"))
}

async fn wait_reason(w: &World, kind: &str, name: &str, type_: &str, reason: &str) -> Result<Value, String> {
    eventually(&format!("{kind} {name} {type_} reason {reason}"), WAIT, || async {
        let obj = get(w, kind, name)?;
        Ok((condition(&obj, type_).1 == reason).then_some(obj))
    })
    .await
}

fn forged_condition(type_: &str, status: &str, at: &str) -> Value {
    json!({"type": type_, "status": status, "reason": "Forged", "message": "written by the tenant",
           "lastTransitionTime": at})
}

fn patch_status(w: &World, kind: &str, name: &str, status: Value) -> Result<(), String> {
    let patch = json!({ "status": status }).to_string();
    w.kcp
        .kubectl(TENANT, &["patch", kind, name, "--subresource=status", "--type=merge", "-p", &patch], None)
        .map(|_| ())
}

/// No condition of `obj` claims a transition later than a minute from now.
fn no_future_transitions(obj: &Value) -> Result<(), String> {
    let limit = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
    for c in obj["status"]["conditions"].as_array().into_iter().flatten() {
        let at: jiff::Timestamp =
            c["lastTransitionTime"].as_str().unwrap_or_default().parse().map_err(|e| format!("{c}: {e}"))?;
        if at > limit {
            return Err(format!("{} keeps a lastTransitionTime from the future: {c}", obj["metadata"]["name"]));
        }
    }
    Ok(())
}

pub async fn times_from_year_9999_neither_crash_nor_count_as_fresh(w: Arc<World>) -> TestResult {
    w.bind_tenant(TENANT, crate::PROVIDER, Duration::from_secs(60)).await?;
    let target = |name: &str, evict: Option<&str>| {
        let mut spec = json!({});
        if let Some(at) = evict {
            spec["evictAfter"] = json!(at);
        }
        json!({"apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget",
               "metadata": {"name": name, "labels": {"time": name}}, "spec": spec})
        .to_string()
    };
    let items = [target("future", Some(END)), target("beyond", None), target("past", None)];
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(&crate::syncer::list(&items)))?;
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: later, labels: {app: later}}\n";
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(namespace))?;
    let placement = json!({"apiVersion": "placement.kcp.io/v1alpha1", "kind": "Placement", "metadata": {"name": "later"},
        "spec": {"namespaceSelector": {"matchLabels": {"app": "later"}},
                 "locationSelector": {"matchLabels": {"time": "future"}}, "numberOfTargets": 1}});
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(&placement.to_string()))?;
    for name in ["future", "beyond", "past"] {
        wait_reason(&w, "synctarget", name, "Ready", "WaitingForSyncer").await?;
    }
    // Nothing Ready to choose yet.
    wait_reason(&w, "placement", "later", "Scheduled", "TargetsNotReady").await?;

    // The Placement holds the target (its status says so), with condition times in year 9999;
    // then the target claims to have been not Ready since year 9999 and to beat from there.
    let selected = json!([{"workspace": TENANT, "name": "future"}]);
    let placement_conditions =
        json!([forged_condition("Ready", "False", END), forged_condition("Scheduled", "True", END)]);
    patch_status(&w, "placement", "later", json!({"selectedTargets": selected, "conditions": placement_conditions}))?;
    let conditions = json!([
        forged_condition("Ready", "False", END),
        forged_condition("SyncerReady", "True", END),
        forged_condition("HeartbeatHealthy", "False", END),
        forged_condition("Schedulable", "True", END),
    ]);
    patch_status(&w, "synctarget", "future", json!({"lastSyncTime": END, "conditions": conditions}))?;
    patch_status(&w, "synctarget", "beyond", json!({"lastSyncTime": BEYOND}))?;
    patch_status(&w, "synctarget", "past", json!({"lastSyncTime": "0001-01-01T00:00:00Z"}))?;

    // A heartbeat from the future is refused with its own reason, not fresh forever.
    let future = wait_reason(&w, "synctarget", "future", "HeartbeatHealthy", "HeartbeatInFuture").await?;
    let future = eventually("the forged transition times replaced", WAIT, || async {
        let t = get(&w, "synctarget", "future")?;
        Ok(no_future_transitions(&t).is_ok().then_some(t))
    })
    .await
    .map_err(|e| format!("{e}; last seen {future}"))?;
    ensure!(condition(&future, "Ready") == ("False".into(), "HeartbeatInFuture".into()), "{}", future["status"]);
    ensure!(condition(&future, "Schedulable").1 == "EvictionScheduled", "{}", future["status"]);
    // Past what the manager can represent: the status cannot be read, and says so.
    let beyond = wait_reason(&w, "synctarget", "beyond", "Ready", "InvalidSpec").await?;
    ensure!(condition(&beyond, "SyncerReady").1 == "InvalidSpec", "{}", beyond["status"]);
    // Year 1 is merely old.
    wait_reason(&w, "synctarget", "past", "HeartbeatHealthy", "HeartbeatStale").await?;

    // The Placement keeps its (not Ready) target, and its own forged times are replaced too.
    let placement = eventually("the Placement's forged times replaced", WAIT, || async {
        let p = get(&w, "placement", "later")?;
        let ok = condition(&p, "Ready").1 == "TargetsNotReady" && no_future_transitions(&p).is_ok();
        Ok(ok.then_some(p))
    })
    .await?;
    ensure!(condition(&placement, "Scheduled") == ("True".into(), "Scheduled".into()), "{}", placement["status"]);

    let cluster = kcp_tmc::kcp::workspace::resolve(&w.clients, &TENANT.parse()?).await?.to_string();
    let (running, log) = {
        let mut manager = w.manager.lock().unwrap();
        (manager.running(), manager.output())
    };
    ensure!(running, "the shared manager exited:\n{log}");
    let panics: Vec<&str> = log.lines().filter(|l| l.contains(&cluster) && l.contains("panic")).collect();
    ensure!(panics.is_empty(), "this tenant's values made the manager panic:\n{}", panics.join("\n"));
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}
