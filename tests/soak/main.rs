//! `make soak`: half an hour of create/update/delete churn against a real kcp and two real
//! clusters, with a manager restart (SIGTERM, start again) at half time.
//!
//! Every tenant workspace (`TMC_SOAK_WORKSPACES`, default 20) has two push-mode SyncTargets, one
//! per cluster, and a Placement that puts its namespace `churn` on both; one loop per tenant
//! creates, updates and deletes ConfigMaps, Secrets and Deployments there, one write every
//! `TMC_SOAK_INTERVAL_MS` (default 2000). Every `TMC_SOAK_SAMPLE_SECONDS` (default 10) the
//! manager's VmHWM and VmRSS (`/proc/<pid>/status`) and its `tmc_*` error counters (`/metrics`)
//! go to a CSV under `target/soak/`. After `TMC_SOAK_MINUTES` (default 30) the churn stops, the
//! run waits for convergence and compares kcp with both clusters object by object.
//!
//! Judged, one check each: peak memory after the restart within 10% of before; peak memory flat
//! after warm-up in each half; error counters flat in the last third; no failure other than
//! write conflicts (409) in the manager's log in the last third (the counters cannot tell them
//! apart); the manager exits cleanly on SIGTERM; the churn ran; the clusters equal kcp (no missing, different or orphaned object);
//! nothing stuck in deletion in kcp. Ends with `N passed, N failed`; exits non-zero on failure.

#[allow(dead_code)]
#[path = "../e2e/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../e2e/env.rs"]
mod env;

mod churn;
mod judge;
mod sample;
mod state;
mod world;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use judge::Verdict;
use sample::{Csv, Sample};
use tokio_util::sync::CancellationToken;
use world::{Manager, World};

struct Settings {
    duration: Duration,
    workspaces: usize,
    interval: Duration,
    sample_every: Duration,
    converge_within: Duration,
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            duration: Duration::from_secs_f64(var("TMC_SOAK_MINUTES", 30.0f64) * 60.0),
            workspaces: var("TMC_SOAK_WORKSPACES", 20),
            interval: Duration::from_millis(var("TMC_SOAK_INTERVAL_MS", 2000)),
            sample_every: Duration::from_secs(var("TMC_SOAK_SAMPLE_SECONDS", 10)),
            converge_within: Duration::from_secs(var("TMC_SOAK_CONVERGE_SECONDS", 300)),
        }
    }
}

fn machine() -> String {
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1048576.0;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name"))?.split(':').nth(1).map(|s| s.trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    format!("{cores} cores, {mem_gib:.1} GiB, {cpu}; {profile} build")
}

/// One sample of manager incarnation `n`, and the metrics text it was taken from.
async fn take(m: &Manager, n: u32, t0: Instant, stats: &churn::Stats) -> (Sample, Option<String>) {
    let pid = m.process.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let (vm_hwm_kb, vm_rss_kb) = sample::memory_kb(&status);
    let metrics = sample::scrape(&m.metrics).await.ok();
    let sample = Sample {
        elapsed_s: t0.elapsed().as_secs_f64(),
        incarnation: n,
        pid,
        vm_hwm_kb,
        vm_rss_kb,
        errors: metrics.as_deref().map(sample::error_counts),
        churn_writes: stats.writes.load(Ordering::Relaxed),
        churn_errors: stats.errors.load(Ordering::Relaxed),
    };
    (sample, metrics)
}

/// SIGTERM, then up to 30 s for a clean exit: the verdict on how the first manager ended.
async fn stop_manager(mut m: Manager) -> Verdict {
    let name = "manager exits cleanly on SIGTERM";
    m.process.signal("TERM");
    let asked = Instant::now();
    while m.process.running() && asked.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = m.process.exit_code();
    let detail = format!("exit code {code:?} after {:.1?}", asked.elapsed());
    if !m.process.running() {
        // Reaped already: dropping it would signal a pid that may have been reused.
        std::mem::forget(m);
    }
    Verdict { name, ok: code == Some(0), detail }
}

/// Polls the comparison until the clusters equal kcp and nothing is terminating in kcp.
async fn converge(w: &World, within: Duration) -> (state::Diff, Duration) {
    let started = Instant::now();
    loop {
        let diff = state::compare(w).await.unwrap_or_else(|e| state::Diff { missing: vec![e], ..Default::default() });
        if (diff.equal() && diff.terminating.is_empty()) || started.elapsed() > within {
            return (diff, started.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The manager's log from byte `offset` on (its last third when the offset was taken then).
fn log_since(path: &std::path::Path, offset: u64) -> String {
    let log = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(log.get(offset as usize..).unwrap_or_default()).into_owned()
}

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
    target.join("soak")
}

async fn soak(cfg: Settings) -> Result<Vec<Verdict>, String> {
    let set_up = Instant::now();
    let mut w = world::setup().await?;
    let mut manager = w.start_manager(1);
    world::add_tenants(&mut w, cfg.workspaces).await?;
    println!("set-up: kcp, 2 clusters, {} tenants with 2 SyncTargets each in {:.0?}", cfg.workspaces, set_up.elapsed());

    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    std::fs::create_dir_all(out_dir()).map_err(|e| e.to_string())?;
    let csv_path = out_dir().join(format!("soak-{stamp}.csv"));
    let mut csv = Csv::create(&csv_path).map_err(|e| e.to_string())?;
    println!("samples: {}", csv_path.display());

    let stats = Arc::new(churn::Stats::default());
    let stop = CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    for (i, t) in w.tenants.iter().enumerate() {
        let client = w.clients.path(&t.path.parse().map_err(|e| format!("{e}"))?);
        loops.spawn(churn::run(client, i as u64, cfg.interval, stop.clone(), stats.clone()));
    }

    let t0 = Instant::now();
    let half = cfg.duration / 2;
    let mut samples: Vec<Sample> = vec![];
    let (mut incarnation, mut restarted_at, mut exit_verdict) = (1u32, None, None);
    let last_third_s = cfg.duration.as_secs_f64() * 2.0 / 3.0;
    let (mut last_third_metrics, mut last_third_log) = (None, 0u64);
    let mut tick = tokio::time::interval(cfg.sample_every);
    while t0.elapsed() < cfg.duration {
        tick.tick().await;
        if restarted_at.is_none() && t0.elapsed() >= half {
            // The first manager's peak, taken last thing before it goes.
            let (last, _) = take(&manager, incarnation, t0, &stats).await;
            csv.push(&last);
            samples.push(last);
            let old = std::mem::replace(&mut manager, w.start_manager(2));
            exit_verdict = Some(stop_manager(old).await);
            println!("restarted the manager at {:.0?}: {}", t0.elapsed(), exit_verdict.as_ref().unwrap().detail);
            incarnation = 2;
            restarted_at = Some(t0.elapsed().as_secs_f64());
            continue;
        }
        let (s, metrics) = take(&manager, incarnation, t0, &stats).await;
        if incarnation == 2 && s.elapsed_s >= last_third_s && last_third_metrics.is_none() {
            last_third_metrics = metrics;
            last_third_log = std::fs::metadata(&manager.process.log).map(|m| m.len()).unwrap_or(0);
        }
        println!("{}", s.csv());
        csv.push(&s);
        samples.push(s);
    }
    stop.cancel();
    while loops.join_next().await.is_some() {}
    let (last, final_metrics) = take(&manager, incarnation, t0, &stats).await;
    csv.push(&last);
    samples.push(last);
    if let (Some(before), Some(after)) = (&last_third_metrics, &final_metrics) {
        for (series, growth) in sample::grown_error_series(before, after) {
            println!("error series grown in the last third: {series} +{growth}");
        }
    }
    println!("churn stopped after {:.0?}; waiting for convergence", t0.elapsed());

    let (diff, took) = converge(&w, cfg.converge_within).await;
    println!("compared after {took:.1?}: {}", diff.describe());
    let total = cfg.duration.as_secs_f64();
    let warm_up = (0.2 * total / 2.0).max(30.0);
    let planned = (cfg.workspaces as f64 * total / cfg.interval.as_secs_f64()) as u64;
    let verdicts = vec![
        judge::peak_memory_halves(&samples),
        judge::peak_memory_flat(&samples, [0.0, restarted_at.unwrap_or(total)], warm_up),
        judge::errors_flat(&samples, last_third_s),
        judge::no_failures_but_conflicts(&log_since(&manager.process.log, last_third_log)),
        exit_verdict.unwrap_or(Verdict {
            name: "manager exits cleanly on SIGTERM",
            ok: false,
            detail: "never restarted".into(),
        }),
        judge::churn_ran(stats.writes.load(Ordering::Relaxed), planned, stats.errors.load(Ordering::Relaxed)),
        Verdict { name: "both clusters equal kcp, no orphans", ok: diff.equal(), detail: diff.describe() },
        Verdict {
            name: "nothing stuck in deletion in kcp",
            ok: diff.terminating.is_empty(),
            detail: format!("{} terminating", diff.terminating.len()),
        },
    ];
    let conflicts = stats.conflicts.load(Ordering::Relaxed);
    println!("churn: {} writes, {conflicts} on a stale belief (409/404)", stats.writes.load(Ordering::Relaxed));
    if verdicts.iter().any(|v| !v.ok) {
        let log = std::fs::read_to_string(&manager.process.log).unwrap_or_default();
        println!("--- last lines of the manager log ---");
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.iter().rev().for_each(|l| println!("{l}"));
    }
    Ok(verdicts)
}

fn main() -> ExitCode {
    let cfg = Settings::from_env();
    println!(
        "soak: {:.1} min, {} workspaces × 2 clusters, one write per {:?} per workspace, sample every {:?}; {}",
        cfg.duration.as_secs_f64() / 60.0,
        cfg.workspaces,
        cfg.interval,
        cfg.sample_every,
        machine()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let verdicts = match runtime.block_on(soak(cfg)) {
        Ok(v) => v,
        Err(e) => {
            println!("soak set-up failed: {e}");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    let failed = verdicts.iter().filter(|v| !v.ok).count();
    for v in &verdicts {
        println!("check {} ... {} ({})", v.name, if v.ok { "ok" } else { "FAILED" }, v.detail);
    }
    println!("{} passed, {failed} failed", verdicts.len() - failed);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
