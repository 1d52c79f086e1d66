//! What a syncer records into the metrics: its writes, and how long a change took to cross.
//!
//! Latency needs the moment a change was seen, which the work queue does not keep. So the engine
//! notes it here, per queue key, when an upstream event (a kcp object changed) or a downstream
//! event (a cluster object changed) queues the key; the sync that writes the result takes it.
//! A key that fails keeps its moment, so a retried change is measured from when it was first
//! seen; a sync that succeeds without writing anything forgets what it saw before it started.
//! Entries therefore live only as long as their key waits or retries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::server::Metrics;
use crate::server::metrics::SyncOp;
use crate::syncer::upstream::SyncKey;

pub(super) struct Telemetry {
    metrics: Metrics,
    target_key: String,
    /// When the oldest unhandled upstream change of each key was seen.
    upstream_seen: Mutex<HashMap<SyncKey, Instant>>,
    /// When the oldest unhandled downstream change of each key was seen.
    downstream_seen: Mutex<HashMap<SyncKey, Instant>>,
}

type Seen = Mutex<HashMap<SyncKey, Instant>>;

/// Whether a write succeeded, counting "already gone" (404) as done, as the engine does.
pub(super) fn done_or_gone<T>(result: &Result<T, kube::Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(kube::Error::Api(s)) => s.is_not_found(),
        Err(_) => false,
    }
}

fn lock(seen: &Seen) -> std::sync::MutexGuard<'_, HashMap<SyncKey, Instant>> {
    // A panic elsewhere cannot leave a map half-updated: keep using it.
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

impl Telemetry {
    pub(super) fn new(metrics: Metrics, target_key: &str) -> Self {
        Self {
            metrics,
            target_key: target_key.to_string(),
            upstream_seen: Default::default(),
            downstream_seen: Default::default(),
        }
    }

    pub(super) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(super) fn target_key(&self) -> &str {
        &self.target_key
    }

    /// An upstream event queues `key` now; an earlier unhandled change keeps its moment.
    pub(super) fn upstream_changed(&self, key: &SyncKey) {
        lock(&self.upstream_seen).entry(key.clone()).or_insert_with(Instant::now);
    }

    /// A downstream event queues `key` now.
    pub(super) fn downstream_changed(&self, key: &SyncKey) {
        lock(&self.downstream_seen).entry(key.clone()).or_insert_with(Instant::now);
    }

    /// The object of `key` was applied in the cluster: the upstream change it carries arrived.
    pub(super) fn applied(&self, key: &SyncKey) {
        if let Some(seen) = lock(&self.upstream_seen).remove(key) {
            self.metrics.observe_sync_latency(&self.target_key, seen.elapsed());
        }
    }

    /// The status of `key` was written to kcp: the downstream change it carries arrived.
    pub(super) fn status_written(&self, key: &SyncKey) {
        if let Some(seen) = lock(&self.downstream_seen).remove(key) {
            self.metrics.observe_status_latency(&self.target_key, seen.elapsed());
        }
    }

    /// A sync of `key` that started at `started` succeeded: changes seen before then needed no
    /// write (or were measured already). Changes seen since wait for the sync they queued.
    pub(super) fn settled(&self, key: &SyncKey, started: Instant) {
        for seen in [&self.upstream_seen, &self.downstream_seen] {
            let mut seen = lock(seen);
            if seen.get(key).is_some_and(|t| *t <= started) {
                seen.remove(key);
            }
        }
    }

    /// A write of `op` on an object of `resource` (a plural), begun at `started`, finished.
    pub(super) fn op(&self, resource: &str, op: SyncOp, ok: bool, started: Instant) {
        self.metrics.syncer_op(&self.target_key, resource, op, ok, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kcp::ClusterKey;

    fn key(name: &str) -> SyncKey {
        SyncKey {
            resource: Some(0),
            key: ClusterKey::new(crate::kcp::LogicalClusterName::new("c1").unwrap(), Some("ns".into()), name),
        }
    }

    fn count(m: &Metrics, family: &str) -> u64 {
        let prefix = format!(r#"{family}_count{{sync_target="t"}} "#);
        m.encode().lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.parse().unwrap())
    }

    #[test]
    fn latency_is_observed_once_per_change_and_only_on_write() {
        let t = Telemetry::new(Metrics::new(), "t");
        let (a, b) = (key("a"), key("b"));
        // (step, sync latency observations, status latency observations) after the step.
        type Step<'a> = Box<dyn Fn() + 'a>;
        let steps: Vec<(&str, Step, u64, u64)> = vec![
            ("a changes upstream", Box::new(|| t.upstream_changed(&a)), 0, 0),
            ("a changes again", Box::new(|| t.upstream_changed(&a)), 0, 0),
            ("a applied", Box::new(|| t.applied(&a)), 1, 0),
            ("a applied again: nothing new seen", Box::new(|| t.applied(&a)), 1, 0),
            ("b changes downstream", Box::new(|| t.downstream_changed(&b)), 1, 0),
            ("b's status written", Box::new(|| t.status_written(&b)), 1, 1),
            ("b changes upstream", Box::new(|| t.upstream_changed(&b)), 1, 1),
            ("b settles without a write", Box::new(|| t.settled(&b, Instant::now())), 1, 1),
            ("b applied later: its change was forgotten", Box::new(|| t.applied(&b)), 1, 1),
        ];
        for (what, step, sync, status) in &steps {
            step();
            let got =
                (count(t.metrics(), "tmc_sync_latency_seconds"), count(t.metrics(), "tmc_status_latency_seconds"));
            assert_eq!(got, (*sync, *status), "{what}");
        }
    }

    #[test]
    fn changes_seen_during_a_sync_survive_its_end() {
        let t = Telemetry::new(Metrics::new(), "t");
        let started = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        t.upstream_changed(&key("a"));
        t.settled(&key("a"), started);
        t.applied(&key("a"));
        assert_eq!(count(t.metrics(), "tmc_sync_latency_seconds"), 1);
    }
}
