//! Dividing replicas over targets (`spec.replicaPolicy: {type: Divide}`): the weight the manager
//! gives each chosen target, and the share of a total each weight gets. Both pure: the manager
//! records the weights on the namespace ([`REPLICAS_ANNOTATION`]), every target's syncer takes
//! its own share from them, and the shares add up to the total whatever order they run in.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::v1alpha1::{ReplicaPolicy, ReplicaPolicyType};
use crate::apis::condition::ConditionStatus;
use crate::apis::sync::v1alpha1::{CONDITION_READY, SyncTarget};

/// Annotation on a kcp namespace: JSON object of target key → weight, for the targets that
/// divide the replicas of the namespace's scalable objects. Written by the Placement controller;
/// a target not listed runs every replica.
pub const REPLICAS_ANNOTATION: &str = "placement.tmc.kcp.io/replicas";

/// The largest weight a target can have (labels and `weights` beyond it are capped).
pub const MAX_WEIGHT: u32 = 1000;

/// The weight of `target` under `policy`, or `None` when the policy duplicates. A target that
/// should take no replicas now weighs 0: cordoned, draining, or not Ready for longer than
/// `failover_grace` (its share goes to the others while it is out, and comes back with it).
/// Otherwise its entry in `weights`, else its `weightLabel` value, else 1; a label value that is
/// not a whole number counts as 1.
pub fn weight(policy: &ReplicaPolicy, target: &SyncTarget, now: Timestamp, failover_grace: Duration) -> Option<u32> {
    if policy.type_ != ReplicaPolicyType::Divide {
        return None;
    }
    let name = target.metadata.name.as_deref().unwrap_or_default();
    let draining = target.spec.evict_after.as_ref().is_some_and(|at| at.0 <= now);
    if target.spec.unschedulable || draining || out_past_grace(target, now, failover_grace) {
        return Some(0);
    }
    let explicit = policy.weights.iter().find(|w| w.name == name).map(|w| u32::try_from(w.weight).unwrap_or(0));
    let labelled = || {
        let key = policy.weight_label.as_deref()?;
        target.metadata.labels.as_ref()?.get(key)?.parse::<u32>().ok()
    };
    Some(explicit.or_else(labelled).unwrap_or(1).min(MAX_WEIGHT))
}

/// Not Ready, since longer than `grace` (a transition time from the future counts as now).
fn out_past_grace(target: &SyncTarget, now: Timestamp, grace: Duration) -> bool {
    let conditions = target.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let Some(ready) = conditions.iter().find(|c| c.type_ == CONDITION_READY) else { return false };
    if ready.status == ConditionStatus::True.as_str() {
        return false;
    }
    let since = ready.last_transition_time.0.min(now);
    since.checked_add(grace).is_ok_and(|end| end <= now)
}

/// The share of `total` that `me` runs, by largest remainder: each key gets the whole part of
/// `total × weight / sum`, and what is left goes one each to the largest fractional parts, ties
/// to the smaller key. The shares add up to `total`. All weights 0: divided equally. `None` when
/// `me` is not among `weights` (it runs `total`).
pub fn share(total: i64, weights: &BTreeMap<String, u32>, me: &str) -> Option<i64> {
    let total = total.max(0);
    let sum: i64 = weights.values().map(|w| i64::from(*w)).sum();
    let weight_of = |w: u32| if sum == 0 { 1 } else { i64::from(w) };
    let sum = if sum == 0 { weights.len() as i64 } else { sum };
    // (key, whole part, remainder numerator); i128 so total × weight cannot overflow.
    let parts: Vec<(&String, i64, i128)> = weights
        .iter()
        .map(|(k, w)| {
            let n = i128::from(total) * i128::from(weight_of(*w));
            (k, (n / i128::from(sum)) as i64, n % i128::from(sum))
        })
        .collect();
    let left = total - parts.iter().map(|p| p.1).sum::<i64>();
    let (_, whole, remainder) = *parts.iter().find(|p| p.0 == me)?;
    // Keys before `me` in the order the leftover replicas go: larger remainder, then smaller key.
    let ahead = parts.iter().filter(|p| p.2 > remainder || (p.2 == remainder && p.0.as_str() < me)).count();
    Some(whole + i64::from((ahead as i64) < left))
}

/// Reads [`REPLICAS_ANNOTATION`]'s value; `None` when it is not a JSON object of whole numbers
/// (then every target runs every replica: never fewer than asked).
pub fn parse_weights(value: &str) -> Option<BTreeMap<String, u32>> {
    serde_json::from_str(value).ok()
}

#[cfg(test)]
#[path = "replicas_tests.rs"]
mod tests;
