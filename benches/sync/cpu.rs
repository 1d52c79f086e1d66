//! Where the machine's CPU goes during a bench phase: CPU seconds of each program (kcp, the
//! manager, the clusters' API servers and etcd, the bench itself), summed over its processes
//! from /proc before and after the phase. On two cores this says whether the manager or the
//! servers it writes to bound a burst.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::report::Results;

/// The programs reported, by the process name the kernel shows (`comm`, at most 15 bytes), and
/// the name of their row; everything else is summed as "other".
pub const PROGRAMS: &[(&str, &str)] = &[
    ("kcp", "kcp"),
    ("tmc", "kcp-tmc manager"),
    ("kube-apiserver", "clusters' kube-apiservers"),
    ("etcd", "clusters' etcd"),
    ("api-syncagent", "peer (api-syncagent)"),
];

/// The bench's own process name starts with this (cargo names bench binaries `sync-<hash>`).
const BENCH_PREFIX: &str = "sync-";

pub struct Snapshot {
    at: Instant,
    /// Clock ticks (user + system) by row.
    ticks: BTreeMap<&'static str, u64>,
}

fn row_of(comm: &str) -> &'static str {
    match PROGRAMS.iter().find(|(c, _)| *c == comm) {
        Some((c, _)) => c,
        None if comm.starts_with(BENCH_PREFIX) => "bench",
        None => "other",
    }
}

/// (comm, utime + stime) of one `/proc/<pid>/stat` line. The name is in parentheses and may
/// itself contain spaces and parentheses: the fields after it start after the last ')'.
fn parse_stat(line: &str) -> Option<(&str, u64)> {
    let (head, rest) = line.rsplit_once(')')?;
    let comm = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks))
}

pub fn snapshot() -> Snapshot {
    let mut ticks = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(line) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some((comm, t)) = parse_stat(&line) {
            *ticks.entry(row_of(comm)).or_default() += t;
        }
    }
    Snapshot { at: Instant::now(), ticks }
}

/// Records, for phase `phase`, each row's CPU seconds between `before` and now, and the
/// phase's wall seconds (`cpu_<phase>_<row>_s`, `cpu_<phase>_wall_s`). Processes that exited
/// during the phase are not counted.
pub fn record(r: &mut Results, phase: &str, before: &Snapshot) {
    let after = snapshot();
    let tick = clock_ticks_per_second();
    r.add_extra(&format!("cpu_{phase}_wall_s"), before.at.elapsed().as_secs_f64());
    // Every row, 0 for a program not running: the values of one phase line up by repetition.
    let rows = PROGRAMS.iter().map(|(c, _)| *c).chain(["bench", "other"]);
    for row in rows {
        let (now, then) = (after.ticks.get(row).copied().unwrap_or(0), before.ticks.get(row).copied().unwrap_or(0));
        r.add_extra(&format!("cpu_{phase}_{row}_s"), now.saturating_sub(then) as f64 / tick);
    }
}

fn clock_ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output();
    out.ok().and_then(|o| String::from_utf8(o.stdout).ok()).and_then(|s| s.trim().parse().ok()).unwrap_or(100.0)
}
