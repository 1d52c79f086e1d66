//! The Prometheus metrics of `tmc manager` and `tmc syncer`.
//!
//! Label values are bounded on purpose: a controller, queue or operation name from a fixed set, a
//! resource plural, and a SyncTarget key. Object and namespace names never become labels, so the
//! number of series grows with the number of SyncTargets, not with the number of objects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Names for the `controller` label.
pub mod controller {
    pub const SYNCTARGET: &str = "synctarget";
    pub const PLACEMENT: &str = "placement";
}

/// Names for the `queue` label: one per kind of work queue, however many instances run.
pub mod queue {
    pub const SYNCTARGET: &str = "synctarget";
    pub const PLACEMENT: &str = "placement";
    /// The queues of all syncer engines (one per SyncTarget in the manager).
    pub const SYNCER: &str = "syncer";
}

/// Buckets from 1 ms to 60 s: a settled sync takes milliseconds, one that waits for a backoff or a
/// slow cluster takes seconds to a minute.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// What a syncer did to one object, for `tmc_syncer_operations_total{operation}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOp {
    /// Server-side apply of the object in the physical cluster.
    Apply,
    /// Deletion of the copy in the physical cluster.
    Delete,
    /// Write of the downstream status into kcp.
    Status,
    /// Addition or removal of the syncer's finalizer on the kcp object.
    Finalizer,
    /// Write or removal of the evidence of a successful apply on the kcp object.
    Evidence,
}

impl SyncOp {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncOp::Apply => "apply",
            SyncOp::Delete => "delete",
            SyncOp::Status => "status",
            SyncOp::Finalizer => "finalizer",
            SyncOp::Evidence => "evidence",
        }
    }
}

fn result(ok: bool) -> &'static str {
    if ok { "success" } else { "error" }
}

/// The process's metrics. Cloning is cheap and every clone records into the same registry; the
/// value is passed to whoever records, there is no global.
#[derive(Clone)]
pub struct Metrics(Arc<Families>);

struct Families {
    registry: Registry,
    reconcile_total: IntCounterVec,
    reconcile_duration: HistogramVec,
    syncer_operations: IntCounterVec,
    syncer_operation_duration: HistogramVec,
    sync_latency: HistogramVec,
    status_latency: HistogramVec,
    target_ready: IntGaugeVec,
    heartbeat_age: GaugeVec,
    queue_depth: IntGaugeVec,
    queue_failing: IntGaugeVec,
    queue_retries: IntCounterVec,
    queue_wait: HistogramVec,
    synced_objects: IntGaugeVec,
    /// The depth each live [`QueueMetrics`] reported, by queue name and reporter id: the gauge
    /// is their sum, since one name covers a queue per kcp shard or per SyncTarget.
    queue_shares: Mutex<HashMap<(&'static str, QueueGauge), Shares>>,
    next_reporter: AtomicU64,
    /// When each SyncTarget's syncer last reported in: `tmc_heartbeat_age_seconds` is computed
    /// from it at every scrape, so the age keeps growing after the heartbeats (and with them the
    /// reconciles that would record it) stop.
    last_heartbeat: Mutex<HashMap<String, SystemTime>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Creates and registers the families. Their names and labels are constants, so a failure is a
/// bug that the unit tests catch, not a runtime condition.
struct Registrar(Registry);

impl Registrar {
    fn add<C: Collector + Clone + 'static>(&self, c: prometheus::Result<C>) -> C {
        let c = c.expect("valid metric options");
        self.0.register(Box::new(c.clone())).expect("metric names are unique");
        c
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn float_gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels))
    }

    fn histogram(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        self.add(HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels))
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registrar(Registry::new());
        #[cfg(target_os = "linux")]
        r.0.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process metrics are registered once");
        const TARGET: &[&str] = &["sync_target"];
        let families = Families {
            reconcile_total: r.counter(
                "tmc_reconcile_total",
                "Reconciles finished, by controller and result.",
                &["controller", "result"],
            ),
            reconcile_duration: r.histogram(
                "tmc_reconcile_duration_seconds",
                "Time one reconcile took, by controller.",
                &["controller"],
            ),
            syncer_operations: r.counter(
                "tmc_syncer_operations_total",
                "Writes a syncer made, by SyncTarget key, resource, operation and result.",
                &["sync_target", "resource", "operation", "result"],
            ),
            syncer_operation_duration: r.histogram(
                "tmc_syncer_operation_duration_seconds",
                "Time one syncer write took (retries of a conflict included), by SyncTarget key and operation.",
                &["sync_target", "operation"],
            ),
            sync_latency: r.histogram(
                "tmc_sync_latency_seconds",
                "Time from a change seen in kcp to the change applied in the physical cluster, by SyncTarget key.",
                TARGET,
            ),
            status_latency: r.histogram(
                "tmc_status_latency_seconds",
                "Time from a status change in the physical cluster to the status written in kcp, by SyncTarget key.",
                TARGET,
            ),
            target_ready: r.gauge(
                "tmc_synctarget_ready",
                "Whether the SyncTarget is Ready (1) or not (0), by SyncTarget key.",
                TARGET,
            ),
            heartbeat_age: r.float_gauge(
                "tmc_heartbeat_age_seconds",
                "Seconds since the SyncTarget's syncer last reported in, by SyncTarget key.",
                TARGET,
            ),
            queue_depth: r.gauge("tmc_workqueue_depth", "Keys waiting in a work queue, by queue.", &["queue"]),
            queue_failing: r.gauge(
                "tmc_workqueue_failing_keys",
                "Keys whose last attempt failed and that wait for a retry with backoff, by queue.",
                &["queue"],
            ),
            queue_retries: r.counter(
                "tmc_workqueue_retries_total",
                "Keys put back into a work queue after a failure, by queue.",
                &["queue"],
            ),
            queue_wait: r.histogram(
                "tmc_workqueue_wait_seconds",
                "Time a key waited in a work queue before a worker took it, by queue.",
                &["queue"],
            ),
            synced_objects: r.gauge(
                "tmc_synced_objects",
                "Objects a syncer keeps in its physical cluster, by SyncTarget key and resource.",
                &["sync_target", "resource"],
            ),
            registry: r.0,
            queue_shares: Default::default(),
            next_reporter: AtomicU64::new(0),
            last_heartbeat: Default::default(),
        };
        Metrics(Arc::new(families))
    }

    /// Creates the controller's series at zero, so that rates and alerts work before its first
    /// reconcile; call it once when the controller starts.
    pub fn init_controller(&self, controller: &'static str) {
        for ok in [true, false] {
            self.0.reconcile_total.with_label_values(&[controller, result(ok)]);
        }
        self.0.reconcile_duration.with_label_values(&[controller]);
    }

    /// One reconcile of `controller` finished.
    pub fn reconciled(&self, controller: &'static str, ok: bool, duration: Duration) {
        self.0.reconcile_total.with_label_values(&[controller, result(ok)]).inc();
        self.0.reconcile_duration.with_label_values(&[controller]).observe(duration.as_secs_f64());
    }

    /// A syncer of `target` did `op` on an object of `resource` (a plural such as "deployments"),
    /// which took `took`.
    pub fn syncer_op(&self, target: &str, resource: &str, op: SyncOp, ok: bool, took: Duration) {
        self.0.syncer_operations.with_label_values(&[target, resource, op.as_str(), result(ok)]).inc();
        self.0.syncer_operation_duration.with_label_values(&[target, op.as_str()]).observe(took.as_secs_f64());
    }

    /// A change seen in kcp at some moment was applied in `target`'s cluster `latency` later.
    pub fn observe_sync_latency(&self, target: &str, latency: Duration) {
        self.0.sync_latency.with_label_values(&[target]).observe(latency.as_secs_f64());
    }

    /// A status change in `target`'s cluster was written to kcp `latency` later.
    pub fn observe_status_latency(&self, target: &str, latency: Duration) {
        self.0.status_latency.with_label_values(&[target]).observe(latency.as_secs_f64());
    }

    /// Whether the SyncTarget `target` is Ready, as last reconciled.
    pub fn set_target_ready(&self, target: &str, ready: bool) {
        self.0.target_ready.with_label_values(&[target]).set(i64::from(ready));
    }

    /// Time since `target`'s syncer last reported in (status.lastSyncTime), fixed until the next
    /// call. [`Metrics::set_last_heartbeat`] keeps the age current instead.
    pub fn set_heartbeat_age(&self, target: &str, age: Duration) {
        self.0.heartbeat_age.with_label_values(&[target]).set(age.as_secs_f64());
    }

    /// `target`'s syncer last reported in at `at` (status.lastSyncTime); every scrape exports
    /// the age as of the scrape.
    pub fn set_last_heartbeat(&self, target: &str, at: SystemTime) {
        self.heartbeats().insert(target.to_string(), at);
        self.refresh_heartbeat_ages();
    }

    fn heartbeats(&self) -> std::sync::MutexGuard<'_, HashMap<String, SystemTime>> {
        self.0.last_heartbeat.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh_heartbeat_ages(&self) {
        let now = SystemTime::now();
        for (target, at) in self.heartbeats().iter() {
            // A heartbeat stamped by a clock ahead of this one is zero seconds old, not negative.
            let age = now.duration_since(*at).unwrap_or_default();
            self.0.heartbeat_age.with_label_values(&[target]).set(age.as_secs_f64());
        }
    }

    /// Objects of `resource` the syncer of `target` keeps in its cluster.
    pub fn set_synced_objects(&self, target: &str, resource: &str, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.0.synced_objects.with_label_values(&[target, resource]).set(count);
    }

    /// Deletes every series of `target`, so that a deleted SyncTarget does not linger as a stale
    /// (and never-ready) series until the process restarts. Call it after the target's syncer
    /// has stopped: a later recording creates the series again.
    pub fn remove_target(&self, target: &str) {
        let f = &self.0;
        // An error means the series did not exist, which is what removal wants.
        for single in [&f.sync_latency, &f.status_latency] {
            let _ = single.remove_label_values(&[target]);
        }
        let _ = f.target_ready.remove_label_values(&[target]);
        // Forgotten first, so a concurrent scrape cannot bring the age series back.
        self.heartbeats().remove(target);
        let _ = f.heartbeat_age.remove_label_values(&[target]);
        remove_matching(&f.syncer_operations, "sync_target", target);
        remove_matching(&f.syncer_operation_duration, "sync_target", target);
        remove_matching(&f.synced_objects, "sync_target", target);
    }

    /// A reporter for one instance of the work queue kind `queue` (see [`queue`]). Several
    /// instances may share the name: the exported depth is the sum of their last reports.
    pub fn queue(&self, queue: &'static str) -> QueueMetrics {
        let id = self.0.next_reporter.fetch_add(1, Ordering::Relaxed);
        let reporter = QueueMetrics { metrics: self.clone(), queue, id };
        // Present at zero from the start, like the reconcile counters.
        reporter.set_depth(0);
        reporter.set_failing(0);
        self.0.queue_retries.with_label_values(&[queue]);
        reporter
    }

    /// Sets reporter `id`'s share of one of `queue`'s gauges (`None` removes it) and exports
    /// the sum.
    fn share_queue_gauge(&self, queue: &'static str, gauge: QueueGauge, id: u64, value: Option<usize>) {
        let mut shares = self.0.queue_shares.lock().unwrap_or_else(|e| e.into_inner());
        let of_queue = shares.entry((queue, gauge)).or_default();
        match value {
            Some(v) => of_queue.insert(id, v),
            None => of_queue.remove(&id),
        };
        let sum: usize = of_queue.values().sum();
        // Set under the lock, so two reporters cannot export their sums out of order.
        match gauge {
            QueueGauge::Depth => self.set_queue_depth(queue, sum),
            QueueGauge::Failing => {
                self.0.queue_failing.with_label_values(&[queue]).set(i64::try_from(sum).unwrap_or(i64::MAX))
            }
        }
    }

    /// Keys waiting in `queue`, a fixed name such as "synctarget", never a per-object one.
    /// Overwrites the gauge: for a name that several queues share, use [`Metrics::queue`].
    pub fn set_queue_depth(&self, queue: &'static str, depth: usize) {
        self.0.queue_depth.with_label_values(&[queue]).set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// A key of `queue` failed and was put back with backoff.
    pub fn queue_retry(&self, queue: &'static str) {
        self.0.queue_retries.with_label_values(&[queue]).inc();
    }

    /// Everything registered, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        self.refresh_heartbeat_ages();
        let mut out = String::new();
        // Encoding into a String fails only for a metric the text format cannot represent;
        // everything registered here can be, so log rather than fail a scrape.
        if let Err(e) = TextEncoder::new().encode_utf8(&self.0.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// The content type of [`Metrics::encode`]'s output.
    pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;
}

/// Each live reporter's share of one gauge, by reporter id.
type Shares = HashMap<u64, usize>;

/// The per-queue gauges that several queues of one name add up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum QueueGauge {
    Depth,
    Failing,
}

/// What one work queue records: its depth (its share of the queue name's sum) and its
/// retries. Dropping it (with its queue) removes its share.
pub struct QueueMetrics {
    metrics: Metrics,
    queue: &'static str,
    id: u64,
}

impl QueueMetrics {
    pub fn set_depth(&self, depth: usize) {
        self.metrics.share_queue_gauge(self.queue, QueueGauge::Depth, self.id, Some(depth));
    }

    pub fn set_failing(&self, keys: usize) {
        self.metrics.share_queue_gauge(self.queue, QueueGauge::Failing, self.id, Some(keys));
    }

    pub fn retry(&self) {
        self.metrics.queue_retry(self.queue);
    }

    /// A worker took a key that had waited `waited` since it was queued.
    pub fn waited(&self, waited: std::time::Duration) {
        self.metrics.0.queue_wait.with_label_values(&[self.queue]).observe(waited.as_secs_f64());
    }
}

impl Drop for QueueMetrics {
    fn drop(&mut self) {
        self.metrics.share_queue_gauge(self.queue, QueueGauge::Depth, self.id, None);
        self.metrics.share_queue_gauge(self.queue, QueueGauge::Failing, self.id, None);
    }
}

impl std::fmt::Debug for QueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMetrics").field("queue", &self.queue).field("id", &self.id).finish()
    }
}

/// Removes the series of `vec` whose label `name` is `value`, whatever their other labels.
/// The prometheus crate deletes only exact label sets, so the current series are listed first.
fn remove_matching<T: MetricVecBuilder>(vec: &MetricVec<T>, name: &str, value: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric.get_label().iter().map(|l| (l.name(), l.value())).collect();
            if labels.get(name) == Some(&value) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
