//! Hostile kubeconfigs (issue 9): a tenant's kubeconfig Secret that names a command, a file, a
//! proxy or unverified TLS is refused before any use — `SyncerReady=False`, reason
//! `KubeconfigRefused`, the message naming the field — and nothing in it is run, read or dialled
//! by the shared manager. Each hostile kubeconfig is cluster 1's real one with the attack added,
//! so the old loader would have acted on it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::Bystander;
use crate::env::{TestResult, eventually};
use crate::syncer::WAIT;
use crate::{World, ensure};

/// The hostile tenant's workspace, shared by the rows of this file (each has its own target).
const WS: &str = "root:hostile-kubeconfig";
static TENANT: OnceCell<()> = OnceCell::const_new();

/// The hostile tenant's workspace and the bystander, both set up before the attack.
async fn set_up(w: &World) -> Result<&'static Bystander, String> {
    let tenant = TENANT.get_or_try_init(|| w.bind_tenant(WS, crate::PROVIDER, Duration::from_secs(90)));
    let (tenant, bystander) = tokio::join!(tenant, Bystander::get(w));
    tenant?;
    bystander
}

/// Cluster 1's kubeconfig (inline CA data and token) as JSON, for a test to edit.
fn cluster_kubeconfig(w: &World) -> Result<Value, String> {
    serde_yaml::from_str(&w.clusters[1].kubeconfig_text()).map_err(|e| e.to_string())
}

fn user(kc: &mut Value) -> &mut serde_json::Map<String, Value> {
    kc["users"][0]["user"].as_object_mut().expect("cluster.sh writes one user")
}

fn cluster(kc: &mut Value) -> &mut serde_json::Map<String, Value> {
    kc["clusters"][0]["cluster"].as_object_mut().expect("cluster.sh writes one cluster")
}

/// Creates or replaces the Secret and the push-mode SyncTarget `name` pointing at it. JSON is
/// YAML, so the edited kubeconfig goes in as it is.
fn apply_target(w: &World, name: &str, kubeconfig: &Value) -> Result<(), String> {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": format!("{name}-kubeconfig"), "namespace": "default" },
        "stringData": { "kubeconfig": kubeconfig.to_string() },
    });
    let target = json!({
        "apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget", "metadata": { "name": name },
        "spec": { "kubeconfigSecretRef": { "namespace": "default", "name": format!("{name}-kubeconfig") } },
    });
    w.kcp.kubectl(WS, &["apply", "-f", "-"], Some(&crate::syncer::list(&[secret.to_string(), target.to_string()])))?;
    Ok(())
}

/// (status, reason, message) of the condition `type_` of the SyncTarget `name`.
fn condition(w: &World, name: &str, type_: &str) -> Result<(String, String, String), String> {
    let c = format!("{{.status.conditions[?(@.type==\"{type_}\")]");
    let path = format!("jsonpath={c}.status}}|{c}.reason}}|{c}.message}}");
    let out = w.kcp.kubectl(WS, &["get", "synctarget", name, "-o", &path], None)?;
    let mut parts = out.splitn(3, '|').map(str::to_string);
    Ok((parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default()))
}

/// Waits for `SyncerReady=False` with reason exactly `KubeconfigRefused` and a message naming
/// `field`, and for Ready to say the same; returns the message.
async fn wait_refused(w: &World, name: &str, field: &str) -> Result<String, String> {
    eventually(&format!("SyncTarget {name} KubeconfigRefused naming {field}"), WAIT, || async {
        let (status, reason, message) = condition(w, name, "SyncerReady")?;
        let (ready, ready_reason, _) = condition(w, name, "Ready")?;
        let refused = status == "False" && reason == "KubeconfigRefused" && message.contains(field);
        if refused && ready == "False" && ready_reason == "KubeconfigRefused" {
            Ok(Some(message))
        } else {
            Err(format!("SyncerReady {status} {reason}: {message:?}; Ready {ready} {ready_reason}"))
        }
    })
    .await
}

/// A TCP listener on 127.0.0.1 that counts the connections it accepts.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn start() -> Result<Listener, String> {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let port = socket.local_addr().map_err(|e| e.to_string())?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while socket.accept().await.is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        Ok(Listener { port, accepted, task })
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Long enough for a syncer that was (wrongly) started to have dialled or run something.
const SETTLE: Duration = Duration::from_secs(3);

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub async fn exec_plugin_is_refused_and_never_runs(w: Arc<World>) -> TestResult {
    let bystander = set_up(&w).await?;
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("exec-plugin-ran");
    let script = format!("touch {}", path_str(&marker));
    let mut kc = cluster_kubeconfig(&w)?;
    // Without a token the plugin is the only credential, so kube's loader would run it.
    user(&mut kc).remove("token");
    user(&mut kc).insert(
        "exec".into(),
        json!({"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh", "args": ["-c", script],
               "interactiveMode": "Never"}),
    );
    apply_target(&w, "kc-exec", &kc)?;
    let message = wait_refused(&w, "kc-exec", "users[name=admin].user.exec").await?;
    ensure!(message.contains("never runs commands"), "the message should say why and what instead: {message}");
    for echoed in ["touch", "/bin/sh", &path_str(dir.path())] {
        ensure!(!message.contains(echoed), "the message echoes the plugin ({echoed}): {message}");
    }
    tokio::time::sleep(SETTLE).await;
    ensure!(!marker.exists(), "the exec plugin ran inside the manager: {} exists", marker.display());
    bystander.untouched(&w).await?;
    Ok(())
}

pub async fn auth_provider_is_refused_and_never_runs(w: Arc<World>) -> TestResult {
    let bystander = set_up(&w).await?;
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("auth-provider-ran");
    let mut kc = cluster_kubeconfig(&w)?;
    // kube's gcp provider runs `cmd-path` with `cmd-args` to get a token.
    user(&mut kc).remove("token");
    user(&mut kc).insert(
        "auth-provider".into(),
        json!({"name": "gcp", "config": {"cmd-path": "touch", "cmd-args": path_str(&marker)}}),
    );
    apply_target(&w, "kc-auth-provider", &kc)?;
    let message = wait_refused(&w, "kc-auth-provider", "users[name=admin].user.auth-provider").await?;
    ensure!(!message.contains(&path_str(dir.path())), "the message echoes the provider's config: {message}");
    tokio::time::sleep(SETTLE).await;
    ensure!(!marker.exists(), "the auth provider's command ran inside the manager");
    bystander.untouched(&w).await?;
    Ok(())
}

pub async fn token_file_is_refused_and_nothing_is_sent(w: Arc<World>) -> TestResult {
    let bystander = set_up(&w).await?;
    // The tenant's "cluster": a listener of ours. The token file: the manager's own kcp admin
    // kubeconfig, a real file on the manager's disk.
    let listener = Listener::start().await?;
    let stolen = path_str(&w.kcp.kubeconfig);
    ensure!(w.kcp.kubeconfig.exists(), "the file the attack names must exist: {stolen}");
    let mut kc = cluster_kubeconfig(&w)?;
    cluster(&mut kc).insert("server".into(), json!(format!("https://127.0.0.1:{}", listener.port)));
    user(&mut kc).remove("token");
    user(&mut kc).insert("tokenFile".into(), json!(stolen));
    apply_target(&w, "kc-token-file", &kc)?;
    let message = wait_refused(&w, "kc-token-file", "users[name=admin].user.tokenFile").await?;
    ensure!(message.contains("`token`"), "the message should say to put the token itself in `token`: {message}");
    ensure!(!message.contains(&stolen), "the message echoes the file path: {message}");
    tokio::time::sleep(SETTLE).await;
    ensure!(listener.accepted() == 0, "the manager dialled the tenant's server {} times", listener.accepted());
    bystander.untouched(&w).await?;
    Ok(())
}

/// Refused one field at a time, then fixed to inline data: the same target becomes Ready, so a
/// refusal loses nothing and recovers by itself.
pub async fn file_paths_are_refused_and_inline_data_recovers(w: Arc<World>) -> TestResult {
    let bystander = set_up(&w).await?;
    let dir = tempfile::tempdir()?;
    let inline = cluster_kubeconfig(&w)?;
    // Real files with the real CA, so that kube's loader would have read them and succeeded.
    let ca_data = inline["clusters"][0]["cluster"]["certificate-authority-data"].as_str().ok_or("no CA data")?;
    let ca_pem = base64::engine::general_purpose::STANDARD.decode(ca_data)?;
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca_pem)?;
    let name = "kc-files";
    let mut kc = inline.clone();
    cluster(&mut kc).remove("certificate-authority-data");
    cluster(&mut kc).insert("certificate-authority".into(), json!(path_str(&ca_file)));
    apply_target(&w, name, &kc)?;
    let message = wait_refused(&w, name, "clusters[name=cluster].cluster.certificate-authority").await?;
    ensure!(message.contains("certificate-authority-data"), "the message should name the inline field: {message}");
    for (field, instead) in [("client-certificate", "client-certificate-data"), ("client-key", "client-key-data")] {
        let mut kc = inline.clone();
        user(&mut kc).insert(field.into(), json!(path_str(&ca_file)));
        apply_target(&w, name, &kc)?;
        let message = wait_refused(&w, name, &format!("users[name=admin].user.{field} ")).await?;
        ensure!(message.contains(instead), "the message should name {instead}: {message}");
        ensure!(!message.contains(&path_str(dir.path())), "the message echoes the path: {message}");
    }
    apply_target(&w, name, &inline)?;
    eventually("the fixed target Ready", WAIT, || async {
        let (syncer, syncer_reason, _) = condition(&w, name, "SyncerReady")?;
        let (ready, reason, message) = condition(&w, name, "Ready")?;
        let ok = (syncer.as_str(), syncer_reason.as_str(), ready.as_str()) == ("True", "KubeconfigLoaded", "True");
        if ok {
            Ok(Some(()))
        } else {
            Err(format!("SyncerReady {syncer} {syncer_reason}; Ready {ready} {reason}: {message}"))
        }
    })
    .await?;
    bystander.untouched(&w).await?;
    Ok(())
}

pub async fn proxy_url_is_refused_and_never_dialled(w: Arc<World>) -> TestResult {
    let bystander = set_up(&w).await?;
    let proxy = Listener::start().await?;
    let mut kc = cluster_kubeconfig(&w)?;
    cluster(&mut kc).insert("proxy-url".into(), json!(format!("http://127.0.0.1:{}", proxy.port)));
    apply_target(&w, "kc-proxy", &kc)?;
    let message = wait_refused(&w, "kc-proxy", "clusters[name=cluster].cluster.proxy-url").await?;
    ensure!(!message.contains(&proxy.port.to_string()), "the message echoes the proxy: {message}");
    tokio::time::sleep(SETTLE).await;
    ensure!(proxy.accepted() == 0, "the manager dialled the tenant's proxy {} times", proxy.accepted());
    bystander.untouched(&w).await?;
    Ok(())
}

/// The shared manager runs without --allow-insecure-cluster-tls.
pub async fn insecure_skip_tls_verify_is_refused_without_the_flag(w: Arc<World>) -> TestResult {
    let bystander = set_up(&w).await?;
    let mut kc = cluster_kubeconfig(&w)?;
    cluster(&mut kc).remove("certificate-authority-data");
    cluster(&mut kc).insert("insecure-skip-tls-verify".into(), json!(true));
    apply_target(&w, "kc-insecure", &kc)?;
    let message = wait_refused(&w, "kc-insecure", "clusters[name=cluster].cluster.insecure-skip-tls-verify").await?;
    ensure!(
        message.contains("certificate-authority-data") && message.contains("--allow-insecure-cluster-tls"),
        "the message should name the fix and the operator flag: {message}"
    );
    bystander.untouched(&w).await?;
    Ok(())
}
