//! Where the time of one sync goes, from the manager's own histograms scraped before and after
//! the one-at-a-time run and each steady run: its latency from a change seen in kcp to the copy applied
//! (`tmc_sync_latency_seconds`), and the mean time and count per object of each syncer write
//! (`tmc_syncer_operation_duration_seconds{operation}`). The rest of the end-to-end figure is
//! kcp's watch delivering the change to the manager and the cluster's watch delivering the copy.
//! The same for the status run: `tmc_status_latency_seconds` (a status change seen in the cluster
//! → written in kcp) and the mean status write.

use crate::report::Results;

/// The syncer writes profiled, in the order a new object meets them.
pub const OPERATIONS: &[&str] = &["finalizer", "apply", "evidence", "status"];

/// Sum of the samples of `family` whose labels contain `label` (all when empty).
fn sum(metrics: &str, family: &str, label: &str) -> f64 {
    sum_where(metrics, family, &[label])
}

/// Sum of the samples of `family` whose line contains every one of `parts`.
fn sum_where(metrics: &str, family: &str, parts: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Mean in ms and count of a histogram's observations between two scrapes.
fn delta(before: &str, after: &str, family: &str, label: &str) -> (f64, f64) {
    let d = |suffix: &str| {
        let name = format!("{family}_{suffix}");
        sum(after, &name, label) - sum(before, &name, label)
    };
    let (total, count) = (d("sum"), d("count"));
    (if count > 0.0 { 1000.0 * total / count } else { f64::NAN }, count)
}

/// The share (%) of a histogram's observations between two scrapes that took longer than
/// `SLOW_MS` (a bucket bound): the means above hide a tail, this shows where it is.
fn slow_share(before: &str, after: &str, family: &str, label: &str) -> f64 {
    let bucket = format!("le=\"{}\"", SLOW_MS / 1000.0);
    let d = |suffix: &str, parts: &[&str]| {
        let name = format!("{family}_{suffix}");
        sum_where(after, &name, parts) - sum_where(before, &name, parts)
    };
    let (within, count) = (d("bucket", &[label, &bucket]), d("count", &[label]));
    if count > 0.0 { 100.0 * (1.0 - within / count) } else { f64::NAN }
}

/// The bucket bound `slow_share` counts beyond, in ms (one of the histograms' bounds; the
/// figures' tails are 50–400 ms).
pub const SLOW_MS: f64 = 50.0;

/// The runs profiled: key part and the column's title.
pub const RUNS: &[(&str, &str)] =
    &[("one", "one at a time"), ("steady_one", "steady, one cluster"), ("steady_two", "steady, two clusters")];

/// Records the profile of the run `run` (see [`RUNS`]) of `objects` between the scrapes
/// `before` and `after`.
pub fn record(r: &mut Results, run: &str, before: &str, after: &str, objects: usize) {
    let (latency, _) = delta(before, after, "tmc_sync_latency_seconds", "");
    if latency.is_finite() {
        r.add_extra(&format!("profile_{run}_manager_ms"), latency);
    }
    let slow = slow_share(before, after, "tmc_sync_latency_seconds", "");
    if slow.is_finite() {
        r.add_extra(&format!("profile_{run}_manager_slow_pct"), slow);
    }
    // The syncers' queue: how long keys (every event's, not only new objects') waited for a worker.
    let queue = "queue=\"syncer\"";
    let (wait, _) = delta(before, after, "tmc_workqueue_wait_seconds", queue);
    let slow = slow_share(before, after, "tmc_workqueue_wait_seconds", queue);
    if wait.is_finite() && slow.is_finite() {
        r.add_extra(&format!("profile_{run}_queue_wait_ms"), wait);
        r.add_extra(&format!("profile_{run}_queue_slow_pct"), slow);
    }
    for op in OPERATIONS {
        let label = format!("operation=\"{op}\"");
        let slow = slow_share(before, after, "tmc_syncer_operation_duration_seconds", &label);
        if slow.is_finite() {
            r.add_extra(&format!("profile_{run}_{op}_slow_pct"), slow);
        }
        let (mean, count) = delta(before, after, "tmc_syncer_operation_duration_seconds", &label);
        // No such write in the run: "n/a" rather than a mean of nothing.
        if mean.is_finite() {
            r.add_extra(&format!("profile_{run}_{op}_ms"), mean);
        }
        r.add_extra(&format!("profile_{run}_{op}_per_object"), count / objects.max(1) as f64);
    }
}

/// Records the profile of the status run of `samples` Deployments between the scrapes `before`
/// and `after`. The writes per Deployment count every status the cluster went through on the
/// way to available (each is written up, one after the other for one object).
pub fn record_status(r: &mut Results, before: &str, after: &str, samples: usize) {
    let (latency, _) = delta(before, after, "tmc_status_latency_seconds", "");
    let (write, writes) = delta(before, after, "tmc_syncer_operation_duration_seconds", "operation=\"status\"");
    let per_object = writes / samples as f64;
    for (name, value) in [
        ("profile_status_manager_ms", latency),
        ("profile_status_write_ms", write),
        ("profile_status_writes_per_object", per_object),
    ] {
        if value.is_finite() {
            r.add_extra(name, value);
        }
    }
}
