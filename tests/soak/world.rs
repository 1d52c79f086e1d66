//! The soak's world: one real kcp, two real clusters, `tmc install`, one `tmc manager`, and
//! `workspaces` tenant workspaces. Each tenant has two push-mode SyncTargets (one per cluster)
//! and a Placement that puts its namespace `churn` on both.

use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, stream};
use kcp_tmc::kcp::ClusterClients;
use kcp_tmc::syncer::naming::{Locator, TargetRef};
use serde_json::json;

use crate::cluster::Cluster;
use crate::env::{self, Kcp, Tmc, eventually};

pub const PROVIDER: &str = "root:tmc";
/// The namespace every tenant churns in.
pub const NAMESPACE: &str = "churn";
/// The label on every object the churn writes; the comparison lists by it on both sides.
pub const SOAK_LABEL: &str = "soak";
/// SyncTarget `TARGETS[i]` of every tenant points at cluster `i`.
pub const TARGETS: [&str; 2] = ["east", "west"];
const WAIT: Duration = Duration::from_secs(180);

pub struct Tenant {
    pub path: String,
    /// The downstream namespace holding `churn` on cluster `i`.
    pub downstream: [String; 2],
}

pub struct World {
    pub kcp: Kcp,
    pub clusters: Vec<Cluster>,
    pub clients: ClusterClients,
    pub downstream: Vec<kube::Client>,
    pub tenants: Vec<Tenant>,
    /// Where each manager incarnation logs (`manager-<n>.log`).
    pub logs: PathBuf,
}

/// A manager incarnation: the process and the base URL of its metrics endpoint.
pub struct Manager {
    pub process: Tmc,
    pub metrics: String,
}

impl World {
    /// Starts manager incarnation `n`. Info-level logs: half an hour of debug logs would cost
    /// the two cores more than the churn does.
    pub fn start_manager(&self, n: u32) -> Manager {
        let kubeconfig = self.kcp.kubeconfig.display().to_string();
        let started = Tmc::manager_with_env(
            &kubeconfig,
            PROVIDER,
            // The clusters run on this machine; nothing else on loopback is allowed.
            &["--cluster-address-allow", "127.0.0.1/32"],
            self.logs.join(format!("manager-{n}.log")),
            &[("RUST_LOG", "info")],
        );
        Manager { process: started.process, metrics: format!("http://{}", started.metrics) }
    }
}

/// The servers and the installed APIs; no manager and no tenants yet.
pub async fn setup() -> Result<World, String> {
    let starting: Vec<_> = ["soak-1", "soak-2"]
        .into_iter()
        .map(|name| tokio::task::spawn_blocking(move || Cluster::start(name)))
        .collect();
    let kcp = Kcp::start().await;
    let mut clusters = vec![];
    for c in starting {
        clusters.push(c.await.map_err(|e| e.to_string())??);
    }
    let kubeconfig = kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &kubeconfig, "--workspace", PROVIDER, "--create-workspace"]);
    if code != 0 {
        return Err(format!("tmc install failed ({code}): {out}{err}"));
    }
    let clients = kcp.clients().await;
    let mut downstream = vec![];
    for c in &clusters {
        downstream.push(c.client().await);
    }
    let logs = kcp.dir.path().to_path_buf();
    Ok(World { kcp, clusters, clients, downstream, tenants: vec![], logs })
}

/// Creates the tenants, four at a time (each one is a dozen kubectl calls and waits).
pub async fn add_tenants(w: &mut World, workspaces: usize) -> Result<(), String> {
    let made: Vec<Result<Tenant, String>> =
        stream::iter(0..workspaces).map(|i| tenant(w, i)).buffered(4).collect().await;
    w.tenants = made.into_iter().collect::<Result<_, _>>()?;
    Ok(())
}

async fn tenant(w: &World, i: usize) -> Result<Tenant, String> {
    let path = format!("root:soak-{i:02}");
    let cluster = w.kcp.bind_sample(&w.clients, &path, WAIT).await?;
    for (index, name) in TARGETS.iter().enumerate() {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": format!("{name}-kubeconfig"), "namespace": "default" },
            "stringData": { "kubeconfig": w.clusters[index].kubeconfig_text() },
        });
        w.kcp.kubectl(&path, &["apply", "-f", "-"], Some(&secret.to_string()))?;
        let target = json!({
            "apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget", "metadata": { "name": name },
            "spec": { "kubeconfigSecretRef": { "namespace": "default", "name": format!("{name}-kubeconfig") } },
        });
        w.kcp.kubectl(&path, &["apply", "-f", "-"], Some(&target.to_string()))?;
    }
    w.kcp.kubectl(&path, &["wait", "--for=condition=Ready", "synctarget", "--all", "--timeout=180s"], None)?;
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"app": "soak"}}});
    w.kcp.kubectl(&path, &["apply", "-f", "-"], Some(&namespace.to_string()))?;
    let placement = json!({"apiVersion": "placement.kcp.io/v1alpha1", "kind": "Placement",
        "metadata": {"name": "soak"},
        "spec": {"namespaceSelector": {"matchLabels": {"app": "soak"}}, "locationSelector": {}}});
    w.kcp.kubectl(&path, &["apply", "-f", "-"], Some(&placement.to_string()))?;
    // Placed on both targets: two assignment labels on the namespace.
    eventually(&format!("{path}/{NAMESPACE} assigned to both targets"), WAIT, || async {
        let ns = w.kcp.kubectl(&path, &["get", "namespace", NAMESPACE, "-o", "json"], None)?;
        let ns: serde_json::Value = serde_json::from_str(&ns).map_err(|e| e.to_string())?;
        Ok((kcp_tmc::apis::names::assigned_targets(&ns).len() == TARGETS.len()).then_some(()))
    })
    .await?;
    let downstream = TARGETS.map(|name| {
        let target = TargetRef { cluster: cluster.to_string(), name: name.to_string() };
        Locator::new(target, &cluster, NAMESPACE).downstream_namespace()
    });
    Ok(Tenant { path, downstream })
}
