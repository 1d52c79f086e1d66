//! The chaos suite's servers: one kcp behind a proxy (its virtual-workspace URL is the proxy too,
//! so every byte the manager exchanges with kcp crosses it), two clusters each behind a proxy,
//! and handles to signal and restart kcp and each cluster's kube-apiserver. Plus the fixtures the
//! cases share: tenants, SyncTargets, managers, bursts of ConfigMaps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kcp_tmc::kcp::{ClusterClients, workspace};
use kcp_tmc::syncer::naming::{Locator, TargetRef, target_key};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::env::{self, Kcp, Tmc, eventually};
use crate::procs::{Proc, find_pid};
use crate::proxy::Proxy;

pub const PROVIDER: &str = "root:tmc";
pub const HEARTBEAT_THRESHOLD: Duration = Duration::from_secs(15);
pub const FAILOVER_GRACE: Duration = Duration::from_secs(10);
pub const WAIT: Duration = Duration::from_secs(120);

/// A static admin token for the managers. kcp's generated admin
/// token changes on every start, so a manager holding it would be locked out by a kcp restart,
/// which no real deployment (with stable credentials) suffers.
const ADMIN_TOKEN: &str = "tmc-chaos-admin-token";

pub struct World {
    pub kcp: Kcp,
    /// Holds the token file kcp reads (kept for restarts).
    _auth: tempfile::TempDir,
    pub kcp_proc: Mutex<Proc>,
    pub kcp_proxy: Proxy,
    /// admin.kubeconfig with the server replaced by the proxy's address: the managers' view.
    pub manager_kubeconfig: String,
    pub clusters: Vec<Cluster>,
    pub cluster_proxies: Vec<Proxy>,
    pub apiservers: Vec<Mutex<Proc>>,
}

fn server_of(kubeconfig: &str) -> Result<String, String> {
    kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).map(Into::into).ok_or("no server".into())
}

pub async fn setup() -> Result<World, String> {
    let clusters: Vec<_> = ["chaos-1", "chaos-2"]
        .into_iter()
        .map(|name| tokio::task::spawn_blocking(move || Cluster::start(name)))
        .collect();
    let port = env::free_port();
    let kcp_proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await;
    let auth = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tokens = auth.path().join("auth-tokens.csv");
    let lines = format!(
        "{},{},{}-uid\n{ADMIN_TOKEN},tmc-chaos-admin,tmc-chaos-admin-uid,\"system:kcp:admin,system:masters\"\n",
        env::MANAGER_USER_TOKEN,
        env::MANAGER_USER,
        env::MANAGER_USER
    );
    std::fs::write(&tokens, lines).map_err(|e| e.to_string())?;
    let extra = [
        format!("--shard-virtual-workspace-url={}", kcp_proxy.url()),
        // Wins over the e2e fixture's own --token-auth-file (the last flag counts).
        format!("--token-auth-file={}", tokens.display()),
    ];
    let kcp = Kcp::start_on(port, &extra).await;
    let root = kcp.dir.path().join(".kcp");
    let pid = find_pid(&format!("--root-directory={}", root.display())).ok_or("kcp pid not found")?;
    let kcp_proc = Proc::adopt("kcp", pid, kcp.log(), None)?;
    let manager_kc = kcp.dir.path().join("manager.kubeconfig");
    write_kubeconfig(&kcp, &manager_kc, Some(&kcp_proxy.url()))?;
    let mut started = vec![];
    for c in clusters {
        started.push(c.await.map_err(|e| e.to_string())??);
    }
    let (mut cluster_proxies, mut apiservers) = (vec![], vec![]);
    for (i, c) in started.iter().enumerate() {
        let server = server_of(&c.kubeconfig_text())?;
        let addr: SocketAddr = server.trim_start_matches("https://").parse().map_err(|e| format!("{server}: {e}"))?;
        cluster_proxies.push(Proxy::start(addr).await);
        let pids = c.dir.path().join("pids");
        let lines = std::fs::read_to_string(&pids).map_err(|e| e.to_string())?;
        // tests/cluster.sh starts etcd first, the kube-apiserver second.
        let pid = lines.lines().nth(1).and_then(|l| l.trim().parse().ok()).ok_or("no apiserver pid")?;
        let log = c.dir.path().join("kube-apiserver.log");
        apiservers.push(Mutex::new(Proc::adopt(&format!("kube-apiserver-{i}"), pid, log, Some(pids))?));
    }
    let kubeconfig = kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &kubeconfig, "--workspace", PROVIDER, "--create-workspace"]);
    if code != 0 {
        return Err(format!("tmc install failed ({code}): {out}{err}"));
    }
    Ok(World {
        kcp,
        _auth: auth,
        kcp_proc: Mutex::new(kcp_proc),
        kcp_proxy,
        manager_kubeconfig: manager_kc.display().to_string(),
        clusters: started,
        cluster_proxies,
        apiservers,
    })
}

/// kcp's admin.kubeconfig with the static admin token and the server's host replaced by the
/// proxy's `server` (JSON, which kubeconfig readers accept as YAML).
fn write_kubeconfig(kcp: &Kcp, path: &std::path::Path, server: Option<&str>) -> Result<(), String> {
    let mut kc = kube::config::Kubeconfig::read_from(&kcp.kubeconfig).map_err(|e| e.to_string())?;
    let direct = format!("https://127.0.0.1:{}", kcp.port);
    for c in kc.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
        if let (Some(s), Some(proxy)) = (c.server.as_mut(), server) {
            *s = s.replace(&direct, proxy);
        }
    }
    for a in kc.auth_infos.iter_mut().filter_map(|a| a.auth_info.as_mut()) {
        a.token = Some(ADMIN_TOKEN.to_string().into());
        a.client_certificate_data = None;
        a.client_key_data = None;
    }
    let json = serde_json::to_string(&kc).map_err(|e| e.to_string())?;
    std::fs::write(path, json).map_err(|e| e.to_string())
}

impl World {
    /// The suite's own kcp clients, as kcp's admin: read afresh each time, since kcp writes a
    /// new admin token on every start. (Workspaces created with the static token stay stuck in
    /// the `system:apibindings` initializer, so the suite creates them as kcp's admin.)
    pub async fn clients(&self) -> ClusterClients {
        self.kcp.clients().await
    }

    /// A `tmc manager` talking to kcp through the proxy, with the e2e suite's short timings.
    pub fn manager(&self, log: &str, extra: &[&str]) -> Tmc {
        let threshold = format!("{}s", HEARTBEAT_THRESHOLD.as_secs());
        let grace = format!("{}s", FAILOVER_GRACE.as_secs());
        let mut args = vec![
            "--heartbeat-threshold",
            &threshold,
            "--syncer-heartbeat-interval",
            "1s",
            "--syncer-deletion-timeout",
            "3s",
            "--placement-failover-grace",
            &grace,
            "--cluster-address-allow",
            "127.0.0.1/32",
        ];
        args.extend(extra);
        let log = self.kcp.dir.path().join(format!("{log}.log"));
        Tmc::manager(&self.manager_kubeconfig, PROVIDER, &args, log).process
    }

    /// Creates the workspace `path`, binds kcp-tmc's export there and waits until it serves.
    pub async fn tenant(&self, path: &str) -> Result<(), String> {
        self.kcp.bind_sample(&self.clients().await, path, WAIT).await.map(drop)
    }

    /// Registers cluster `index` (through its proxy) as SyncTarget `name` in `ws`, with `spec`
    /// extra fields. Returns the target key. Does not wait for Ready (no manager may run yet).
    pub async fn target(&self, ws: &str, name: &str, index: usize, spec: Value) -> Result<String, String> {
        let text = self.clusters[index].kubeconfig_text();
        let kubeconfig = text.replace(&server_of(&text)?, &self.cluster_proxies[index].url());
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": format!("{name}-kubeconfig"), "namespace": "default" },
            "stringData": { "kubeconfig": kubeconfig },
        });
        self.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&secret.to_string()))?;
        let mut spec = spec;
        spec["kubeconfigSecretRef"] = json!({ "namespace": "default", "name": format!("{name}-kubeconfig") });
        let target = json!({ "apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget",
                             "metadata": { "name": name, "labels": { "chaos": "yes" } }, "spec": spec });
        self.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&target.to_string()))?;
        let cluster =
            workspace::resolve(&self.clients().await, &ws.parse().unwrap()).await.map_err(|e| e.to_string())?;
        Ok(target_key(&cluster, name))
    }

    pub fn condition(&self, ws: &str, kind: &str, name: &str, type_: &str) -> Result<String, String> {
        let path = format!("jsonpath={{.status.conditions[?(@.type==\"{type_}\")].status}}");
        self.kcp.kubectl(ws, &["get", kind, name, "-o", &path], None)
    }

    pub async fn wait_ready(&self, ws: &str, name: &str, want: &str, timeout: Duration) -> Result<(), String> {
        eventually(&format!("SyncTarget {ws}/{name} Ready={want}"), timeout, || async {
            Ok((self.condition(ws, "synctarget", name, "Ready")? == want).then_some(()))
        })
        .await
    }

    /// A namespace in `ws`, assigned by label to `key` when given.
    pub fn namespace(&self, ws: &str, ns: &str, key: Option<&str>, labels: Value) -> Result<(), String> {
        let mut labels = labels;
        if let Some(key) = key {
            labels[format!("state.tmc.kcp.io/{key}")] = json!("Sync");
        }
        let yaml = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns, "labels": labels } });
        self.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&yaml.to_string())).map(|_| ())
    }

    /// The downstream namespace holding `ws`/`ns` for the target `name` of `target_ws`.
    pub async fn downstream_ns(&self, target_ws: &str, name: &str, ws: &str, ns: &str) -> Result<String, String> {
        let resolve = |p: &str| {
            let p = p.parse().unwrap();
            async move { workspace::resolve(&self.clients().await, &p).await.map_err(|e| e.to_string()) }
        };
        let target = TargetRef { cluster: resolve(target_ws).await?.to_string(), name: name.to_string() };
        Ok(Locator::new(target, &resolve(ws).await?, ns).downstream_namespace())
    }
}

/// `count` ConfigMaps `<prefix>-<i>` with data `{i, rev}`, as name → data.
pub fn configmaps(prefix: &str, count: usize, rev: &str) -> BTreeMap<String, Value> {
    (0..count).map(|i| (format!("{prefix}-{i}"), json!({ "i": i.to_string(), "rev": rev }))).collect()
}

/// A burst of ConfigMaps applied in the background, for a fault timed by the burst's progress
/// instead of by the clock: on an idle machine a burst can be over before a fixed delay, and a
/// fault after the burst proves nothing about one in the middle of it.
pub struct Burst {
    pub want: BTreeMap<String, Value>,
    applied: Arc<AtomicUsize>,
    apply: tokio::task::JoinHandle<Result<(), String>>,
}

impl Burst {
    /// Starts applying `count` ConfigMaps into `ws`/`ns`, `chunk` per kubectl call, retrying
    /// failed chunks for `patience`.
    pub fn start(w: &Arc<World>, ws: &str, ns: &str, count: usize, chunk: usize, patience: Duration) -> Self {
        let want = configmaps(ns, count, "1");
        let applied = Arc::new(AtomicUsize::new(0));
        let (w2, ws2, ns2, want2, applied2) =
            (w.clone(), ws.to_string(), ns.to_string(), want.clone(), applied.clone());
        let deadline = std::time::Instant::now() + patience;
        let apply = tokio::task::spawn_blocking(move || {
            apply_configmaps(&w2.kcp, &ws2, &ns2, &want2, chunk, deadline, Some(&applied2))
        });
        Self { want, applied, apply }
    }

    /// Returns once a third of the objects are in kcp; an error if the burst ended first.
    pub async fn a_third_in(&self) -> Result<(), String> {
        let count = self.want.len();
        while self.applied.load(Ordering::SeqCst) < count / 3 && !self.apply.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.applied.load(Ordering::SeqCst) >= count {
            return Err(format!("the burst of {count} was over before the fault"));
        }
        Ok(())
    }

    /// Waits for the rest of the burst; returns the objects it applied.
    pub async fn finish(self) -> Result<BTreeMap<String, Value>, String> {
        self.apply.await.map_err(|e| e.to_string())??;
        Ok(self.want)
    }
}

/// `objects` (name → data) as kubectl `List`s of ConfigMaps, `chunk` per list: (how many, the list).
pub fn configmap_lists(objects: &BTreeMap<String, Value>, chunk: usize) -> Vec<(usize, String)> {
    let items: Vec<Value> = objects
        .iter()
        .map(|(n, d)| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": n }, "data": d }))
        .collect();
    items
        .chunks(chunk)
        .map(|part| (part.len(), json!({ "apiVersion": "v1", "kind": "List", "items": part }).to_string()))
        .collect()
}

/// Applies ConfigMaps into `ws`/`ns` with kubectl, `chunk` per call; a chunk that fails (kcp
/// down) is retried until `deadline`, as a user's script would. `applied`, if given, counts the
/// objects of every chunk kcp accepted, so that a fault can be timed by the burst's progress.
pub fn apply_configmaps(
    kcp: &Kcp,
    ws: &str,
    ns: &str,
    objects: &BTreeMap<String, Value>,
    chunk: usize,
    deadline: std::time::Instant,
    applied: Option<&AtomicUsize>,
) -> Result<(), String> {
    for (count, list) in configmap_lists(objects, chunk) {
        loop {
            match kcp.kubectl(ws, &["-n", ns, "apply", "--server-side", "-f", "-"], Some(&list)) {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
        if let Some(applied) = applied {
            applied.fetch_add(count, Ordering::SeqCst);
        }
    }
    Ok(())
}
