//! The upstream status of an object that runs on several targets, from the status each target
//! recorded (pure). One rule per kind says what adds up:
//!
//! | kind | summed (saturating) | True only when True everywhere | True when True anywhere | also |
//! |---|---|---|---|---|
//! | Deployment | replica counts | `Available`, `Progressing` | | |
//! | StatefulSet, ReplicaSet | replica counts | | | |
//! | DaemonSet | the `*Scheduled` and `number*` counts | | | |
//! | Job | `active`, `succeeded`, `failed`, `ready`, `terminating` | `Complete`, `SuccessCriteriaMet` | `Failed`, `FailureTarget` | earliest `startTime`; `completionTime` only when complete everywhere |
//! | Service | | | | `loadBalancer.ingress`: every target's, in target-key order |
//! | any other kind (custom APIs too) | | | | the first target's status (by target key) |
//!
//! For every kind, `observedGeneration` shows only once every target has observed a
//! generation, and then the lowest. A condition that is not True everywhere is False with reason
//! `NotOnAllTargets`, naming the targets; one True somewhere is True with reason
//! `OnSomeTargets`, naming them.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// How one kind's per-target statuses combine.
#[derive(Default)]
struct Rule {
    summed: &'static [&'static str],
    on_all: &'static [&'static str],
    on_any: &'static [&'static str],
}

fn rule(kind: &str) -> Rule {
    match kind {
        "Deployment" => Rule {
            summed: &[
                "replicas",
                "readyReplicas",
                "availableReplicas",
                "updatedReplicas",
                "unavailableReplicas",
                "terminatingReplicas",
            ],
            on_all: &["Available", "Progressing"],
            on_any: &[],
        },
        "StatefulSet" => Rule {
            summed: &["replicas", "readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas"],
            ..Rule::default()
        },
        "ReplicaSet" => Rule {
            summed: &["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "terminatingReplicas"],
            ..Rule::default()
        },
        "DaemonSet" => Rule {
            summed: &[
                "currentNumberScheduled",
                "numberMisscheduled",
                "desiredNumberScheduled",
                "numberReady",
                "updatedNumberScheduled",
                "numberAvailable",
                "numberUnavailable",
            ],
            ..Rule::default()
        },
        "Job" => Rule {
            summed: &["active", "succeeded", "failed", "ready", "terminating"],
            on_all: &["Complete", "SuccessCriteriaMet"],
            on_any: &["Failed", "FailureTarget"],
        },
        _ => Rule::default(),
    }
}

/// The aggregate upstream status of `kind` from per-target statuses, ordered by target key
/// (`Null`: the target has not reported).
pub fn aggregate(kind: &str, per_target: &BTreeMap<String, Value>) -> Value {
    let Some(first) = per_target.values().find(|s| s.is_object()) else { return Value::Null };
    if per_target.len() == 1 {
        return first.clone();
    }
    let mut out: Map<String, Value> = first.as_object().cloned().unwrap_or_default();
    let rule = rule(kind);
    for field in rule.summed {
        // Saturating: the per-target statuses are annotations a tenant can write, and a forged
        // entry of i64::MAX must not overflow (a panic in debug builds).
        let sum = per_target.values().filter_map(|s| s[*field].as_i64()).fold(0i64, i64::saturating_add);
        if per_target.values().any(|s| !s[*field].is_null()) {
            out.insert((*field).into(), json!(sum));
        }
    }
    // The generation is only "observed" once every target has observed it.
    let observed: Vec<Option<i64>> = per_target.values().map(|s| s["observedGeneration"].as_i64()).collect();
    match observed.iter().min().copied().flatten() {
        Some(g) if observed.iter().all(Option::is_some) => out.insert("observedGeneration".into(), json!(g)),
        _ => out.remove("observedGeneration"),
    };
    combine_conditions(&mut out, per_target, &rule);
    if kind == "Job" {
        job_times(&mut out, per_target);
    }
    if kind == "Service" {
        let mut ingress: Vec<Value> = vec![];
        for point in per_target.values().filter_map(|s| s["loadBalancer"]["ingress"].as_array()).flatten() {
            if !ingress.contains(point) {
                ingress.push(point.clone());
            }
        }
        if !ingress.is_empty() {
            out.insert("loadBalancer".into(), json!({ "ingress": ingress }));
        }
    }
    Value::Object(out)
}

/// Rewrites the conditions of `rule.on_all` and `rule.on_any` in `out` from every target's.
fn combine_conditions(out: &mut Map<String, Value>, per_target: &BTreeMap<String, Value>, rule: &Rule) {
    let targets_where = |type_: &str, true_: bool| -> Vec<&str> {
        let keys = per_target.iter().filter(|(_, s)| (condition_status(s, type_) == Some("True")) == true_);
        keys.map(|(k, _)| k.as_str()).collect()
    };
    let mut conditions: Vec<Value> = out.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    for type_ in rule.on_all {
        let failing = targets_where(type_, false);
        if let Some(c) = conditions.iter_mut().find(|c| c["type"] == *type_)
            && !failing.is_empty()
        {
            c["status"] = json!("False");
            c["reason"] = json!("NotOnAllTargets");
            c["message"] = json!(format!("{type_} is not True on targets {}", failing.join(", ")));
        }
    }
    for type_ in rule.on_any {
        let holding = targets_where(type_, true);
        if holding.is_empty() {
            continue;
        }
        let message = json!(format!("{type_} is True on targets {}", holding.join(", ")));
        match conditions.iter_mut().find(|c| c["type"] == *type_) {
            Some(c) => {
                c["status"] = json!("True");
                c["reason"] = json!("OnSomeTargets");
                c["message"] = message;
            }
            None => {
                conditions.push(json!({"type": type_, "status": "True", "reason": "OnSomeTargets", "message": message}))
            }
        }
    }
    if !conditions.is_empty() {
        out.insert("conditions".into(), Value::Array(conditions));
    }
}

/// A Job started when its first copy did, and completed only when every copy has.
fn job_times(out: &mut Map<String, Value>, per_target: &BTreeMap<String, Value>) {
    // RFC 3339 times in UTC, as the API server writes them, order as strings.
    if let Some(start) = per_target.values().filter_map(|s| s["startTime"].as_str()).min() {
        out.insert("startTime".into(), json!(start));
    }
    let everywhere = per_target.values().all(|s| condition_status(s, "Complete") == Some("True"));
    match per_target.values().filter_map(|s| s["completionTime"].as_str()).max() {
        Some(end) if everywhere => out.insert("completionTime".into(), json!(end)),
        _ => out.remove("completionTime"),
    };
}

fn condition_status<'a>(status: &'a Value, type_: &str) -> Option<&'a str> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?["status"].as_str()
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
