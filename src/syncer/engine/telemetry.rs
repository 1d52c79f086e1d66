//! What a syncer records into the metrics: its writes, and how long a change took to cross.
//!
//! Latency needs the moment a change was seen, which the work queue does not keep. So the engine
//! notes it here, per queue key, when an upstream event (a kcp object changed) or a downstream
//! event (a cluster object changed) queues the key. A sync takes the moments seen before it
//! began, and its write observes them; a change seen while it runs (a status arriving while the
//! previous one is being written) waits for the next sync and is measured from its own moment,
//! the wait included, not folded into the older change. A sync that fails hands its moments
//! back, so a retried change is measured from when it was first seen; one that succeeds without
//! writing forgets them. Entries therefore live only as long as their key waits, syncs or
//! retries.

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
    /// The moments the sync in progress of each key took from `upstream_seen`.
    upstream_carried: Mutex<HashMap<SyncKey, Instant>>,
    /// The moments the sync in progress of each key took from `downstream_seen`.
    downstream_carried: Mutex<HashMap<SyncKey, Instant>>,
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
            upstream_carried: Default::default(),
            downstream_carried: Default::default(),
        }
    }

    /// (seen, carried) for upstream and downstream changes.
    fn pairs(&self) -> [(&Seen, &Seen); 2] {
        [(&self.upstream_seen, &self.upstream_carried), (&self.downstream_seen, &self.downstream_carried)]
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

    /// A sync of `key` begins: it carries every change of `key` seen so far.
    pub(super) fn begin(&self, key: &SyncKey) {
        for (seen, carried) in self.pairs() {
            let taken = lock(seen).remove(key);
            if let Some(at) = taken {
                lock(carried).insert(key.clone(), at);
            }
        }
    }

    /// The object of `key` was applied in the cluster: the upstream change its sync carries
    /// arrived.
    pub(super) fn applied(&self, key: &SyncKey) {
        if let Some(seen) = lock(&self.upstream_carried).remove(key) {
            self.metrics.observe_sync_latency(&self.target_key, seen.elapsed());
        }
    }

    /// The status of `key` was written to kcp: the downstream change its sync carries arrived.
    pub(super) fn status_written(&self, key: &SyncKey) {
        if let Some(seen) = lock(&self.downstream_carried).remove(key) {
            self.metrics.observe_status_latency(&self.target_key, seen.elapsed());
        }
    }

    /// The sync of `key` ended. Succeeded: what it carried needed no further write (or was
    /// measured already). Failed: what it carried waits for the retry, still measured from when
    /// it was first seen (the older of that and anything seen meanwhile).
    pub(super) fn finished(&self, key: &SyncKey, ok: bool) {
        for (seen, carried) in self.pairs() {
            let Some(at) = lock(carried).remove(key) else { continue };
            if !ok {
                let mut seen = lock(seen);
                let oldest = seen.entry(key.clone()).or_insert(at);
                *oldest = (*oldest).min(at);
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

    /// The histogram `family`'s `_count` or `_sum` sample for target `t` (0 before any).
    fn sample(m: &Metrics, family: &str, suffix: &str) -> f64 {
        let prefix = format!(r#"{family}_{suffix}{{sync_target="t"}} "#);
        m.encode().lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0.0, |v| v.parse().unwrap())
    }

    fn count(m: &Metrics, family: &str) -> u64 {
        sample(m, family, "count") as u64
    }

    fn sum(m: &Metrics, family: &str) -> f64 {
        sample(m, family, "sum")
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
            ("a applied outside a sync: nothing carried", Box::new(|| t.applied(&a)), 0, 0),
            ("a's sync begins", Box::new(|| t.begin(&a)), 0, 0),
            ("a applied", Box::new(|| t.applied(&a)), 1, 0),
            ("a applied again: nothing new carried", Box::new(|| t.applied(&a)), 1, 0),
            ("a's sync ends", Box::new(|| t.finished(&a, true)), 1, 0),
            ("b changes downstream", Box::new(|| t.downstream_changed(&b)), 1, 0),
            ("b's sync begins", Box::new(|| t.begin(&b)), 1, 0),
            ("b's status written", Box::new(|| t.status_written(&b)), 1, 1),
            ("b's sync ends", Box::new(|| t.finished(&b, true)), 1, 1),
            ("b changes upstream", Box::new(|| t.upstream_changed(&b)), 1, 1),
            ("b's next sync begins", Box::new(|| t.begin(&b)), 1, 1),
            ("and ends without a write", Box::new(|| t.finished(&b, true)), 1, 1),
            ("b's sync after that begins", Box::new(|| t.begin(&b)), 1, 1),
            ("b applied: its change was forgotten", Box::new(|| t.applied(&b)), 1, 1),
        ];
        for (what, step, sync, status) in &steps {
            step();
            let got =
                (count(t.metrics(), "tmc_sync_latency_seconds"), count(t.metrics(), "tmc_status_latency_seconds"));
            assert_eq!(got, (*sync, *status), "{what}");
        }
    }

    /// A status that arrives while the previous one is being written is measured by the next
    /// sync, from its own moment and with its wait, not folded into the older one.
    #[test]
    fn a_change_seen_during_a_sync_is_measured_by_the_next() {
        let t = Telemetry::new(Metrics::new(), "t");
        let a = key("a");
        t.downstream_changed(&a);
        t.begin(&a);
        t.downstream_changed(&a);
        std::thread::sleep(std::time::Duration::from_millis(30));
        t.status_written(&a);
        t.finished(&a, true);
        assert_eq!(count(t.metrics(), "tmc_status_latency_seconds"), 1);
        t.begin(&a);
        t.status_written(&a);
        t.finished(&a, true);
        assert_eq!(count(t.metrics(), "tmc_status_latency_seconds"), 2, "the second change was lost");
        let total = sum(t.metrics(), "tmc_status_latency_seconds");
        assert!(total >= 0.06, "the second change's wait for the first write is not counted: {total} s for both");
    }

    /// A failed sync hands its moment back: the retry measures from the first sighting, not
    /// from a change seen meanwhile.
    #[test]
    fn a_failed_sync_keeps_the_oldest_moment() {
        let t = Telemetry::new(Metrics::new(), "t");
        let a = key("a");
        t.upstream_changed(&a);
        t.begin(&a);
        std::thread::sleep(std::time::Duration::from_millis(30));
        t.upstream_changed(&a);
        t.finished(&a, false);
        t.begin(&a);
        t.applied(&a);
        t.finished(&a, true);
        assert_eq!(count(t.metrics(), "tmc_sync_latency_seconds"), 1);
        let total = sum(t.metrics(), "tmc_sync_latency_seconds");
        assert!(total >= 0.03, "measured from the later change: {total} s");
    }
}
