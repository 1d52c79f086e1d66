//! What the bench measured, reduced to figures: percentiles of one run, medians (with min and
//! max) over the repetitions, and the two outputs — `docs/benchmarks.md` for people and
//! `docs/benchmarks.json` for tools, with exactly the keys issue 11 names.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The `p` quantile (0..=1) of `samples`, nearest rank; NaN when there are none.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One figure over the repetitions: every value, reported as median with min and max.
#[derive(Clone, Debug, Default)]
pub struct Figure(pub Vec<f64>);

impl Figure {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }
    pub fn median(&self) -> f64 {
        percentile(&self.0, 0.5)
    }
    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }
    /// "median (min–max)" with `digits` decimals; "n/a" when nothing was measured.
    pub fn show(&self, digits: usize) -> String {
        if self.0.is_empty() {
            return "n/a".into();
        }
        if self.0.len() == 1 {
            return format!("{:.digits$}", self.median());
        }
        format!("{:.digits$} ({:.digits$}–{:.digits$})", self.median(), self.min(), self.max())
    }
}

/// Every figure by its JSON key (see [`KEYS`]).
#[derive(Default)]
pub struct Results {
    pub figures: BTreeMap<&'static str, Figure>,
    /// Figures the markdown shows beyond the JSON keys, by a name of their own.
    pub extra: BTreeMap<String, Figure>,
    pub machine: String,
    pub date: String,
}

/// The keys of `docs/benchmarks.json`, in the order issue 11 lists them (`machine` and `date`
/// are strings, the rest medians in milliseconds, seconds, MB, KB or per second as named).
pub const KEYS: &[&str] = &[
    "sync_p50_ms",
    "sync_p99_ms",
    "sync_floor_p50_ms",
    "sync_floor_p99_ms",
    "peer_sync_p50_ms",
    "peer_sync_p99_ms",
    "steady_p99_ms",
    "steady_floor_p99_ms",
    "peer_steady_p99_ms",
    "status_p50_ms",
    "status_vw_floor_p50_ms",
    "burst_objects_per_s",
    "burst_floor_objects_per_s",
    "peer_burst_objects_per_s",
    "restart_ready_s",
    "restart_settled_s",
    "restart_writes",
    "rss_base_mb",
    "rss_hwm_mb_10k",
    "peer_rss_mb_10k",
    "unplaced_kb_per_object",
    "machine",
    "date",
];

impl Results {
    pub fn add(&mut self, key: &'static str, value: f64) {
        assert!(KEYS.contains(&key), "{key} is not a key of docs/benchmarks.json");
        self.figures.entry(key).or_default().push(value);
    }

    pub fn add_extra(&mut self, name: &str, value: f64) {
        self.extra.entry(name.to_string()).or_default().push(value);
    }

    /// A figure by JSON key or extra name (empty when not measured).
    pub fn get(&self, key: &str) -> Figure {
        let figure = self.figures.get(key).or_else(|| self.extra.get(key));
        figure.cloned().unwrap_or_default()
    }

    /// The summary: every key present; a figure that was not measured is `null` (the markdown
    /// says why), never a made-up number.
    pub fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for key in KEYS {
            let value = match *key {
                "machine" => json!(self.machine),
                "date" => json!(self.date),
                k => match self.figures.get(k) {
                    Some(f) if !f.0.is_empty() && f.median().is_finite() => json!(round(f.median())),
                    _ => Value::Null,
                },
            };
            out.insert(key.to_string(), value);
        }
        Value::Object(out)
    }
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// "a / b" as a ratio with two decimals and the × sign, or "n/a".
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 { format!("{:.2}×", a / b) } else { "n/a".into() }
}

/// The machine the bench ran on: cores, memory and CPU model, from /proc.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores, {:.1} GiB, {model}", mem_kb / 1_048_576.0)
}

/// `VmHWM` (peak resident set) or `VmRSS` of process `pid` in MB, from /proc.
pub fn proc_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}
