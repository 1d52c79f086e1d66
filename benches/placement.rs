//! `cargo bench --bench placement`: the Placement decision (`schedule::schedule`) in process, no
//! servers: 1000 SyncTargets × 1000 Placements, each Placement decided once from scratch and once
//! with a current choice (the sticky path a settled system takes on every re-evaluation).
//! Prints p50/p99 latency per decision and decisions per second.
//!
//! Targets: 10 regions, 50 cells, 5% not Ready, 2% cordoned. Placements: a quarter select every
//! target, the rest one region (about 100 candidates); `numberOfTargets` cycles through unset,
//! 1, 2 and 3.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use kcp_tmc::reconciler::placement::schedule::{Input, TargetView, schedule};

const TARGETS: usize = 1000;
const PLACEMENTS: usize = 1000;

fn targets(now: jiff::Timestamp) -> Vec<TargetView> {
    (0..TARGETS)
        .map(|i| TargetView {
            name: format!("target-{i}"),
            labels: [("region".to_string(), format!("r{}", i % 10)), ("tier".to_string(), "gold".to_string())].into(),
            cells: vec![format!("cell-{}", i % 50)],
            ready: i % 20 != 7,
            ready_since: Some(now - jiff::SignedDuration::from_secs(600)),
            unschedulable: i % 50 == 3,
            evict_after: None,
            apis_available: true,
            allows: true,
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn run(
    label: &str,
    targets: &[TargetView],
    current: &[BTreeSet<String>],
    now: jiff::Timestamp,
) -> Vec<BTreeSet<String>> {
    let mut took = Vec::with_capacity(PLACEMENTS);
    let mut chosen = Vec::with_capacity(PLACEMENTS);
    let all = BTreeMap::new();
    let started = Instant::now();
    for i in 0..PLACEMENTS {
        let region: BTreeMap<String, String> = [("region".to_string(), format!("r{}", i % 10))].into();
        let labels = if i % 4 == 0 { &all } else { &region };
        let expressions: Vec<LabelSelectorRequirement> = vec![];
        let id = format!("ws-{}|placement-{i}", i % 100);
        let t = Instant::now();
        let d = schedule(&Input {
            placement: &id,
            match_labels: labels,
            match_expressions: &expressions,
            number_of_targets: [None, Some(1), Some(2), Some(3)][i % 4],
            targets,
            current: &current[i],
            now,
            failover_grace: Duration::from_secs(120),
            evictions_allowed: 10,
        });
        took.push(t.elapsed());
        chosen.push(std::hint::black_box(d).selected);
    }
    let total = started.elapsed();
    took.sort();
    println!(
        "| {label} | {:.1?} | {:.1?} | {:.0} |",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        PLACEMENTS as f64 / total.as_secs_f64()
    );
    chosen
}

fn main() {
    let now = jiff::Timestamp::now();
    let targets = targets(now);
    println!("{TARGETS} SyncTargets × {PLACEMENTS} Placements, one decision each (release build):\n");
    println!("| decision | p50 | p99 | decisions/s |");
    println!("|---|---|---|---|");
    let fresh = run("from scratch", &targets, &vec![BTreeSet::new(); PLACEMENTS], now);
    run("sticky (current choice kept)", &targets, &fresh, now);
}
