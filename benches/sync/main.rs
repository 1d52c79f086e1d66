//! `make bench`: sync latency (one at a time and at a steady rate), status latency, burst
//! throughput, a restart with every synced object, and memory, against a real kcp and two real
//! clusters. Every timed figure has its floor measured in the same run — the same writes done by
//! a bare client, timed the same way — and floor and kcp-tmc runs are interleaved within each
//! of `TMC_BENCH_REPEAT` (default 3) repetitions, so the ratios hold on a noisy machine. Figures
//! are medians over the repetitions with min and max.
//!
//! Knobs: `TMC_BENCH_WORKSPACES` (10), `TMC_BENCH_OBJECTS` (burst sizes, `1000,10000`; the last
//! is the headline), `TMC_BENCH_SAMPLES` (100 one-at-a-time objects), `TMC_BENCH_STEADY`
//! (300 objects at 20/s), `TMC_BENCH_STATUS` (50 Deployments), `TMC_BENCH_REPEAT` (3),
//! `TMC_BENCH_PEER_BURST` (1000), `TMC_BENCH_PEER_LARGE` (10000, the peer's large burst, once).
//! `TMC_WRAP="heaptrack -o DIR/tmc"` runs the manager under a profiler (see docs/performance.md),
//! in a process group of its own: signals and `/proc` figures go to `tmc` itself, and the
//! profiler's processes are stopped with it.
//! Output: `docs/benchmarks.md` and `docs/benchmarks.json` (or `TMC_BENCH_OUT`, a directory).

// The e2e suite's environment, shared; the bench uses only part of it.
mod audit;
#[allow(dead_code)]
#[path = "../../tests/e2e/cluster.rs"]
mod cluster;
mod cpu;
mod delivery;
#[allow(dead_code)]
#[path = "../../tests/e2e/env.rs"]
mod env;
mod measure;
mod output;
// The peer, kcp-dev/api-syncagent, on the same servers (`TMC_BENCH_ONLY=peer` runs it alone).
mod peer;
mod profile;
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
    if std::env::var("TMC_BENCH_ONLY").as_deref() == Ok("peer") {
        return peer::run_alone();
    }
    let workspaces = knob("TMC_BENCH_WORKSPACES", 10);
    let repeat = knob("TMC_BENCH_REPEAT", 3).max(1);
    let samples = knob("TMC_BENCH_SAMPLES", 100);
    let steady = knob("TMC_BENCH_STEADY", 300);
    let status_samples = knob("TMC_BENCH_STATUS", 50);
    let sizes = burst_sizes();
    let peer_burst = knob("TMC_BENCH_PEER_BURST", 1000);
    // The peer's 10,000-object burst takes ~11 minutes at its rate: once, in the first repetition.
    let peer_large = knob("TMC_BENCH_PEER_LARGE", 10_000);
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
        // First, while VmHWM is the base: later peaks (the bursts) would hide the growth.
        r.add("unplaced_kb_per_object", b.unplaced_kb_per_object(5000).await);
        // The peer publishes Widgets of the first cluster into tenant workspaces of its own; it
        // runs after kcp-tmc in every repetition (TMC_PEER_BIN=none leaves it out).
        let peer = match std::env::var("TMC_PEER_BIN").as_deref() {
            Ok("none") => None,
            _ => Some(peer::Peer::start(&b.kcp, &b.clusters[0], workspaces).await),
        };
        // Each tool is timed with the other idle: the agent is stopped except while it is timed
        // (the manager is never stopped: its SyncTargets would go stale and fail over).
        if let Some(p) = &peer {
            p.pause();
        }
        let mut peer_synced = 0;
        let mut restart = None;
        for rep in 0..repeat {
            eprintln!("bench: repetition {}/{repeat} at {:.0?}", rep + 1, t0.elapsed());
            let floor = b.one_at_a_time(Writer::Floor, &format!("floor{rep}"), samples).await;
            let before = b.manager_metrics().await;
            // CPU by program in every repetition: the later ones are slower for kcp-tmc, and
            // what else runs meanwhile (the peer's agent, kcp's own work) is the question.
            let cpu = cpu::snapshot();
            let sync = b.one_at_a_time(Writer::Tmc, &format!("lat{rep}"), samples).await;
            cpu::record(&mut r, "one", &cpu);
            profile::record(&mut r, "one", &before, &b.manager_metrics().await, samples);
            delivery::record(&mut r, "one", &b.split(&format!("lat{rep}"), samples, |n| b.spread(n).clusters));
            r.add("sync_floor_p50_ms", percentile(&floor, 0.5));
            r.add("sync_floor_p99_ms", percentile(&floor, 0.99));
            r.add("sync_p50_ms", percentile(&sync, 0.5));
            r.add("sync_p99_ms", percentile(&sync, 0.99));
            eprintln!(
                "bench:   one at a time: p50 {:.1} ms (floor {:.1} ms)",
                percentile(&sync, 0.5),
                percentile(&floor, 0.5)
            );
            if let Some(p) = &peer {
                p.resume().await;
                let lat = p.latency(samples, std::time::Duration::ZERO).await;
                r.add("peer_sync_p50_ms", percentile(&lat, 0.5));
                r.add("peer_sync_p99_ms", percentile(&lat, 0.99));
                peer_synced += samples;
                if rep == 0 {
                    // Its best: objects far enough apart that its client's 5 QPS limit never bites.
                    let paced = p.latency(20, peer::PACE).await;
                    r.add_extra("peer_paced_p50_ms", percentile(&paced, 0.5));
                    r.add_extra("peer_paced_p99_ms", percentile(&paced, 0.99));
                    peer_synced += 20;
                }
                eprintln!("bench:   peer one at a time: p50 {:.1} ms", percentile(&lat, 0.5));
                p.pause();
                // kcp-tmc on the same work: Widgets into workspaces placed on the peer's cluster.
                let ours = b.one_at_a_time_along(Writer::Tmc, &format!("wlat{rep}"), samples, |n| b.widgets(n)).await;
                r.add_extra("widget_sync_p50_ms", percentile(&ours, 0.5));
                r.add_extra("widget_sync_p99_ms", percentile(&ours, 0.99));
                eprintln!("bench:   kcp-tmc Widgets one at a time: p50 {:.1} ms", percentile(&ours, 0.5));
            }
            for (route, label) in [(b.spread(0), "one"), (b.both(), "two")] {
                let floor = b.steady(Writer::Floor, &route, &format!("sfloor{label}{rep}"), steady, 20).await;
                let before = b.manager_metrics().await;
                let cpu = cpu::snapshot();
                let sync = b.steady(Writer::Tmc, &route, &format!("steady{label}{rep}"), steady, 20).await;
                cpu::record(&mut r, &format!("steady_{label}"), &cpu);
                profile::record(&mut r, &format!("steady_{label}"), &before, &b.manager_metrics().await, steady);
                let split = b.split(&format!("steady{label}{rep}"), steady, |_| route.clusters.clone());
                delivery::record(&mut r, &format!("steady_{label}"), &split);
                r.add_extra(&format!("steady_{label}_p50_ms"), percentile(&sync, 0.5));
                r.add_extra(&format!("steady_{label}_p99_ms"), percentile(&sync, 0.99));
                r.add_extra(&format!("steady_{label}_floor_p50_ms"), percentile(&floor, 0.5));
                r.add_extra(&format!("steady_{label}_floor_p99_ms"), percentile(&floor, 0.99));
                // The JSON's steady figures are the one-cluster route: the same work as the peer's.
                if label == "one" {
                    r.add("steady_p99_ms", percentile(&sync, 0.99));
                    r.add("steady_floor_p99_ms", percentile(&floor, 0.99));
                }
                eprintln!(
                    "bench:   steady ({label} cluster(s)): p99 {:.1} ms (floor {:.1} ms)",
                    percentile(&sync, 0.99),
                    percentile(&floor, 0.99)
                );
            }
            if let Some(p) = &peer {
                p.resume().await;
                let lat = p.steady(steady, 20).await;
                r.add("peer_steady_p99_ms", percentile(&lat, 0.99));
                r.add_extra("peer_steady_p50_ms", percentile(&lat, 0.5));
                peer_synced += steady;
                eprintln!("bench:   peer steady: p99 {:.1} ms", percentile(&lat, 0.99));
                p.pause();
                let ours = b.steady(Writer::Tmc, &b.widgets(0), &format!("wsteady{rep}"), steady, 20).await;
                r.add_extra("widget_steady_p50_ms", percentile(&ours, 0.5));
                r.add_extra("widget_steady_p99_ms", percentile(&ours, 0.99));
                eprintln!("bench:   kcp-tmc Widgets steady: p99 {:.1} ms", percentile(&ours, 0.99));
            }
            let before = b.manager_metrics().await;
            let (status, status_floor, status_vw) = b.status_latency(&format!("status{rep}"), status_samples).await;
            profile::record_status(&mut r, &before, &b.manager_metrics().await, status_samples);
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
                // The largest burst is profiled: CPU seconds by program (see `cpu.rs`).
                let last = k + 1 == sizes.len();
                let cpu = cpu::snapshot();
                let floor = b.burst(Writer::Floor, &format!("fburst{rep}x{k}"), count).await;
                if last {
                    cpu::record(&mut r, "burst_floor", &cpu);
                }
                let cpu = cpu::snapshot();
                let sync = b.burst(Writer::Tmc, &format!("burst{rep}x{k}"), count).await;
                if last {
                    cpu::record(&mut r, "burst", &cpu);
                }
                r.add_extra(&format!("burst_{count}_objects_per_s"), sync);
                r.add_extra(&format!("burst_{count}_floor_objects_per_s"), floor);
                if last {
                    r.add("burst_objects_per_s", sync);
                    r.add("burst_floor_objects_per_s", floor);
                }
                eprintln!("bench:   burst of {count}: {sync:.0}/s (floor {floor:.0}/s)");
            }
            if let Some(p) = &peer {
                p.resume().await;
                let rate = peer_burst as f64 / p.burst(peer_burst).await;
                r.add("peer_burst_objects_per_s", rate);
                peer_synced += peer_burst;
                eprintln!("bench:   peer burst of {peer_burst}: {rate:.0}/s");
                p.pause();
                let ours = b.burst_along(Writer::Tmc, &format!("wburst{rep}"), peer_burst, |n| b.widgets(n)).await;
                r.add_extra("widget_burst_objects_per_s", ours);
                eprintln!("bench:   kcp-tmc Widgets burst of {peer_burst}: {ours:.0}/s");
                if rep == 0 && peer_large > 0 {
                    p.resume().await;
                    let rate = peer_large as f64 / p.burst(peer_large).await;
                    r.add_extra("peer_burst_large_objects_per_s", rate);
                    peer_synced += peer_large;
                    eprintln!("bench:   peer burst of {peer_large}: {rate:.0}/s");
                    p.pause();
                    let ours = b.burst_along(Writer::Tmc, "wburstlarge", peer_large, |n| b.widgets(n)).await;
                    r.add_extra("widget_burst_large_objects_per_s", ours);
                    eprintln!("bench:   kcp-tmc Widgets burst of {peer_large}: {ours:.0}/s");
                }
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
        if let Some(p) = &peer {
            // The key names 10k synced objects: filled only when the peer held that many.
            r.add_extra("peer_rss_mb", p.peak_rss_mb());
            if peer_synced >= 10_000 {
                r.add("peer_rss_mb_10k", p.peak_rss_mb());
            }
        }
        let peer_ran = peer.is_some();
        drop(peer);
        let settings = output::Settings {
            workspaces,
            repeat,
            samples,
            steady,
            status_samples,
            sizes,
            peer_burst,
            peer_large,
            peer_synced,
            peer_ran,
        };
        output::write(&r, restart.as_ref(), &settings);
        drop(b);
    });
}
