//! The SyncTarget's desired status, as a pure function of what the reconciler observed.
//!
//! Nothing here reads a clock or the network: `now` and the credential check are inputs, so
//! every rule is a table-driven test. Messages never contain values that change on every
//! reconcile (ages, counters), so an unchanged world yields an unchanged status and no write.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::apis::sync::v1alpha1::{
    CONDITION_APIS_AVAILABLE, CONDITION_HEARTBEAT_HEALTHY, CONDITION_READY, CONDITION_SCHEDULABLE,
    CONDITION_SYNCER_READY, SyncTargetSpec, SyncTargetStatus, SyncedResourceState,
};

/// How far ahead of the manager's clock a tenant-written time may be and still count as now:
/// clocks of a pull-mode syncer's machine and of the manager differ a little, and the syncer
/// rounds its heartbeat to the second. Anything further ahead is not a time that has happened:
/// a heartbeat from the future is `HeartbeatInFuture`, not fresh forever, and a condition's
/// `lastTransitionTime` from the future is replaced by the manager's now.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// What the reconciler found out about the credentials a syncer would use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No `kubeconfigSecretRef`: a syncer runs beside the cluster and reports by heartbeat.
    PullMode,
    /// The referenced Secret holds an accepted kubeconfig, for the cluster at `server`; `warning`
    /// names what the operator allowed that weakens its transport (`--allow-insecure-cluster-tls`).
    Loaded { server: String, warning: Option<String> },
    /// Something is wrong; `reason` is a CamelCase condition reason naming it.
    Problem { reason: &'static str, message: String },
}

/// What a reconcile observed.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub spec: &'a SyncTargetSpec,
    pub status: Option<&'a SyncTargetStatus>,
    pub generation: Option<i64>,
    pub credentials: Credentials,
    pub now: Timestamp,
    pub heartbeat_threshold: Duration,
}

/// The part of the status the manager owns, and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub conditions: Vec<Condition>,
    pub observed_generation: Option<i64>,
    /// The next moment a condition would change by the clock alone (heartbeat expiry, eviction).
    pub requeue_after: Option<Duration>,
}

impl Desired {
    /// Whether writing this status would change what is stored (timestamps ignored).
    pub fn differs_from(&self, current: Option<&SyncTargetStatus>) -> bool {
        let empty = SyncTargetStatus::default();
        let current = current.unwrap_or(&empty);
        current.observed_generation != self.observed_generation
            || !same_conditions(&current.conditions, &self.conditions)
            || corrected_times(&current.conditions, &self.conditions)
    }
}

/// Whether `current` holds a `lastTransitionTime` from the future that `desired` replaced
/// (see [`transition_time`]): later than the desired time of the same condition and status by
/// more than the allowed skew. Such a status is rewritten, though nothing else changed.
pub fn corrected_times(current: &[Condition], desired: &[Condition]) -> bool {
    desired.iter().any(|d| {
        current
            .iter()
            .find(|c| c.type_ == d.type_ && c.status == d.status)
            .is_some_and(|c| is_ahead(c.last_transition_time.0, d.last_transition_time.0))
    })
}

/// The `lastTransitionTime` of a condition whose status is unchanged since `previous`: the
/// previous time, unless it lies further in the future than [`MAX_CLOCK_SKEW`] (a tenant can
/// write any time into its status, and a transition that has not happened yet would hold off
/// failover and eviction arithmetic forever); then `now`.
pub fn transition_time(previous: Option<&Time>, now: Timestamp) -> Time {
    match previous {
        Some(t) if !is_ahead(t.0, now) => t.clone(),
        _ => Time(now),
    }
}

/// Whether `t` is later than `now` by more than the allowed clock skew.
fn is_ahead(t: Timestamp, now: Timestamp) -> bool {
    Duration::try_from(t.duration_since(now)).is_ok_and(|ahead| ahead > MAX_CLOCK_SKEW)
}

/// The stored status, as far as it can be read. A tenant can write anything into it (a
/// `lastSyncTime` past year 9999 that no timestamp type holds): then the parts the manager
/// writes itself are read alone, so that an unreadable status is not taken for an empty one
/// and rewritten on every reconcile, each write causing the next.
pub fn stored(status: &serde_json::Value) -> Option<SyncTargetStatus> {
    if status.is_null() {
        return None;
    }
    serde_json::from_value(status.clone()).ok().or_else(|| {
        Some(SyncTargetStatus {
            conditions: serde_json::from_value(status["conditions"].clone()).unwrap_or_default(),
            observed_generation: status["observedGeneration"].as_i64(),
            ..Default::default()
        })
    })
}

/// Condition lists equal in everything but `lastTransitionTime`, regardless of order.
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key =
        |c: &Condition| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone(), c.observed_generation);
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

struct Cond {
    type_: &'static str,
    ok: bool,
    reason: &'static str,
    message: String,
}

/// Computes the conditions for `observed`.
pub fn desired(observed: &Observed<'_>) -> Desired {
    let last_sync = observed.status.and_then(|s| s.last_sync_time.as_ref()).map(|t| t.0);
    let (heartbeat, heartbeat_due) = heartbeat(last_sync, observed.now, observed.heartbeat_threshold);
    let syncer = syncer_ready(&observed.credentials, last_sync.is_some());
    let (schedulable, eviction_due) = schedulable(observed.spec, observed.now);
    let ready = if !syncer.ok {
        Cond { type_: CONDITION_READY, ok: false, reason: syncer.reason, message: syncer.message.clone() }
    } else if !heartbeat.ok {
        Cond { type_: CONDITION_READY, ok: false, reason: heartbeat.reason, message: heartbeat.message.clone() }
    } else {
        Cond {
            type_: CONDITION_READY,
            ok: true,
            reason: "Ready",
            message: "the syncer is ready and its heartbeat is healthy".into(),
        }
    };
    let previous = observed.status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let apis = apis_available(observed.status);
    let conditions = [ready, syncer, heartbeat, schedulable, apis]
        .into_iter()
        .map(|c| to_condition(c, previous, observed.generation, observed.now))
        .collect();
    let requeue_after = [heartbeat_due, eviction_due].into_iter().flatten().min();
    Desired { conditions, observed_generation: observed.generation, requeue_after }
}

/// The status of a SyncTarget that could not be read at all (its spec does not parse).
pub fn malformed(previous: &[Condition], generation: Option<i64>, error: &str, now: Timestamp) -> Desired {
    let message = format!("the SyncTarget cannot be read: {error}");
    let cond = |type_| Cond { type_, ok: false, reason: "InvalidSpec", message: message.clone() };
    let conditions = [cond(CONDITION_READY), cond(CONDITION_SYNCER_READY)]
        .into_iter()
        .map(|c| to_condition(c, previous, generation, now))
        .collect();
    Desired { conditions, observed_generation: generation, requeue_after: None }
}

fn heartbeat(last_sync: Option<Timestamp>, now: Timestamp, threshold: Duration) -> (Cond, Option<Duration>) {
    let type_ = CONDITION_HEARTBEAT_HEALTHY;
    let threshold_s = threshold.as_secs_f64();
    let Some(last) = last_sync else {
        let message = "no heartbeat received yet (status.lastSyncTime is not set)".into();
        return (Cond { type_, ok: false, reason: "HeartbeatMissing", message }, None);
    };
    if is_ahead(last, now) {
        let skew = MAX_CLOCK_SKEW.as_secs();
        let message = format!(
            "status.lastSyncTime ({last}) is more than {skew}s ahead of the manager's clock: a heartbeat from the future proves nothing about the syncer now; check the syncer machine's clock"
        );
        // It becomes believable once the clock has caught up to within the skew.
        let due = last.checked_sub(MAX_CLOCK_SKEW).ok().and_then(|at| Duration::try_from(at.duration_since(now)).ok());
        return (Cond { type_, ok: false, reason: "HeartbeatInFuture", message }, due);
    }
    // Up to the allowed skew ahead counts as just now.
    let age = Duration::try_from(now.duration_since(last)).unwrap_or(Duration::ZERO);
    if age <= threshold {
        let message = format!("the syncer's heartbeat is younger than {threshold_s}s");
        let due = (threshold - age).saturating_add(Duration::from_millis(100));
        (Cond { type_, ok: true, reason: "HeartbeatFresh", message }, Some(due))
    } else {
        let message = format!("the last heartbeat, at {last}, is older than {threshold_s}s");
        (Cond { type_, ok: false, reason: "HeartbeatStale", message }, None)
    }
}

fn syncer_ready(credentials: &Credentials, has_heartbeat: bool) -> Cond {
    let type_ = CONDITION_SYNCER_READY;
    match credentials {
        Credentials::Problem { reason, message } => Cond { type_, ok: false, reason, message: message.clone() },
        Credentials::Loaded { server, warning } => Cond {
            type_,
            ok: true,
            reason: "KubeconfigLoaded",
            message: match warning {
                None => format!("credentials for {server} loaded from spec.kubeconfigSecretRef"),
                Some(w) => format!("credentials for {server} loaded from spec.kubeconfigSecretRef; {w}"),
            },
        },
        Credentials::PullMode if has_heartbeat => Cond {
            type_,
            ok: true,
            reason: "SyncerReporting",
            message: "a syncer running beside the cluster reports heartbeats".into(),
        },
        Credentials::PullMode => Cond {
            type_,
            ok: false,
            reason: "WaitingForSyncer",
            message: "no syncer has reported yet: run `tmc syncer` beside the cluster, or set spec.kubeconfigSecretRef"
                .into(),
        },
    }
}

fn schedulable(spec: &SyncTargetSpec, now: Timestamp) -> (Cond, Option<Duration>) {
    let type_ = CONDITION_SCHEDULABLE;
    let evict_at = spec.evict_after.as_ref().map(|t| t.0);
    match evict_at {
        Some(at) if at <= now => {
            let message = format!("spec.evictAfter ({at}) has passed: workloads are moved off this target");
            (Cond { type_, ok: false, reason: "Evicting", message }, None)
        }
        _ if spec.unschedulable => {
            let message = "spec.unschedulable is true: placed workloads stay, nothing new is placed".into();
            let due = evict_at.and_then(|at| Duration::try_from(at.duration_since(now)).ok());
            (Cond { type_, ok: false, reason: "Unschedulable", message }, due)
        }
        Some(at) => {
            let message = format!("accepting workloads until spec.evictAfter ({at})");
            let due = Duration::try_from(at.duration_since(now)).ok();
            (Cond { type_, ok: true, reason: "EvictionScheduled", message }, due)
        }
        None => {
            let message = "accepting workloads".into();
            (Cond { type_, ok: true, reason: "Schedulable", message }, None)
        }
    }
}

/// Whether the syncer syncs every API it was asked to, from what it reports in
/// `status.syncedResources`. Not part of `Ready`: a target missing one API still runs the others,
/// and placement checks the APIs a namespace needs.
fn apis_available(status: Option<&SyncTargetStatus>) -> Cond {
    let type_ = CONDITION_APIS_AVAILABLE;
    let reported = status.map(|s| s.synced_resources.as_slice()).unwrap_or_default();
    if reported.is_empty() {
        let message = "the syncer has not reported its APIs yet (status.syncedResources)".into();
        return Cond { type_, ok: false, reason: "NotReported", message };
    }
    let name = |group: &str, kind: &str| if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
    let unavailable: Vec<_> = reported.iter().filter(|r| r.state != SyncedResourceState::Syncing).collect();
    if unavailable.is_empty() {
        let names: Vec<String> = reported.iter().map(|r| name(&r.group, &r.kind)).collect();
        return Cond { type_, ok: true, reason: "AllAvailable", message: format!("syncing {}", names.join(", ")) };
    }
    let reason = if unavailable.iter().any(|r| r.state == SyncedResourceState::MissingOnCluster) {
        "APIMissingOnCluster"
    } else {
        "APIUnavailable"
    };
    let problems: Vec<String> = unavailable
        .iter()
        .map(|r| match &r.message {
            Some(m) => format!("{}: {} ({m})", name(&r.group, &r.kind), r.state.as_str()),
            None => format!("{}: {}", name(&r.group, &r.kind), r.state.as_str()),
        })
        .collect();
    Cond { type_, ok: false, reason, message: format!("not synced: {}", problems.join("; ")) }
}

fn to_condition(c: Cond, previous: &[Condition], generation: Option<i64>, now: Timestamp) -> Condition {
    let status = if c.ok { "True" } else { "False" };
    // The transition time moves only when the status flips.
    let kept = previous.iter().find(|p| p.type_ == c.type_ && p.status == status).map(|p| &p.last_transition_time);
    let last_transition_time = transition_time(kept, now);
    Condition {
        type_: c.type_.to_string(),
        status: status.to_string(),
        reason: c.reason.to_string(),
        message: c.message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
