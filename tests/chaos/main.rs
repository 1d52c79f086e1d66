//! The chaos suite: faults against real servers (kill -9, SIGSTOP, restarted kcp and
//! kube-apiservers, etcd compaction, a TCP proxy that delays, cuts or blackholes), each case
//! asserting exactly-once downstream, no orphans, no DELETE the fault did not justify, no kcp
//! object stuck behind a finalizer, and converged status. See docs/reliability.md.
//!
//! One kcp (behind a proxy) and two clusters (each behind a proxy) for the whole run; the cases
//! run one at a time, each with its own workspaces and its own `tmc manager`, since they kill
//! and stop the shared servers. `make chaos` runs it (`cargo test --test chaos [-- <substring>[,<substring>…]]`);
//! `TMC_CHAOS_SHORT=1` runs the same cases with smaller sizes (see `burst_size`).

mod apiserver;
mod burst;
mod checks;
// The e2e fixtures, shared; the chaos suite uses only part of them.
#[allow(dead_code)]
#[path = "../e2e/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../e2e/env.rs"]
mod env;
mod evidence;
mod partition;
mod procs;
mod proxy;
mod restart;
mod upsync;
mod world;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Figures a case measured, printed with its result (and copied into docs/reliability.md).
#[derive(Clone, Default)]
pub struct Report(Arc<Mutex<Vec<String>>>);

impl Report {
    pub fn figure(&self, line: String) {
        eprintln!("    {line}");
        self.0.lock().unwrap().push(line);
    }
}

fn short() -> bool {
    std::env::var_os("TMC_CHAOS_SHORT").is_some()
}

/// Objects per burst: 1,000, or 300 in the short run.
pub fn burst_size() -> usize {
    if short() { 300 } else { 1000 }
}

/// Unrelated objects in a bound workspace during the manager restart: 10,000, or 2,000 short.
pub fn noise_size() -> usize {
    if short() { 2000 } else { 10_000 }
}

type CaseFn = fn(Arc<world::World>, Report) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

macro_rules! cases {
    ($($path:path),* $(,)?) => {
        vec![$((stringify!($path), (|w, r| Box::pin(async move { $path(w, &r).await })) as CaseFn)),*]
    };
}

fn all_cases() -> Vec<(&'static str, CaseFn)> {
    cases![
        burst::manager_killed_mid_burst,
        restart::manager_restart_with_unrelated_objects_and_latency,
        restart::kcp_restarted_mid_burst,
        apiserver::copy_deleted_behind_the_syncers_back,
        apiserver::compaction_forces_a_relist,
        partition::hung_and_partitioned_clusters_fail_over,
        partition::kcp_unreachable_keeps_cross_workspace_workload,
        upsync::copies_hold_through_a_cut_cluster_and_a_killed_manager,
    ]
}

/// The limit of one case.
const CASE_TIMEOUT: Duration = Duration::from_secs(600);

fn main() -> std::process::ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    // `-- a,b` runs the cases whose names contain `a` or `b`.
    let wanted = |n: &str| filter.as_ref().is_none_or(|f| f.split(',').any(|part| n.contains(part)));
    let cases: Vec<_> = all_cases().into_iter().filter(|(n, _)| wanted(n)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let started = Instant::now();
        println!("running {} chaos cases one at a time{}", cases.len(), if short() { " (short sizes)" } else { "" });
        let world = match world::setup().await {
            Ok(w) => Arc::new(w),
            Err(e) => {
                println!("chaos set-up failed: {e}");
                println!("0 passed, {} failed", cases.len());
                return std::process::ExitCode::FAILURE;
            }
        };
        println!("set-up done in {:.1?}", started.elapsed());
        let (mut passed, mut failed) = (0, 0);
        // Repeated at the very end: CI keeps only the tail of the output.
        let mut failures: Vec<String> = Vec::new();
        for (name, case) in cases {
            println!("case {name} ...");
            let report = Report::default();
            let t = Instant::now();
            // Its own task, so a panic fails the case and not the run.
            let run = tokio::spawn(tokio::time::timeout(CASE_TIMEOUT, case(world.clone(), report.clone())));
            let result = match run.await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(format!("timed out after {CASE_TIMEOUT:?}")),
                Err(e) => Err(format!("panicked: {e}")),
            };
            let figures = report.0.lock().unwrap().join("; ");
            match result {
                Ok(()) => {
                    passed += 1;
                    println!("case {name} ... ok ({:.1?}) {figures}", t.elapsed());
                }
                Err(e) => {
                    failed += 1;
                    println!("case {name} ... FAILED ({:.1?}) {figures}\n    {e}", t.elapsed());
                    failures.push(format!("{name}: {e}"));
                }
            }
            // A case that failed mid-fault must not leave the next one a broken link.
            world.kcp_proxy.set(proxy::Mode::Pass);
            world.cluster_proxies.iter().for_each(|p| p.set(proxy::Mode::Pass));
            world.apiservers.iter().for_each(|a| a.lock().unwrap().signal("CONT"));
        }
        if failed > 0 {
            println!("--- set TMC_E2E_KEEP=1 to keep the logs under {} ---", world.kcp.dir.path().display());
        }
        println!("chaos finished in {:.1?}", started.elapsed());
        failures.iter().for_each(|f| println!("FAILED {f}"));
        println!("{passed} passed, {failed} failed");
        drop(world);
        if failed == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
    })
}
