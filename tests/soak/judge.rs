//! The verdicts, as pure functions of the samples: one check per judged property.

use crate::sample::{ERROR_SERIES, Sample};

/// How far the peak memory may move: the "flat within 10%".
pub const MEMORY_TOLERANCE: f64 = 0.10;

#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The last VmHWM sampled of manager `incarnation`: its peak over its whole life.
pub fn peak_kb(samples: &[Sample], incarnation: u32) -> Option<u64> {
    samples.iter().rfind(|s| s.incarnation == incarnation && s.vm_hwm_kb > 0).map(|s| s.vm_hwm_kb)
}

/// VmHWM of `incarnation` at its first sample at or after `elapsed_s`.
fn peak_at_kb(samples: &[Sample], incarnation: u32, elapsed_s: f64) -> Option<u64> {
    samples
        .iter()
        .find(|s| s.incarnation == incarnation && s.elapsed_s >= elapsed_s && s.vm_hwm_kb > 0)
        .map(|s| s.vm_hwm_kb)
}

/// The peak of the manager after the restart within [`MEMORY_TOLERANCE`] of the peak before.
pub fn peak_memory_halves(samples: &[Sample]) -> Verdict {
    let name = "peak memory (VmHWM) after the restart within 10% of before";
    match (peak_kb(samples, 1), peak_kb(samples, 2)) {
        (Some(first), Some(second)) => {
            let change = second as f64 / first as f64 - 1.0;
            Verdict {
                name,
                ok: change.abs() <= MEMORY_TOLERANCE,
                detail: format!("{:.1} MiB → {:.1} MiB ({:+.1}%)", mib(first), mib(second), change * 100.0),
            }
        }
        (first, second) => {
            Verdict { name, ok: false, detail: format!("no samples: first {first:?}, second {second:?}") }
        }
    }
}

/// In each half, the peak at the end is within [`MEMORY_TOLERANCE`] of the peak once warmed up
/// (`warm_up_s` after the half began at `starts[i]`): steady churn must not grow the manager.
pub fn peak_memory_flat(samples: &[Sample], starts: [f64; 2], warm_up_s: f64) -> Verdict {
    let name = "peak memory (VmHWM) flat after warm-up in each half";
    let mut ok = true;
    let mut detail = vec![];
    for (i, start) in starts.iter().enumerate() {
        let incarnation = i as u32 + 1;
        match (peak_at_kb(samples, incarnation, start + warm_up_s), peak_kb(samples, incarnation)) {
            (Some(warm), Some(end)) => {
                let growth = end as f64 / warm as f64 - 1.0;
                ok &= growth <= MEMORY_TOLERANCE;
                detail.push(format!(
                    "half {incarnation}: {:.1} → {:.1} MiB ({:+.1}%)",
                    mib(warm),
                    mib(end),
                    growth * 100.0
                ));
            }
            _ => {
                ok = false;
                detail.push(format!("half {incarnation}: no sample after warm-up"));
            }
        }
    }
    Verdict { name, ok, detail: detail.join("; ") }
}

/// The manager's error counters do not grow from the start of the last third to the end.
pub fn errors_flat(samples: &[Sample], last_third_s: f64) -> Verdict {
    let name = "error counters flat in the last third";
    let scraped: Vec<(&Sample, [u64; 3])> =
        samples.iter().filter(|s| s.incarnation == 2).filter_map(|s| s.errors.map(|e| (s, e))).collect();
    let from = scraped.iter().find(|(s, _)| s.elapsed_s >= last_third_s);
    match (from, scraped.last()) {
        (Some((a, before)), Some((b, after))) if b.elapsed_s > a.elapsed_s => {
            let grown: Vec<String> = ERROR_SERIES
                .iter()
                .zip(before.iter().zip(after))
                .filter(|(_, (x, y))| y > x)
                .map(|((family, _), (x, y))| format!("{family} {x} → {y}"))
                .collect();
            let detail = if grown.is_empty() {
                format!("{before:?} at {:.0} s and {after:?} at {:.0} s", a.elapsed_s, b.elapsed_s)
            } else {
                grown.join(", ")
            };
            Verdict { name, ok: grown.is_empty(), detail }
        }
        _ => Verdict { name, ok: false, detail: "fewer than two scrapes in the last third".into() },
    }
}

/// Warnings and errors in a stretch of the manager's log, split into optimistic-concurrency
/// conflicts (`409 Conflict`: another writer changed the object first; retried from the fresher
/// cache) and everything else.
pub fn log_failures(log: &str) -> (usize, Vec<&str>) {
    let failures = log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR "));
    let (conflicts, others): (Vec<&str>, Vec<&str>) = failures.partition(|l| l.contains("(409 Conflict)"));
    (conflicts.len(), others)
}

/// The error counters cannot tell a lost compare-and-swap from a real failure; the manager's
/// log can: in the last third it reports no failure other than write conflicts.
pub fn no_failures_but_conflicts(log_last_third: &str) -> Verdict {
    let (conflicts, others) = log_failures(log_last_third);
    let first = others.first().map(|l| format!("; first: {}", l.chars().take(300).collect::<String>()));
    Verdict {
        name: "no failure but write conflicts in the manager log in the last third",
        ok: others.is_empty(),
        detail: format!(
            "{conflicts} conflicts (409), {} other warnings or errors{}",
            others.len(),
            first.unwrap_or_default()
        ),
    }
}

/// The churn wrote at least 80% of what its rate promises (a stalled churn would make the
/// other checks pass for nothing), and at most 1% of its writes failed for a reason of their own
/// (an overloaded kcp answers `500 resource quota evaluation timed out` now and then: a fault of
/// the servers under the churn, not of the manager, but more than a few means the run did not
/// load the manager as planned).
pub fn churn_ran(writes: u64, planned: u64, errors: u64) -> Verdict {
    Verdict {
        name: "churn ran at its rate, at most 1% of writes failed",
        ok: planned > 0 && writes * 5 >= planned * 4 && errors * 100 <= writes,
        detail: format!("{writes} writes of {planned} planned, {errors} failed"),
    }
}
