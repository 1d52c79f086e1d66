//! The peer: kcp-dev/api-syncagent v0.7.0 (`tests/servers.sh api-syncagent`) publishing a CRD of
//! one real cluster into kcp, measured the way `sync.rs` measures kcp-tmc's syncer: kcp write →
//! object in the cluster, one object at a time, timed until the cluster's watch delivers it; a
//! burst's objects/s until every object arrived by watch; the agent's peak RSS (VmHWM).
//!
//! The agent runs with its defaults: v0.7.0 has no flag for its requeue interval (5 s), its sync
//! workers (4) or the rate limit of its kcp clients, which keep client-go's default of 5 QPS with
//! a burst of 10 per resource and workspace. A new object costs three requests on that client
//! before its copy is written (an uncached GET and the finalizer PATCH, then, after a second trip
//! through the work queue, another GET) and one more after. So one workspace gets about 1.7
//! objects/s in a burst and 800 ms per object back to back; hence a paced latency run (objects
//! 3 s apart, which the limit does not touch) and objects spread over tenant workspaces like
//! `sync.rs` spreads its own.
//!
//! `TMC_BENCH_ONLY=peer cargo bench --bench sync` runs only this, against its own kcp and one
//! cluster: `TMC_PEER_SAMPLES` (default 100) creates back to back, `TMC_PEER_PACED` (default 20)
//! paced, then one burst per size in `TMC_PEER_BURSTS` (default `1000`), objects spread over
//! `TMC_PEER_TENANTS` (default `TMC_BENCH_WORKSPACES`, else 10) tenant workspaces.

mod setup;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::{cluster, env};

/// The API group of the Widget CRD, in the service cluster and (unprojected) in kcp.
pub const GROUP: &str = "bench.example.com";
/// The APIExport the agent serves, and its endpoint slice (kcp names it like the export).
pub const EXPORT: &str = "bench.example.com";
/// The tenant's namespace in kcp that the Widgets are written to.
pub const TENANT_NAMESPACE: &str = "peer";
/// The annotation api-syncagent puts on each copy, naming the kcp object it came from.
const REMOTE_NAME: &str = "syncagent.kcp.io/remote-object-name";
/// The pause between objects in the paced latency run: long enough for a 5 QPS, burst 10 client
/// to refill, so that run shows the agent's latency without its client-side rate limit.
pub const PACE: Duration = Duration::from_secs(3);
/// How long one object may take to arrive before the bench gives up; a burst gets this plus
/// [`BURST_TIMEOUT_PER_OBJECT`] per object (the agent syncs about 1.7 objects/s per workspace).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(600);
const BURST_TIMEOUT_PER_OBJECT: Duration = Duration::from_secs(2);

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Widget"), "widgets")
}

fn widget(name: &str) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Widget",
        "metadata": {"name": name, "labels": {"bench": "yes"}}, "spec": {"size": 1, "payload": "x".repeat(200)}}))
    .unwrap()
}

/// api-syncagent publishing Widgets from one cluster into a tenant workspace of the bench's kcp.
pub struct Peer {
    agent: setup::Agent,
    /// Each tenant workspace's Widgets in [`TENANT_NAMESPACE`].
    tenants: Vec<Api<DynamicObject>>,
    arrivals: Arrivals,
    watch: tokio::task::JoinHandle<()>,
    /// Measurements so far, to keep object names apart.
    runs: AtomicUsize,
    /// Agent started → the first Widget (written as soon as the tenant served the API) arrived.
    pub startup: Duration,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// Polls `check` every `every` until it returns a value, for at most `timeout`; a progress line
/// with what `check` said last every 5 s.
async fn waiting<T>(what: &str, every: Duration, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let (start, mut said) = (Instant::now(), Instant::now());
    loop {
        let progress = match check() {
            Ok(v) => return v,
            Err(progress) => progress,
        };
        assert!(start.elapsed() < timeout, "peer: timed out waiting for {what}: {progress}");
        if said.elapsed() >= Duration::from_secs(5) {
            eprintln!("peer: waiting for {what}: {progress} ({:.0} s)", start.elapsed().as_secs_f64());
            said = Instant::now();
        }
        tokio::time::sleep(every).await;
    }
}

impl Peer {
    /// Sets up the service cluster, the provider workspace and `tenants` tenant workspaces and
    /// starts the agent; returns once a first Widget of each tenant went through (progress on
    /// stderr meanwhile). Objects are spread over the tenants like `sync.rs` spreads its own.
    pub async fn start(kcp: &env::Kcp, cluster: &cluster::Cluster, tenants: usize) -> Peer {
        let bin = setup::binary();
        setup::service_cluster(cluster, &bin);
        setup::kcp_side(kcp, tenants).await;
        let arrivals = Arrivals::default();
        let watch = watch_arrivals(cluster.client().await, arrivals.clone());
        let started = Instant::now();
        let agent = setup::start_agent(kcp, cluster, &bin, kcp.dir.path());
        eprintln!("peer: api-syncagent started (pid {}, log {})", agent.pid(), agent.log.display());
        let clients = kcp.clients().await;
        let tenants: Vec<Api<DynamicObject>> = (0..tenants)
            .map(|i| {
                Api::namespaced_with(
                    clients.path(&setup::tenant(i).parse().unwrap()),
                    TENANT_NAMESPACE,
                    &widget_resource(),
                )
            })
            .collect();
        let mut peer = Peer { agent, tenants, arrivals, watch, runs: AtomicUsize::new(0), startup: Duration::ZERO };
        // A tenant serves Widgets once the agent has put the schema into the export.
        for i in 0..peer.tenants.len() {
            let name = format!("first-{i}");
            while let Err(e) = peer.create(i, &name).await {
                assert!(started.elapsed() < ARRIVAL_TIMEOUT, "peer: {} never served widgets: {e}", setup::tenant(i));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        eprintln!("peer: widgets served in the tenants after {:.1} s", started.elapsed().as_secs_f64());
        for i in 0..peer.tenants.len() {
            peer.arrival(&format!("first-{i}"), Duration::from_millis(100)).await;
        }
        peer.startup = started.elapsed();
        peer
    }

    /// Stops the agent (SIGSTOP) while the floor and kcp-tmc are timed: holding ~14,000 objects,
    /// its background work kept the shared cluster's API server busy, which slowed whatever was
    /// timed after its first burst (see docs/performance.md).
    pub fn pause(&self) {
        self.agent.signal("STOP");
    }

    /// Lets the agent run again and waits, untimed, until it has synced one new Widget (so the
    /// first timed object does not pay for its catching up).
    pub async fn resume(&self) {
        self.agent.signal("CONT");
        let name = format!("resume-{}", self.runs.fetch_add(1, Ordering::Relaxed));
        self.create(0, &name).await.expect("write a Widget after resuming the agent");
        self.arrival(&name, Duration::from_millis(100)).await;
    }

    /// Writes Widget `name` to tenant `i` (modulo the number of tenants).
    async fn create(&self, i: usize, name: &str) -> Result<(), kube::Error> {
        let tenant = &self.tenants[i % self.tenants.len()];
        tenant.create(&PostParams::default(), &widget(name)).await.map(|_| ())
    }

    async fn arrival(&self, name: &str, every: Duration) -> Instant {
        let arrived = || self.arrivals.lock().unwrap().get(name).copied().ok_or_else(|| "not yet".to_string());
        waiting(&format!("{name} in the cluster"), every, ARRIVAL_TIMEOUT, arrived).await
    }

    /// kcp write → object in the cluster, `samples` objects one at a time, `pause` between one
    /// object's arrival and the next write; milliseconds.
    pub async fn latency(&self, samples: usize, pause: Duration) -> Vec<f64> {
        let prefix = format!("lat{}-", self.runs.fetch_add(1, Ordering::Relaxed));
        let (mut out, mut said) = (vec![], Instant::now());
        for n in 0..samples {
            tokio::time::sleep(pause).await;
            let name = format!("{prefix}{n}");
            let t = Instant::now();
            self.create(n, &name).await.unwrap();
            let at = self.arrival(&name, Duration::from_millis(5)).await;
            out.push(at.duration_since(t).as_secs_f64() * 1000.0);
            if said.elapsed() >= Duration::from_secs(5) {
                eprintln!("peer: latency {}/{samples}, last {:.0} ms", n + 1, out[n]);
                said = Instant::now();
            }
        }
        out
    }

    /// `count` objects written with 32 in flight; seconds from the first write until the last
    /// object arrived in the cluster.
    pub async fn burst(&self, count: usize) -> f64 {
        let prefix = format!("burst{}-", self.runs.fetch_add(1, Ordering::Relaxed));
        let t = Instant::now();
        stream::iter(0..count)
            .map(|n| {
                let name = format!("{prefix}{n}");
                async move { self.create(n, &name).await }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        eprintln!("peer: burst of {count} written to kcp in {:.1} s", t.elapsed().as_secs_f64());
        let timeout = ARRIVAL_TIMEOUT + BURST_TIMEOUT_PER_OBJECT * count as u32;
        let last = waiting(&format!("{count} burst objects"), Duration::from_millis(100), timeout, || {
            let arrivals = self.arrivals.lock().unwrap();
            let seen: Vec<_> = arrivals.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| *v).collect();
            match seen.iter().max() {
                Some(last) if seen.len() == count => Ok(*last),
                _ => Err(format!("{} of them in the cluster", seen.len())),
            }
        })
        .await;
        last.duration_since(t).as_secs_f64()
    }

    /// `count` objects started at `per_second` (spread over the tenants), each timed from the
    /// start of its kcp write to its arrival in the cluster; milliseconds.
    pub async fn steady(&self, count: usize, per_second: u32) -> Vec<f64> {
        let prefix = format!("steady{}-", self.runs.fetch_add(1, Ordering::Relaxed));
        let started = crate::measure::paced(count, per_second, |n| {
            let name = format!("{prefix}{n}");
            async move { self.create(n, &name).await }
        })
        .await;
        let mut out = vec![];
        for (n, t) in started.into_iter().enumerate() {
            let at = self.arrival(&format!("{prefix}{n}"), Duration::from_millis(20)).await;
            out.push(at.duration_since(t).as_secs_f64() * 1000.0);
        }
        out
    }

    /// The agent's peak resident memory so far (VmHWM), MB.
    pub fn peak_rss_mb(&self) -> f64 {
        crate::report::proc_mb(self.agent.pid(), "VmHWM")
    }

    /// The lines of the agent's own Prometheus metrics that start with `prefix`.
    pub fn metrics(&self, prefix: &str) -> Vec<String> {
        let mut body = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect(&self.agent.metrics) {
            let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.agent.metrics);
            let _ = s.read_to_string(&mut body);
        }
        body.lines().filter(|l| l.starts_with(prefix)).map(str::to_string).collect()
    }
}

/// Records the first time a copy of each kcp object (by the name the agent annotates it with)
/// appears anywhere in the cluster.
fn watch_arrivals(client: kube::Client, arrivals: Arrivals) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<DynamicObject> = Api::all_with(client, &widget_resource());
        let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(Ok(obj)) = events.next().await {
            if let Some(name) = obj.metadata.annotations.as_ref().and_then(|a| a.get(REMOTE_NAME)) {
                arrivals.lock().unwrap().entry(name.clone()).or_insert_with(Instant::now);
            }
        }
    })
}

/// `TMC_BENCH_ONLY=peer`: the peer alone against its own kcp and one cluster; prints a table.
pub fn run_alone() {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or(default.into());
    let samples: usize = var("TMC_PEER_SAMPLES", "100").parse().unwrap();
    let paced: usize = var("TMC_PEER_PACED", "20").parse().unwrap();
    let tenants: usize = var("TMC_PEER_TENANTS", &var("TMC_BENCH_WORKSPACES", "10")).parse().unwrap();
    let bursts: Vec<usize> = var("TMC_PEER_BURSTS", "1000").split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let t0 = Instant::now();
        let cluster = tokio::task::spawn_blocking(|| cluster::Cluster::start("peer"));
        let kcp = env::Kcp::start().await;
        let cluster = cluster.await.unwrap().unwrap();
        let peer = Peer::start(&kcp, &cluster, tenants).await;
        let (setup, startup) = (t0.elapsed().as_secs_f64(), peer.startup.as_secs_f64());
        eprintln!("peer: set-up {setup:.1} s, agent start → first object {startup:.1} s");
        println!("| api-syncagent v0.7.0, defaults, {tenants} tenant workspace(s) | p50 | p99 | min | max |");
        println!("|---|---|---|---|---|");
        let runs = [(samples, Duration::ZERO, "back to back"), (paced, PACE, "3 s apart")];
        for (n, pause, how) in runs.into_iter().filter(|r| r.0 > 0) {
            let lat = peer.latency(n, pause).await;
            let [p50, p99, min, max] = [0.5, 0.99, 0.0, 1.0].map(|p| crate::report::percentile(&lat, p));
            println!(
                "| kcp write → object in cluster, {n} Widgets one at a time, {how} | {p50:.0} ms | {p99:.0} ms | {min:.0} ms | {max:.0} ms |"
            );
        }
        for &count in &bursts {
            let secs = peer.burst(count).await;
            println!("| burst of {count} Widgets, until all are in the cluster | {secs:.1} s | {:.2} objects/s | | |", count as f64 / secs);
        }
        println!("| agent peak RSS (VmHWM) | {:.1} MB | | | |", peer.peak_rss_mb());
        println!("\nThe agent's own metrics:");
        for prefix in ["controller_runtime_reconcile_total{controller=\"syncagent-sync\"", "rest_client_requests_total"] {
            peer.metrics(prefix).iter().for_each(|l| println!("    {l}"));
        }
        drop(peer);
        drop(cluster);
    });
}
