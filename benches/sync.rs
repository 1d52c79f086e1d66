//! `make bench`: sync latency, status latency, burst throughput and manager memory against a real
//! kcp and two real clusters, each with the floor measured in the same run — the same writes done
//! by a bare client — so that the ratios hold on a noisy machine.
//!
//! Objects: ConfigMaps (latency, burst, memory) and Deployments (status latency), spread over
//! `TMC_BENCH_WORKSPACES` (default 10) workspaces, each with one push-mode SyncTarget on one of
//! the two clusters. `TMC_BENCH_OBJECTS` (default `1000,10000`) sets the burst sizes.

// The e2e suite's environment, shared; the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/e2e/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/e2e/env.rs"]
mod env;
// The peer, kcp-dev/api-syncagent, on the same kind of servers (`TMC_BENCH_ONLY=peer` runs it alone).
#[path = "peer/mod.rs"]
mod peer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kcp_tmc::kcp::{ClusterClients, workspace};
use kcp_tmc::syncer::naming::target_key;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// Deployments in the status-latency measurement (each waits for its pods, about a second).
const STATUS_SAMPLES: usize = 50;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

struct Bench {
    /// Kept alive for the whole run (dropping it stops kcp).
    _kcp: env::Kcp,
    clusters: Vec<cluster::Cluster>,
    clients: ClusterClients,
    downstream: Vec<kube::Client>,
    workspaces: Vec<String>,
    /// The logical cluster of each workspace, and a client of the export's virtual workspace:
    /// the path the syncer must write through.
    logical: Vec<kcp_tmc::kcp::LogicalClusterName>,
    virtual_workspace: ClusterClients,
    manager_pid: u32,
    _manager: env::Tmc,
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"bench": "yes"}}, "data": {"payload": "x".repeat(200)}}),
    )
    .unwrap()
}

/// Records the first time each ConfigMap name appears in any downstream namespace of `client`.
fn watch_arrivals(client: kube::Client, arrivals: Arrivals) {
    tokio::spawn(async move {
        let api: Api<ConfigMap> = Api::all(client);
        let cfg = watcher::Config::default().labels("bench=yes");
        let mut events = watcher(api, cfg).default_backoff().applied_objects().boxed();
        while let Some(Ok(obj)) = events.next().await {
            let name = obj.metadata.name.unwrap_or_default();
            arrivals.lock().unwrap().entry(name).or_insert_with(Instant::now);
        }
    });
}

/// The unbound workspace beside bench workspace `ws` that holds the floor's ConfigMaps.
fn floor_workspace(ws: &str) -> String {
    format!("{ws}-floor")
}

async fn setup(workspaces: usize) -> Bench {
    let clusters: Vec<_> = ["bench-1", "bench-2"]
        .into_iter()
        .map(|n| tokio::task::spawn_blocking(move || cluster::Cluster::start(n)))
        .collect();
    let kcp = env::Kcp::start().await;
    let mut started = vec![];
    for c in clusters {
        started.push(c.await.unwrap().unwrap());
    }
    let kubeconfig = kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &kubeconfig, "--workspace", "root:tmc", "--create-workspace"]);
    assert_eq!(code, 0, "{out}{err}");
    let manager = env::Tmc::manager(
        &kubeconfig,
        "root:tmc",
        // The bench's clusters run on this machine.
        &["--cluster-address-allow", "127.0.0.1/32"],
        kcp.dir.path().join("manager.log"),
    )
    .process;
    let manager_pid = manager.pid();
    let clients = kcp.clients().await;
    let binding =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples/apibinding.yaml")).unwrap();
    let mut names = vec![];
    let mut logical = vec![];
    for i in 0..workspaces {
        let ws = format!("root:bench-{i}");
        let cluster = workspace::ensure(&clients, &ws.parse().unwrap(), Duration::from_secs(60)).await.unwrap();
        kcp.kubectl(&ws, &["apply", "-f", "-"], Some(&binding)).unwrap();
        env::eventually("binding", Duration::from_secs(60), || async {
            Ok(kcp.kubectl(&ws, &["get", "synctargets"], None).ok().map(|_| ()))
        })
        .await
        .unwrap();
        let c = &started[i % 2];
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c", "namespace": "default"}, "stringData": {"kubeconfig": c.kubeconfig_text()}});
        kcp.kubectl(&ws, &["apply", "-f", "-"], Some(&secret.to_string())).unwrap();
        let st = "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: c}\nspec: {kubeconfigSecretRef: {namespace: default, name: c}}\n";
        kcp.kubectl(&ws, &["apply", "-f", "-"], Some(st)).unwrap();
        let key = target_key(&cluster, "c");
        let ns = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: load, labels: {{state.tmc.kcp.io/{key}: Sync}}}}\n"
        );
        kcp.kubectl(&ws, &["apply", "-f", "-"], Some(&ns)).unwrap();
        kcp.kubectl(&ws, &["create", "namespace", "floor"], None).unwrap();
        let floor_ws = floor_workspace(&ws);
        workspace::ensure(&clients, &floor_ws.parse().unwrap(), Duration::from_secs(60)).await.unwrap();
        kcp.kubectl(&floor_ws, &["create", "namespace", "floor"], None).unwrap();
        kcp.kubectl(&ws, &["wait", "--for=condition=Ready", "synctarget/c", "--timeout=120s"], None).unwrap();
        names.push(ws);
        logical.push(cluster);
    }
    let mut downstream = vec![];
    for c in &started {
        let client = c.client().await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "floor"}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        downstream.push(client);
    }
    let slices: Api<kube::api::DynamicObject> =
        Api::all_with(clients.path(&"root:tmc".parse().unwrap()), &kcp_tmc::kcp::endpoints::endpoint_slice_resource());
    let slice = slices.get("tmc.kcp.io").await.unwrap();
    let urls = kcp_tmc::kcp::endpoints::endpoint_urls(&serde_json::to_value(slice).unwrap());
    let url = urls.iter().next().expect("the export has a virtual-workspace URL");
    let virtual_workspace = ClusterClients::new(&kcp.config().await, url).unwrap();
    Bench {
        _kcp: kcp,
        clusters: started,
        clients,
        downstream,
        workspaces: names,
        logical,
        virtual_workspace,
        manager_pid,
        _manager: manager,
    }
}

impl Bench {
    /// ConfigMaps in namespace `ns` of workspace `i`; the floor's ConfigMaps live in a workspace
    /// of their own that does not bind the export, so the manager neither caches nor sees them
    /// (the floor must not load the system it is the baseline for).
    fn kcp_api(&self, i: usize, ns: &str) -> Api<ConfigMap> {
        let ws = if ns == "floor" { floor_workspace(&self.workspaces[i]) } else { self.workspaces[i].clone() };
        Api::namespaced(self.clients.path(&ws.parse().unwrap()), ns)
    }

    /// The bare-client floor: the kcp write, then the cluster write, one object at a time, timed
    /// like the syncer: until the cluster's watch delivers the object.
    async fn floor_latency(&self, samples: usize, arrivals: &Arrivals) -> Vec<f64> {
        let mut out = vec![];
        for n in 0..samples {
            let i = n % self.workspaces.len();
            let name = format!("floor-{n}");
            let t = Instant::now();
            self.kcp_api(i, "floor").create(&PostParams::default(), &cm(&name)).await.unwrap();
            Api::<ConfigMap>::namespaced(self.downstream[i % 2].clone(), "floor")
                .create(&PostParams::default(), &cm(&name))
                .await
                .unwrap();
            let arrived = env::eventually(&name, Duration::from_secs(60), || async {
                Ok(arrivals.lock().unwrap().get(&name).copied())
            })
            .await
            .unwrap();
            out.push(arrived.duration_since(t).as_secs_f64() * 1000.0);
        }
        out
    }

    /// kcp write to object in the cluster, one object at a time (no queueing).
    async fn sync_latency(&self, samples: usize, arrivals: &Arrivals) -> Vec<f64> {
        let mut out = vec![];
        for n in 0..samples {
            let i = n % self.workspaces.len();
            let name = format!("lat-{n}");
            let t = Instant::now();
            self.kcp_api(i, "load").create(&PostParams::default(), &cm(&name)).await.unwrap();
            let arrived = env::eventually(&name, Duration::from_secs(60), || async {
                Ok(arrivals.lock().unwrap().get(&name).copied())
            })
            .await
            .unwrap();
            out.push(arrived.duration_since(t).as_secs_f64() * 1000.0);
        }
        out
    }

    /// `count` objects written with 32 in flight; seconds until all are in kcp (floor: and in
    /// the cluster, by the bare client) or until all arrived downstream (sync).
    async fn burst(&self, prefix: &str, count: usize, floor: bool, arrivals: &Arrivals) -> f64 {
        let t = Instant::now();
        stream::iter(0..count)
            .map(|n| {
                let i = n % self.workspaces.len();
                let name = format!("{prefix}-{n}");
                async move {
                    let ns = if floor { "floor" } else { "load" };
                    self.kcp_api(i, ns).create(&PostParams::default(), &cm(&name)).await?;
                    if floor {
                        Api::<ConfigMap>::namespaced(self.downstream[i % 2].clone(), "floor")
                            .create(&PostParams::default(), &cm(&name))
                            .await?;
                    }
                    Ok::<_, kube::Error>(())
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        if !floor {
            let want = |a: &HashMap<String, Instant>| (0..count).all(|n| a.contains_key(&format!("{prefix}-{n}")));
            env::eventually("burst arrival", Duration::from_secs(900), || async {
                Ok(want(&arrivals.lock().unwrap()).then_some(()))
            })
            .await
            .unwrap();
        }
        t.elapsed().as_secs_f64()
    }

    /// Downstream Deployment available → upstream status shows it, per Deployment, both moments
    /// taken from watch events. The floor is the same upstream status write by a bare client,
    /// timed the same way: until kcp's watch delivers it.
    async fn status_latency(&self, samples: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (down_seen, up_seen, floor_seen): (Arrivals, Arrivals, Arrivals) = Default::default();
        let available = |d: &Deployment| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1);
        let record = move |api: Api<Deployment>, seen: Arrivals| {
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
                while let Some(Ok(d)) = events.next().await {
                    if available(&d) {
                        seen.lock().unwrap().entry(d.metadata.name.unwrap_or_default()).or_insert_with(Instant::now);
                    }
                }
            })
        };
        let mut tasks = vec![];
        for c in &self.downstream {
            tasks.push(record(Api::all(c.clone()), down_seen.clone()));
        }
        for ws in &self.workspaces {
            tasks.push(record(Api::namespaced(self.clients.path(&ws.parse().unwrap()), "load"), up_seen.clone()));
            tasks.push(record(Api::namespaced(self.clients.path(&ws.parse().unwrap()), "floor"), floor_seen.clone()));
        }
        let (mut lat, mut floor, mut floor_vw) = (vec![], vec![], vec![]);
        for n in 0..samples {
            let i = n % self.workspaces.len();
            let name = format!("status-{n}");
            let up: Api<Deployment> = Api::namespaced(self.clients.path(&self.workspaces[i].parse().unwrap()), "load");
            let d: Deployment = serde_json::from_value(json!({
                "metadata": {"name": name}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
            .unwrap();
            up.create(&PostParams::default(), &d).await.unwrap();
            let both = || {
                let (d, u) =
                    (down_seen.lock().unwrap().get(&name).copied(), up_seen.lock().unwrap().get(&name).copied());
                d.zip(u)
            };
            let (down_at, up_at) =
                env::eventually("available on both sides", Duration::from_secs(60), || async { Ok(both()) })
                    .await
                    .unwrap();
            lat.push(up_at.saturating_duration_since(down_at).as_secs_f64() * 1000.0);
            // The floor: the status the syncer wrote, written by a bare client onto a copy of the
            // Deployment in the unassigned namespace `floor`.
            let floor_api: Api<Deployment> =
                Api::namespaced(self.clients.path(&self.workspaces[i].parse().unwrap()), "floor");
            let status = json!({ "status": up.get_status(&name).await.unwrap().status });
            floor.push(
                floor_status_write(&floor_api, &floor_api, &d, &format!("floor-{name}"), &status, &floor_seen).await,
            );
            // The same write through the export's virtual workspace, as the syncer makes it.
            let vw_api: Api<Deployment> = Api::namespaced(self.virtual_workspace.cluster(&self.logical[i]), "floor");
            let vw_name = format!("floor-vw-{name}");
            floor_vw.push(floor_status_write(&floor_api, &vw_api, &d, &vw_name, &status, &floor_seen).await);
        }
        tasks.iter().for_each(|t| t.abort());
        (lat, floor, floor_vw)
    }
}

/// Creates a copy of `template` named `name` through `create`, then times writing `status` to it
/// through `write` until the floor watch (`seen`) delivers it; milliseconds.
async fn floor_status_write(
    create: &Api<Deployment>,
    write: &Api<Deployment>,
    template: &Deployment,
    name: &str,
    status: &serde_json::Value,
    seen: &Arrivals,
) -> f64 {
    let mut copy = template.clone();
    copy.metadata.name = Some(name.to_string());
    create.create(&PostParams::default(), &copy).await.unwrap();
    let t = Instant::now();
    write.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    let at = env::eventually("the floor's status in kcp", Duration::from_secs(60), || async {
        Ok(seen.lock().unwrap().get(name).copied())
    })
    .await
    .unwrap();
    at.saturating_duration_since(t).as_secs_f64() * 1000.0
}

fn main() {
    if std::env::var("TMC_BENCH_ONLY").as_deref() == Ok("peer") {
        return peer::run_alone();
    }
    let sizes: Vec<usize> = std::env::var("TMC_BENCH_OBJECTS")
        .unwrap_or("1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let workspaces: usize = std::env::var("TMC_BENCH_WORKSPACES").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let t0 = Instant::now();
        let b = setup(workspaces).await;
        eprintln!("set-up: kcp, 2 clusters, {workspaces} workspaces in {:?}", t0.elapsed());
        let arrivals: Arrivals = Default::default();
        for c in &b.downstream {
            watch_arrivals(c.clone(), arrivals.clone());
        }
        let base_rss = rss_mb(b.manager_pid);
        let samples = 100;
        let mut floor = b.floor_latency(samples, &arrivals).await;
        let mut sync = b.sync_latency(samples, &arrivals).await;
        let (mut status, mut status_floor, mut status_floor_vw) = b.status_latency(STATUS_SAMPLES).await;
        let mut report = String::new();
        let line = |r: &mut String, s: String| {
            println!("{s}");
            r.push_str(&s);
            r.push('\n');
        };
        line(&mut report, "| measurement | p50 | p99 | floor p50 | floor p99 | ratio p50 | ratio p99 |\n|---|---|---|---|---|---|---|".into());
        let (fp50, fp99, sp50, sp99) = (percentile(&mut floor, 0.5), percentile(&mut floor, 0.99), percentile(&mut sync, 0.5), percentile(&mut sync, 0.99));
        line(&mut report, format!("| kcp write → object in cluster ({samples} ConfigMaps, one at a time) | {sp50:.1} ms | {sp99:.1} ms | {fp50:.1} ms | {fp99:.1} ms | {:.2}× | {:.2}× |", sp50 / fp50, sp99 / fp99));
        let (tp50, tp99, tf50, tf99) = (percentile(&mut status, 0.5), percentile(&mut status, 0.99), percentile(&mut status_floor, 0.5), percentile(&mut status_floor, 0.99));
        line(&mut report, format!("| cluster status → kcp status ({STATUS_SAMPLES} Deployments), floor written to the workspace | {tp50:.1} ms | {tp99:.1} ms | {tf50:.1} ms | {tf99:.1} ms | {:.2}× | {:.2}× |", tp50 / tf50, tp99 / tf99));
        let (vf50, vf99) = (percentile(&mut status_floor_vw, 0.5), percentile(&mut status_floor_vw, 0.99));
        line(&mut report, format!("| cluster status → kcp status ({STATUS_SAMPLES} Deployments), floor written through the virtual workspace | {tp50:.1} ms | {tp99:.1} ms | {vf50:.1} ms | {vf99:.1} ms | {:.2}× | {:.2}× |", tp50 / vf50, tp99 / vf99));
        line(&mut report, String::new());
        line(&mut report, "| burst | sync: all in cluster | floor: bare client | objects/s sync | objects/s floor | manager RSS | budget 40 MB + 10 KB/object |\n|---|---|---|---|---|---|---|".into());
        let mut synced = samples;
        for (k, &count) in sizes.iter().enumerate() {
            let fs = b.burst(&format!("floorburst{k}"), count, true, &arrivals).await;
            let ss = b.burst(&format!("burst{k}"), count, false, &arrivals).await;
            synced += count;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let rss = rss_mb(b.manager_pid);
            let budget = 40.0 + synced as f64 * 10.0 / 1024.0;
            line(&mut report, format!("| {count} ConfigMaps ({synced} synced in all) | {ss:.1} s | {fs:.1} s | {:.0} | {:.0} | {rss:.1} MB (base {base_rss:.1} MB) | {budget:.1} MB |", count as f64 / ss, count as f64 / fs));
        }
        let machine = format!(
            "{} cores, {:.1} GiB, {}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse::<f64>().ok()).unwrap_or(0.0) / 1048576.0,
            std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name"))?.split(':').nth(1).map(|s| s.trim().to_string())).unwrap_or_default(),
        );
        let out = format!(
            "# Benchmark results\n\nGenerated by `make bench` on {} (machine: {machine}; kcp v0.32.3, kube-apiserver v1.34.3, release build; {workspaces} workspaces, one push-mode SyncTarget each, alternating between two clusters).\nThe floor is measured in the same run: the same kcp write plus cluster write done by a bare client, timed the same way (until a watch delivers the result); a ratio is the syncer's percentile over the floor's. The floor's ConfigMaps are written to workspaces that do not bind the export, so the manager does not see them; its Deployments (status floor) need the binding and sit in an unassigned namespace. The status floor is given twice: written to the workspace directly, and through the APIExport's virtual workspace, the only path the syncer has. With {STATUS_SAMPLES} status samples, p99 is close to the slowest sample: read the p50 ratio beside it.\n\n{report}",
            jiff::Timestamp::now().round(jiff::Unit::Second).unwrap()
        );
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/benchmarks.md"), out).unwrap();
        println!("wrote docs/benchmarks.md");
        drop(b.clusters);
    });
}
