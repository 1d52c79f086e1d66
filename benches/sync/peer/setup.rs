//! Setting up api-syncagent the way its docs describe (`docs/content/getting-started.md`,
//! `docs/content/publish-resources/index.md`, v0.7.0), on the bench's kcp and one cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kcp_tmc::kcp::workspace;

use super::{EXPORT, TENANT_NAMESPACE};
use crate::{cluster, env};

/// The provider workspace (APIExport and its endpoint slice).
pub const PROVIDER: &str = "root:peer";
/// Namespace of the service cluster where the agent keeps its per-object state Secrets.
const AGENT_NAMESPACE: &str = "peer-agent";

/// One PublishedResource with the defaults: the kcp group stays `bench.example.com`, objects land
/// in a namespace named after the tenant's logical cluster under hashed names.
const PUBLISHED_RESOURCE: &str = r#"
apiVersion: syncagent.kcp.io/v1alpha1
kind: PublishedResource
metadata: {name: widgets}
spec:
  resource: {apiGroup: bench.example.com, kind: Widget, versions: [v1]}
"#;

/// The agent process, killed on drop.
pub struct Agent {
    child: Child,
    pub log: PathBuf,
    /// `host:port` of its Prometheus metrics.
    pub metrics: String,
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP` or `CONT`) to the agent. It runs without leader election (its
    /// default), so a stopped agent loses no Lease and simply resumes.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {} failed", self.pid());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The api-syncagent binary: `$TMC_PEER_BIN`, or built (and cached) by `tests/servers.sh`.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TMC_PEER_BIN").filter(|b| !b.is_empty()) {
        return bin.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers.sh");
    let out = Command::new(script).arg("api-syncagent").stderr(Stdio::inherit()).output().expect("run servers.sh");
    assert!(out.status.success(), "building api-syncagent failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Service cluster side: the agent's PublishedResource CRD (shipped beside the binary), the Widget
/// CRD, the agent's namespace and the PublishedResource.
pub fn service_cluster(cluster: &cluster::Cluster, bin: &Path) {
    let crd = bin.with_file_name("publishedresources.yaml");
    cluster.kubectl(&["apply", "-f", &crd.display().to_string()]).unwrap();
    cluster.kubectl_stdin(&["apply", "-f", "-"], crate::setup::WIDGET_CRD).unwrap();
    for name in ["publishedresources.syncagent.kcp.io", "widgets.bench.example.com"] {
        cluster.kubectl(&["wait", "--for=condition=Established", &format!("crd/{name}"), "--timeout=60s"]).unwrap();
    }
    cluster.kubectl(&["create", "namespace", AGENT_NAMESPACE]).unwrap();
    cluster.kubectl_stdin(&["apply", "-f", "-"], PUBLISHED_RESOURCE).unwrap();
}

/// Tenant workspace `i`, which binds the export.
pub fn tenant(i: usize) -> String {
    format!("root:peer-tenant-{i}")
}

/// kcp side: the provider workspace with an empty APIExport (the agent fills in the schema; kcp
/// creates the endpoint slice of the same name), and `tenants` workspaces binding it (the slice
/// lists a URL only once a binding exists).
pub async fn kcp_side(kcp: &env::Kcp, tenants: usize) {
    let clients = kcp.clients().await;
    let all: Vec<String> = std::iter::once(PROVIDER.to_string()).chain((0..tenants).map(tenant)).collect();
    for ws in &all {
        workspace::ensure(&clients, &ws.parse().unwrap(), Duration::from_secs(60)).await.unwrap();
    }
    let export = format!(
        "{{\"apiVersion\": \"apis.kcp.io/v1alpha1\", \"kind\": \"APIExport\", \"metadata\": {{\"name\": \"{EXPORT}\"}}, \"spec\": {{}}}}"
    );
    kcp.kubectl(PROVIDER, &["apply", "-f", "-"], Some(&export)).unwrap();
    let binding = serde_json::json!({"apiVersion": "apis.kcp.io/v1alpha2", "kind": "APIBinding",
        "metadata": {"name": EXPORT}, "spec": {"reference": {"export": {"path": PROVIDER, "name": EXPORT}}}});
    for ws in &all[1..] {
        kcp.kubectl(ws, &["apply", "-f", "-"], Some(&binding.to_string())).unwrap();
        kcp.kubectl(ws, &["create", "namespace", TENANT_NAMESPACE], None).unwrap();
    }
}

/// The admin kubeconfig with every server pointed at the provider workspace: the agent requires
/// its kcp kubeconfig to name the endpoint slice's workspace.
fn provider_kubeconfig(kcp: &env::Kcp, path: &Path) {
    let mut kc = kube::config::Kubeconfig::read_from(&kcp.kubeconfig).unwrap();
    for named in &mut kc.clusters {
        if let Some(c) = named.cluster.as_mut() {
            c.server = Some(kcp.server(PROVIDER));
        }
    }
    std::fs::write(path, serde_yaml::to_string(&kc).unwrap()).unwrap();
}

/// Starts the agent with its defaults plus the required flags, on free loopback ports, logging to
/// `dir/api-syncagent.log`.
pub fn start_agent(kcp: &env::Kcp, cluster: &cluster::Cluster, bin: &Path, dir: &Path) -> Agent {
    let kcp_kubeconfig = dir.join("peer-kcp.kubeconfig");
    provider_kubeconfig(kcp, &kcp_kubeconfig);
    let log = dir.join("api-syncagent.log");
    let file = std::fs::File::create(&log).unwrap();
    let metrics = format!("127.0.0.1:{}", env::free_port());
    let child = Command::new(bin)
        .arg(format!("--kcp-kubeconfig={}", kcp_kubeconfig.display()))
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .arg(format!("--apiexportendpointslice-ref={EXPORT}"))
        .arg(format!("--namespace={AGENT_NAMESPACE}"))
        .arg("--agent-name=bench")
        .arg(format!("--metrics-address={metrics}"))
        .arg(format!("--health-address=127.0.0.1:{}", env::free_port()))
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    Agent { child, log, metrics }
}
