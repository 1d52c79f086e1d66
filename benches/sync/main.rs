//! `make bench`: sync latency (one at a time and at a steady rate), status latency, burst
//! throughput, a restart with every synced object, and memory, against a real kcp and two real
//! clusters. Every timed figure has its floor measured in the same run — the same writes done by
//! a bare client, timed the same way — and floor and kcp-tmc runs are interleaved within each
//! of `TMC_BENCH_REPEAT` (default 3) repetitions, so the ratios hold on a noisy machine. Figures
//! are medians over the repetitions with min and max.
//!
//! Knobs: `TMC_BENCH_WORKSPACES` (10), `TMC_BENCH_OBJECTS` (burst sizes, `1000,10000`; the last
//! is the headline), `TMC_BENCH_SAMPLES` (100 one-at-a-time objects), `TMC_BENCH_STEADY`
//! (300 objects at 20/s), `TMC_BENCH_STATUS` (50 Deployments), `TMC_BENCH_REPEAT` (3).
//! Output: `docs/benchmarks.md` and `docs/benchmarks.json` (or `TMC_BENCH_OUT`, a directory).

// The e2e suite's environment, shared; the bench uses only part of it.
#[allow(dead_code)]
#[path = "../../tests/e2e/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../../tests/e2e/env.rs"]
mod env;
mod measure;
mod output;
mod report;
mod restart;
mod setup;
mod status;

use std::time::Instant;

use measure::Writer;
use report::{Results, percentile, proc_mb};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The sizes of the bursts, smallest first; the last one is the headline figure.
fn burst_sizes() -> Vec<usize> {
    let sizes = std::env::var("TMC_BENCH_OBJECTS").unwrap_or("1000,10000".into());
    sizes.split(',').filter_map(|s| s.trim().parse().ok()).collect()
}

fn main() {
    let workspaces = knob("TMC_BENCH_WORKSPACES", 10);
    let repeat = knob("TMC_BENCH_REPEAT", 3).max(1);
    let samples = knob("TMC_BENCH_SAMPLES", 100);
    let steady = knob("TMC_BENCH_STEADY", 300);
    let status_samples = knob("TMC_BENCH_STATUS", 50);
    let sizes = burst_sizes();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let t0 = Instant::now();
        let mut b = setup::setup(workspaces).await;
        eprintln!("bench: set-up (kcp, 2 clusters, {workspaces} + 1 workspaces) in {:.0?}", t0.elapsed());
        let mut r = Results {
            machine: report::machine(),
            date: jiff::Timestamp::now().round(jiff::Unit::Second).unwrap().to_string(),
            ..Default::default()
        };
        r.add("rss_base_mb", proc_mb(b.manager_pid(), "VmHWM"));
        let mut restart = None;
        for rep in 0..repeat {
            eprintln!("bench: repetition {}/{repeat} at {:.0?}", rep + 1, t0.elapsed());
            let floor = b.one_at_a_time(Writer::Floor, &format!("floor{rep}"), samples).await;
            let sync = b.one_at_a_time(Writer::Tmc, &format!("lat{rep}"), samples).await;
            r.add("sync_floor_p50_ms", percentile(&floor, 0.5));
            r.add("sync_floor_p99_ms", percentile(&floor, 0.99));
            r.add("sync_p50_ms", percentile(&sync, 0.5));
            r.add("sync_p99_ms", percentile(&sync, 0.99));
            eprintln!(
                "bench:   one at a time: p50 {:.1} ms (floor {:.1} ms)",
                percentile(&sync, 0.5),
                percentile(&floor, 0.5)
            );
            for (route, label) in [(b.spread(0), "one"), (b.both(), "two")] {
                let floor = b.steady(Writer::Floor, &route, &format!("sfloor{label}{rep}"), steady, 20).await;
                let sync = b.steady(Writer::Tmc, &route, &format!("steady{label}{rep}"), steady, 20).await;
                r.add_extra(&format!("steady_{label}_p50_ms"), percentile(&sync, 0.5));
                r.add_extra(&format!("steady_{label}_p99_ms"), percentile(&sync, 0.99));
                r.add_extra(&format!("steady_{label}_floor_p50_ms"), percentile(&floor, 0.5));
                r.add_extra(&format!("steady_{label}_floor_p99_ms"), percentile(&floor, 0.99));
                if label == "two" {
                    r.add("steady_p99_ms", percentile(&sync, 0.99));
                    r.add("steady_floor_p99_ms", percentile(&floor, 0.99));
                }
                eprintln!(
                    "bench:   steady ({label} cluster(s)): p99 {:.1} ms (floor {:.1} ms)",
                    percentile(&sync, 0.99),
                    percentile(&floor, 0.99)
                );
            }
            let (status, status_floor, status_vw) = b.status_latency(&format!("status{rep}"), status_samples).await;
            r.add("status_p50_ms", percentile(&status, 0.5));
            r.add("status_vw_floor_p50_ms", percentile(&status_vw, 0.5));
            r.add_extra("status_p99_ms", percentile(&status, 0.99));
            r.add_extra("status_floor_p50_ms", percentile(&status_floor, 0.5));
            eprintln!(
                "bench:   status: p50 {:.1} ms (virtual-workspace floor {:.1} ms)",
                percentile(&status, 0.5),
                percentile(&status_vw, 0.5)
            );
            for (k, &count) in sizes.iter().enumerate() {
                let floor = b.burst(Writer::Floor, &format!("fburst{rep}x{k}"), count).await;
                let sync = b.burst(Writer::Tmc, &format!("burst{rep}x{k}"), count).await;
                r.add_extra(&format!("burst_{count}_objects_per_s"), sync);
                r.add_extra(&format!("burst_{count}_floor_objects_per_s"), floor);
                if k + 1 == sizes.len() {
                    r.add("burst_objects_per_s", sync);
                    r.add("burst_floor_objects_per_s", floor);
                }
                eprintln!("bench:   burst of {count}: {sync:.0}/s (floor {floor:.0}/s)");
            }
            if restart.is_none() {
                r.add("rss_hwm_mb_10k", proc_mb(b.manager_pid(), "VmHWM"));
                let done = b.restart().await;
                eprintln!(
                    "bench:   restart with {} synced objects: ready {:.1} s, settled {:.1} s, {} writes",
                    done.synced,
                    done.ready_s,
                    done.settled_s,
                    done.writes()
                );
                r.add("restart_ready_s", done.ready_s);
                r.add("restart_settled_s", done.settled_s);
                r.add("restart_writes", done.writes() as f64);
                restart = Some(done);
            }
        }
        r.add("unplaced_kb_per_object", b.unplaced_kb_per_object(5000).await);
        let settings = output::Settings { workspaces, repeat, samples, steady, status_samples, sizes };
        output::write(&r, restart.as_ref(), &settings);
        drop(b);
    });
}
