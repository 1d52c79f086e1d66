//! Samples of the manager: its peak and current resident memory from `/proc/<pid>/status`, and
//! its error counters from its own `/metrics`, one CSV line each.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `tmc_*` series that count failures. A healthy manager under steady churn leaves them
/// flat: every entry is (family, label that marks a failure), `None` when the whole family
/// counts failures.
pub const ERROR_SERIES: [(&str, Option<&str>); 3] = [
    ("tmc_reconcile_total", Some("result=\"error\"")),
    ("tmc_syncer_operations_total", Some("result=\"error\"")),
    ("tmc_workqueue_retries_total", None),
];

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub elapsed_s: f64,
    /// Which manager process: 1 before the restart, 2 after.
    pub incarnation: u32,
    pub pid: u32,
    pub vm_hwm_kb: u64,
    pub vm_rss_kb: u64,
    /// Sums over [`ERROR_SERIES`], in that order; `None` when the scrape failed.
    pub errors: Option<[u64; 3]>,
    pub churn_writes: u64,
    pub churn_errors: u64,
}

pub const CSV_HEADER: &str = "elapsed_s,incarnation,pid,vm_hwm_kb,vm_rss_kb,reconcile_errors,syncer_op_errors,queue_retries,churn_writes,churn_errors";

impl Sample {
    pub fn csv(&self) -> String {
        let e = |i: usize| self.errors.map(|e| e[i].to_string()).unwrap_or_default();
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{}",
            self.elapsed_s,
            self.incarnation,
            self.pid,
            self.vm_hwm_kb,
            self.vm_rss_kb,
            e(0),
            e(1),
            e(2),
            self.churn_writes,
            self.churn_errors
        )
    }
}

/// `(VmHWM, VmRSS)` in KiB from a `/proc/<pid>/status` text.
pub fn memory_kb(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Sums of the [`ERROR_SERIES`] in a Prometheus text exposition.
pub fn error_counts(metrics: &str) -> [u64; 3] {
    ERROR_SERIES.map(|(family, marker)| {
        metrics
            .lines()
            .filter(|l| is_error_line(l, family, marker))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    })
}

/// The error series that grew from `before` to `after` (two expositions), summed over
/// SyncTargets (a per-target key says little in a summary): `(series, growth)`, largest first.
pub fn grown_error_series(before: &str, after: &str) -> Vec<(String, u64)> {
    fn by_series(text: &str) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for line in text.lines().filter(|l| ERROR_SERIES.iter().any(|(f, m)| is_error_line(l, f, *m))) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let labels = series.split_once('{').map(|(_, l)| l.trim_end_matches('}')).unwrap_or_default();
            let kept: Vec<&str> = labels.split(',').filter(|l| !l.starts_with("sync_target=")).collect();
            let family = series.split('{').next().unwrap_or_default();
            *sums.entry(format!("{family}{{{}}}", kept.join(","))).or_default() += value.parse::<f64>().unwrap_or(0.0);
        }
        sums
    }
    let (before, after) = (by_series(before), by_series(after));
    let mut grown: Vec<(String, u64)> = after
        .into_iter()
        .map(|(k, v)| {
            let was = before.get(&k).copied().unwrap_or(0.0);
            (k, (v - was).max(0.0) as u64)
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    grown.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    grown
}

fn is_error_line(line: &str, family: &str, marker: Option<&str>) -> bool {
    line.strip_prefix(family).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        && marker.is_none_or(|m| line.contains(m))
}

/// `GET /metrics` over plain HTTP/1.0 from `base` (`http://host:port`): the manager's endpoint
/// is loopback and unauthenticated, and a bare request keeps the sampler out of the way.
pub async fn scrape(base: &str) -> Result<String, String> {
    let addr = base.strip_prefix("http://").ok_or("not an http:// address")?;
    let fetch = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        conn.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
        let (head, body) = answer.split_once("\r\n\r\n").ok_or("no HTTP header")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(head.lines().next().unwrap_or_default().to_string());
        }
        Ok(body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.map_err(|_| "scrape timed out".to_string())?
}

/// Appends samples to a CSV file (created with its header).
pub struct Csv(std::fs::File);

impl Csv {
    pub fn create(path: &std::path::Path) -> std::io::Result<Csv> {
        let mut file = std::fs::File::create(path)?;
        writeln!(file, "{CSV_HEADER}")?;
        Ok(Csv(file))
    }

    pub fn push(&mut self, s: &Sample) {
        let _ = writeln!(self.0, "{}", s.csv());
    }
}
