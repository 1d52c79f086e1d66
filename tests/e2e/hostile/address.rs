//! Hostile tenants, cluster addresses (issue 9, item 2): a push-mode kubeconfig whose server is
//! the manager's own loopback, the metadata service, an unspecified address or kcp itself is
//! refused before anything is dialled (`ClusterAddressRefused`); a "cluster" that answers with a
//! huge body or an HTML error page neither grows the manager nor gets its text anywhere.
//!
//! The shared manager allows 127.0.0.1/32 (the suite's clusters live there), so 127.0.0.2 is
//! still loopback it refuses, and kcp's 127.0.0.1:<port> is refused although the range covers it.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::OnceCell;

use super::Bystander;
use crate::env::{self, TestResult, Tmc, eventually, free_port};
use crate::syncer::wait_ready_reason;
use crate::{World, ensure};

const WS: &str = "root:hostile-address";
/// The cluster whose CA, certificate and token the hostile kubeconfigs reuse.
const CLUSTER: usize = 1;

static BOUND: OnceCell<()> = OnceCell::const_new();

async fn workspace(w: &World) -> Result<(), String> {
    BOUND.get_or_try_init(|| w.bind_tenant(WS, crate::PROVIDER, Duration::from_secs(90))).await.map(|_| ())
}

/// Cluster 1's kubeconfig (its CA and token) with the server replaced by `server`.
fn kubeconfig_for(w: &World, server: &str) -> Result<String, String> {
    let kubeconfig = w.clusters[CLUSTER].kubeconfig_text();
    let current = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).ok_or("no server line")?;
    Ok(kubeconfig.replace(current, server))
}

/// A push-mode SyncTarget `name` in `ws` whose kubeconfig Secret names `server`.
fn target(w: &World, ws: &str, name: &str, server: &str) -> Result<(), String> {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": format!("{name}-kubeconfig"), "namespace": "default" },
        "stringData": { "kubeconfig": kubeconfig_for(w, server)? },
    });
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&secret.to_string()))?;
    let target = format!(
        "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {{name: {name}}}\nspec:\n  kubeconfigSecretRef: {{namespace: default, name: {name}-kubeconfig}}\n"
    );
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(&target)).map(|_| ())
}

/// A listener on `ip` counting the connections it accepts: evidence that nothing was dialled.
async fn listener(ip: &str) -> Result<(u16, Arc<AtomicUsize>), String> {
    let l = tokio::net::TcpListener::bind((ip, 0)).await.map_err(|e| format!("bind {ip}: {e}"))?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while l.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    Ok((port, accepted))
}

/// Waits for `ClusterAddressRefused` on `name` and checks the message names `fragments`.
async fn refused(w: &World, name: &str, fragments: &[&str]) -> Result<String, String> {
    let message = wait_ready_reason(w, WS, name, "ClusterAddressRefused").await?;
    for fragment in fragments {
        if !message.contains(fragment) {
            return Err(format!("the message should name {fragment:?}: {message}"));
        }
    }
    Ok(message)
}

pub async fn loopback_server_is_refused(w: Arc<World>) -> TestResult {
    workspace(&w).await?;
    let (port, accepted) = listener("127.0.0.2").await?;
    target(&w, WS, "addr-loopback", &format!("https://127.0.0.2:{port}"))?;
    refused(&w, "addr-loopback", &["127.0.0.2", "loopback", "--cluster-address-allow"]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(accepted.load(Ordering::SeqCst) == 0, "the manager dialled the refused 127.0.0.2:{port}");
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}

pub async fn metadata_service_is_refused(w: Arc<World>) -> TestResult {
    workspace(&w).await?;
    target(&w, WS, "addr-metadata", "https://169.254.169.254")?;
    refused(&w, "addr-metadata", &["169.254.169.254", "link-local", "--cluster-address-allow"]).await?;
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}

pub async fn unspecified_address_is_refused(w: Arc<World>) -> TestResult {
    workspace(&w).await?;
    // Connecting to 0.0.0.0 reaches this host; a listener on every address would see the dial.
    let (port, accepted) = listener("0.0.0.0").await?;
    target(&w, WS, "addr-unspecified", &format!("https://0.0.0.0:{port}"))?;
    refused(&w, "addr-unspecified", &["0.0.0.0", "unspecified"]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(accepted.load(Ordering::SeqCst) == 0, "the manager dialled the refused 0.0.0.0:{port}");
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}

pub async fn kcp_itself_is_refused_though_its_range_is_allowed(w: Arc<World>) -> TestResult {
    workspace(&w).await?;
    let kcp = format!("127.0.0.1:{}", w.kcp.port);
    target(&w, WS, "addr-kcp", &format!("https://{kcp}/clusters/root"))?;
    refused(&w, "addr-kcp", &[&kcp, "kcp's own endpoint"]).await?;
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}

/// `tests/e2e/fixtures/hostile_server.py` on 127.0.0.1 with cluster 1's serving certificate
/// (its CA is in the kubeconfig, so TLS succeeds and the answer is really read). Killed on drop.
struct HostileServer {
    child: Child,
    log: std::path::PathBuf,
    url: String,
}

impl HostileServer {
    async fn start(w: &World, mode: &str, marker: &str) -> Result<HostileServer, String> {
        let port = free_port();
        let pki = w.clusters[CLUSTER].dir.path().join("pki");
        let log = w.kcp.dir.path().join(format!("hostile-{mode}.log"));
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/fixtures/hostile_server.py");
        let child = Command::new("python3")
            .args([script, mode, &port.to_string()])
            .arg(pki.join("server.crt"))
            .arg(pki.join("server.key"))
            .arg(marker)
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("python3: {e}"))?;
        let server = HostileServer { child, log, url: format!("https://127.0.0.1:{port}") };
        eventually("the hostile server to listen", Duration::from_secs(20), || async {
            Ok(server.output().contains("serving").then_some(()))
        })
        .await?;
        Ok(server)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn requests(&self) -> usize {
        self.output().lines().filter(|l| l.starts_with("request ")).count()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peak resident memory of process `pid` (VmHWM), in bytes.
fn peak_rss(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmHWM")?;
    Ok(kib * 1024)
}

pub async fn huge_answer_is_cut_off(w: Arc<World>) -> TestResult {
    // A manager of its own, so that its memory is this test's alone.
    const PROVIDER: &str = "root:address-provider";
    const TENANT: &str = "root:address-huge";
    const MIB: u64 = 1024 * 1024;
    let admin = w.kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &admin, "--workspace", PROVIDER, "--create-workspace"]);
    ensure!(code == 0, "tmc install failed: {out}{err}");
    w.bind_tenant(TENANT, PROVIDER, Duration::from_secs(60)).await?;
    let server = HostileServer::start(&w, "huge", "unused").await?;
    let log = w.kcp.dir.path().join("address-huge-manager.log");
    let manager = Tmc::manager(&admin, PROVIDER, &["--cluster-address-allow", "127.0.0.1/32"], log);
    let (mut process, health) = (manager.process, manager.health);
    eventually("the manager ready", Duration::from_secs(60), || async {
        Ok(crate::ops::get(&format!("http://{health}/readyz")).await.ok().filter(|(c, _)| *c == 200).map(|_| ()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = peak_rss(process.pid())?;

    target(&w, TENANT, "addr-huge", &server.url)?;
    let message = wait_ready_reason(&w, TENANT, "addr-huge", "ClusterResponseTooLarge").await?;
    ensure!(message.contains("larger than 32 MiB") && message.contains("cut off"), "message: {message}");
    // The probe, the watches and discovery all keep asking; each answer is cut off again.
    eventually("several answers cut off", Duration::from_secs(60), || async {
        Ok((server.requests() >= 4).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = peak_rss(process.pid())?;
    ensure!(process.running(), "the manager died:\n{}", process.output());
    let grown = after.saturating_sub(before) / MIB;
    // Read to the end, one answer alone would be 4 GiB; cut off, a few concurrent requests hold
    // at most 32 MiB each.
    ensure!(grown < 256, "the manager's peak RSS grew by {grown} MiB over {} requests", server.requests());
    eprintln!("huge answers: {} requests, peak RSS grew by {grown} MiB", server.requests());
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}

pub async fn non_kubernetes_answer_is_described_not_quoted(w: Arc<World>) -> TestResult {
    workspace(&w).await?;
    let marker = format!("tmc-hostile-marker-{}", free_port());
    let server = HostileServer::start(&w, "html", &marker).await?;
    target(&w, WS, "addr-html", &server.url)?;
    let message = wait_ready_reason(&w, WS, "addr-html", "ClusterUnreachable").await?;
    ensure!(message.contains("HTTP 502 with a non-Kubernetes body of"), "message: {message}");
    ensure!(!message.contains(&marker) && !message.contains("<html"), "the body leaked: {message}");
    ensure!(message.len() <= 400 && !message.contains('\n'), "unbounded message: {message:?}");
    ensure!(server.requests() >= 1, "the hostile server was never asked");
    // Let the Ready Event and some retries happen, then look everywhere the text could land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = w.kcp.kubectl(WS, &["get", "events", "-A", "-o", "json"], None)?;
    ensure!(events.contains("addr-html"), "no Event on the SyncTarget: {events}");
    ensure!(!events.contains(&marker), "the body leaked into an Event");
    let status = w.kcp.kubectl(WS, &["get", "synctarget", "addr-html", "-o", "json"], None)?;
    ensure!(!status.contains(&marker), "the body leaked into the SyncTarget");
    let log = w.manager.lock().unwrap().output();
    ensure!(!log.contains(&marker), "the body leaked into the manager log");
    ensure!(log.contains("addr-html") || log.contains("non-Kubernetes body"), "the manager log never saw the target");
    Bystander::get(&w).await?.untouched(&w).await?;
    Ok(())
}
