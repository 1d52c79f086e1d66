//! kcp's sharded topology (issue 12, items 1 and 2): a root shard, a second shard `shard-1`, a
//! cache server and the front-proxy (`tests/sharded.sh`), with the manager pointed at the
//! front-proxy. Tenants are pinned to a shard with their Workspace's location selector, and the
//! manager must follow each shard's virtual-workspace URL from the endpoint slice, reconcile
//! SyncTargets and Placements on both shards and sync workloads from both; a restarted shard is
//! followed without losing or rewriting anything. Then two managers split the shards
//! (`--shards`, item 3), each leading on its own Lease.
//!
//! kcp's ports are fixed (6443–6445), so the topology runs as a serial test, once per run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kcp_tmc::kcp::{ClusterClients, LogicalClusterName, workspace};
use kcp_tmc::syncer::naming::{Locator, TargetRef, target_key};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::env::{self, TestResult, Tmc, eventually, kubectl_at};
use crate::placement::placement;
use crate::syncer::deployment;
use crate::{World, ensure};

const FRONT_PROXY: &str = "https://127.0.0.1:6443";
const PROVIDER: &str = "root:sh-provider";
/// A tenant on each shard.
const TENANTS: [(&str, &str); 2] = [("root:sh-a", "root"), ("root:sh-b", "shard-1")];
const WAIT: Duration = Duration::from_secs(90);

/// A running two-shard kcp, stopped on drop.
pub struct Sharded {
    dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub clients: ClusterClients,
}

fn script(command: &str, dir: &Path) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sharded.sh");
    let out = std::process::Command::new(script)
        .args([command, &dir.display().to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("tests/sharded.sh: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(format!("tests/sharded.sh {command} {} failed", dir.display())),
    }
}

impl Sharded {
    pub async fn up() -> Result<Sharded, String> {
        let dir = tempfile::Builder::new()
            .prefix("tmc-e2e-sharded")
            .disable_cleanup(std::env::var_os("TMC_E2E_KEEP").is_some())
            .tempdir()
            .map_err(|e| e.to_string())?;
        let path = dir.path().to_path_buf();
        let up = tokio::task::spawn_blocking(move || script("up", &path)).await.map_err(|e| e.to_string())?;
        // Whatever `up` started is stopped by `down`, also when it failed half-way.
        let kubeconfig = match up {
            Ok(out) => PathBuf::from(out),
            Err(e) => {
                let _ = script("down", dir.path());
                return Err(e);
            }
        };
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).map_err(|e| e.to_string())?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| e.to_string())?;
        let clients = ClusterClients::for_server(&config).map_err(|e| e.to_string())?;
        Ok(Sharded { dir, kubeconfig, clients })
    }

    /// kubectl against the workspace `path`, through the front-proxy.
    pub fn kubectl(&self, path: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        kubectl_at(&self.kubeconfig, &format!("{FRONT_PROXY}/clusters/{path}"), args, stdin)
            .map_err(|e| format!("kubectl {args:?} in {path}: {e}"))
    }

    pub fn restart_shard(&self) -> Result<(), String> {
        script("restart-shard", self.dir.path()).map(drop)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    async fn cluster(&self, path: &str) -> Result<LogicalClusterName, String> {
        let path = path.parse().map_err(|e| format!("{e}"))?;
        workspace::resolve(&self.clients, &path).await.map_err(|e| e.to_string())
    }

    /// Creates the workspace `path` on `shard` (its location selector picks the Shard by kcp's
    /// own `name` label) and checks where kcp put it.
    async fn workspace_on(&self, path: &str, shard: &str) -> Result<(), String> {
        let (parent, name) = path.rsplit_once(':').ok_or("a workspace below root")?;
        let ws = json!({"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
                        "spec": {"location": {"selector": {"matchLabels": {"name": shard}}}}});
        self.kubectl(parent, &["apply", "-f", "-"], Some(&ws.to_string()))?;
        let ready = eventually(&format!("workspace {path} Ready"), WAIT, || async {
            let out = self.kubectl(parent, &["get", "workspace", name, "-o", "json"], None)?;
            let ws: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            Ok((ws["status"]["phase"] == "Ready").then_some(ws))
        })
        .await?;
        let placed = ready["metadata"]["annotations"]["core.kcp.io/shard"].as_str().unwrap_or_default();
        ensure!(placed == shard, "workspace {path} was scheduled on shard {placed:?}, not {shard}");
        Ok(())
    }

    async fn bind(&self, tenant: &str) -> Result<(), String> {
        let binding = kcp_tmc::kcp::export::api_binding(PROVIDER, kcp_tmc::kcp::export::DEFAULT_EXPORT_NAME);
        self.kubectl(tenant, &["apply", "-f", "-"], Some(&binding.to_string()))?;
        eventually(&format!("synctargets served in {tenant}"), WAIT, || async {
            Ok(self.kubectl(tenant, &["get", "synctargets"], None).ok().map(drop))
        })
        .await
    }

    /// The virtual-workspace URLs the export's endpoint slice lists.
    fn endpoints(&self) -> Result<Vec<String>, String> {
        let out = self.kubectl(
            PROVIDER,
            &["get", "apiexportendpointslice", kcp_tmc::kcp::export::DEFAULT_EXPORT_NAME, "-o", "json"],
            None,
        )?;
        let slice: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok(slice["status"]["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["url"].as_str().map(Into::into))
            .collect())
    }

    /// Registers `cluster` as the SyncTarget `name` (labelled `shard=<shard>`) in `ws`; waits
    /// until it is Ready and returns its key.
    async fn register(&self, ws: &str, name: &str, shard: &str, cluster: &Cluster) -> Result<String, String> {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-kubeconfig"), "namespace": "default"},
            "stringData": {"kubeconfig": cluster.kubeconfig_text()}});
        self.kubectl(ws, &["apply", "-f", "-"], Some(&secret.to_string()))?;
        let target = json!({"apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget",
            "metadata": {"name": name, "labels": {"shard": shard}},
            "spec": {"kubeconfigSecretRef": {"namespace": "default", "name": format!("{name}-kubeconfig")}}});
        self.kubectl(ws, &["apply", "-f", "-"], Some(&target.to_string()))?;
        self.wait_ready(ws, name).await?;
        Ok(target_key(&self.cluster(ws).await?, name))
    }

    async fn wait_ready(&self, ws: &str, name: &str) -> Result<(), String> {
        let ready = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
        eventually(&format!("SyncTarget {ws}/{name} Ready"), WAIT, || async {
            Ok((self.kubectl(ws, &["get", "synctarget", name, "-o", ready], None)? == "True").then_some(()))
        })
        .await
    }

    fn heartbeat(&self, ws: &str, name: &str) -> Result<String, String> {
        self.kubectl(ws, &["get", "synctarget", name, "-o", "jsonpath={.status.lastSyncTime}"], None)
    }

    /// The downstream namespace of `tenant`'s namespace `ns` on the SyncTarget `target_ws`/`target`.
    async fn downstream_ns(&self, target_ws: &str, target: &str, tenant: &str, ns: &str) -> Result<String, String> {
        let target = TargetRef { cluster: self.cluster(target_ws).await?.to_string(), name: target.to_string() };
        Ok(Locator::new(target, &self.cluster(tenant).await?, ns).downstream_namespace())
    }
}

impl Drop for Sharded {
    fn drop(&mut self) {
        if let Err(e) = script("down", self.dir.path()) {
            eprintln!("{e}");
        }
    }
}

fn copy(cluster: &Cluster, ns: &str, kind: &str, name: &str) -> Result<Option<Value>, String> {
    match cluster.kubectl(&["-n", ns, "get", kind, name, "-o", "json", "--ignore-not-found"])? {
        out if out.trim().is_empty() => Ok(None),
        out => serde_json::from_str(&out).map(Some).map_err(|e| e.to_string()),
    }
}

async fn wait_copy(cluster: &Cluster, ns: &str, kind: &str, name: &str) -> Result<Value, String> {
    eventually(&format!("{kind} {ns}/{name} in {}", cluster.kubeconfig.display()), WAIT, || async {
        copy(cluster, ns, kind, name)
    })
    .await
}

/// (uid, resourceVersion): a copy rewritten or recreated changes one of them.
fn identity(copy: &Value) -> (String, String) {
    let field = |f: &str| copy["metadata"][f].as_str().unwrap_or_default().to_string();
    (field("uid"), field("resourceVersion"))
}

/// Items 1–2 of issue 12 on a real two-shard kcp: tenants on both shards, one manager through
/// the front-proxy, SyncTargets and Placements reconciled and workloads synced on both, and
/// shard-1 restarted under the running manager.
pub async fn manager_follows_both_shards_of_a_sharded_kcp(w: std::sync::Arc<World>) -> TestResult {
    let kcp = Sharded::up().await?;
    let admin = kcp.kubeconfig.display().to_string();
    kcp.workspace_on(PROVIDER, "root").await?;
    let (code, out, err) = env::tmc(&["install", "--kubeconfig", &admin, "--workspace", PROVIDER]);
    ensure!(code == 0, "tmc install through the front-proxy failed: {out}{err}");
    for (tenant, shard) in TENANTS {
        kcp.workspace_on(tenant, shard).await?;
        kcp.bind(tenant).await?;
    }
    // Each shard with a binding publishes its own virtual-workspace URL in the slice.
    let urls = eventually("the endpoint slice listing both shards", WAIT, || async {
        let urls = kcp.endpoints()?;
        Ok((urls.iter().any(|u| u.starts_with("https://127.0.0.1:6444/"))
            && urls.iter().any(|u| u.starts_with("https://127.0.0.1:6445/")))
        .then_some(urls))
    })
    .await?;
    println!("endpoint slice: {urls:?}");

    let args = ["--cluster-address-allow", "127.0.0.1/32", "--syncer-heartbeat-interval", "2s"];
    let manager = Tmc::manager(&admin, PROVIDER, &args, kcp.log("manager")).process;
    // A SyncTarget on each shard (tenant sh-a's on cluster 0, sh-b's on cluster 1), placed by a
    // Placement of the tenant's; a Deployment and a ConfigMap in each placed namespace.
    let (mut placed, mut keys) = (vec![], vec![]);
    for (i, (tenant, shard)) in TENANTS.into_iter().enumerate() {
        keys.push(kcp.register(tenant, "phys", shard, &w.clusters[i]).await?);
        let ns =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web", "labels": {"app": "web"}}});
        kcp.kubectl(tenant, &["apply", "-f", "-"], Some(&ns.to_string()))?;
        let location = json!({"matchLabels": {"shard": shard}});
        kcp.kubectl(tenant, &["apply", "-f", "-"], Some(&placement("web", "web", location, None)))?;
        kcp.kubectl(tenant, &["-n", "web", "apply", "-f", "-"], Some(&deployment("web", 2)))?;
        let literal = format!("--from-literal=shard={shard}");
        kcp.kubectl(tenant, &["-n", "web", "create", "configmap", "cfg", &literal], None)?;
        placed.push((tenant, kcp.downstream_ns(tenant, "phys", tenant, "web").await?, &w.clusters[i]));
    }
    let mut before = vec![];
    for (tenant, dns, cluster) in &placed {
        wait_copy(cluster, dns, "deployment", "web").await?;
        before.push(identity(&wait_copy(cluster, dns, "configmap", "cfg").await?));
        eventually(&format!("status of {tenant}'s Deployment back in kcp"), WAIT, || async {
            let d: Value = serde_json::from_str(&kcp.kubectl(
                tenant,
                &["-n", "web", "get", "deployment", "web", "-o", "json"],
                None,
            )?)
            .map_err(|e| e.to_string())?;
            Ok((d["status"]["availableReplicas"] == 2).then_some(()))
        })
        .await?;
        let p: Value = serde_json::from_str(&kcp.kubectl(tenant, &["get", "placement", "web", "-o", "json"], None)?)
            .map_err(|e| e.to_string())?;
        ensure!(
            crate::placement::selected(&p) == ["phys"],
            "{tenant}'s Placement selected {:?}",
            crate::placement::selected(&p)
        );
    }
    println!("both shards: SyncTargets Ready, Placements scheduled, Deployments available through kcp");

    // shard-1 restarted under the running manager: sh-b's target keeps heartbeating through the
    // new shard process, a new object syncs, and the copies are neither rewritten nor recreated.
    let (tenant, dns, cluster) = (placed[1].0, placed[1].1.clone(), placed[1].2);
    let writes = cluster.write_requests("configmaps")?;
    let beat = kcp.heartbeat(tenant, "phys")?;
    ensure!(!beat.is_empty(), "sh-b's target shows no heartbeat");
    kcp.restart_shard()?;
    let restarted = std::time::Instant::now();
    eventually("a heartbeat of sh-b's target after the restart", WAIT, || async {
        Ok((kcp.heartbeat(tenant, "phys")? != beat).then_some(()))
    })
    .await?;
    kcp.wait_ready(tenant, "phys").await?;
    kcp.kubectl(tenant, &["-n", "web", "create", "configmap", "after-restart"], None)?;
    wait_copy(cluster, &dns, "configmap", "after-restart").await?;
    let followed = restarted.elapsed();
    // Not a speed target: kube's default watch backoff, raised by the refused connections of
    // the restart, held these watches for 40–80 s here; runtime::rewatch relists on the 410.
    ensure!(followed < Duration::from_secs(30), "the manager took {followed:.1?} to follow the restarted shard");
    for ((_, dns, cluster), was) in placed.iter().zip(&before) {
        let now = identity(&copy(cluster, dns, "configmap", "cfg")?.ok_or("cfg's copy is gone")?);
        ensure!(&now == was, "cfg's copy in {dns} changed across the shard restart: {was:?} → {now:?}");
    }
    let written = cluster.write_requests("configmaps")? - writes;
    ensure!(written == 1, "the restart cost {written} ConfigMap writes in the cluster, want 1 (the new object)");
    println!(
        "shard-1 restarted: a new object synced {followed:.1?} after it served again; 1 ConfigMap write, copies unchanged"
    );
    a_target_serves_a_tenant_on_the_other_shard(&kcp, &placed[0], &keys[0]).await?;
    drop(manager);
    managers_split_the_shards(&kcp, &admin, &placed, &keys).await
}

/// The Scheduled condition's reason of `tenant`'s Placement `name`.
fn scheduled(kcp: &Sharded, tenant: &str, name: &str) -> Result<(String, Value), String> {
    let p: Value = serde_json::from_str(&kcp.kubectl(tenant, &["get", "placement", name, "-o", "json"], None)?)
        .map_err(|e| e.to_string())?;
    Ok((crate::placement::condition(&p, "Scheduled").1.to_string(), p))
}

/// Item 2, second sentence: sh-a's target (on the root shard) serves tenant sh-b (on shard-1)
/// only with consent. Refused first (`WorkspaceNotAllowed`, nothing assigned); allowed, the
/// tenant's objects reach sh-a's cluster and their status comes back through shard-1, and the
/// copy stays put (the target's own syncer, which cannot see shard-1's workspaces, leaves it to
/// the guest syncer that can); consent withdrawn, the copy leaves and the finalizer goes.
async fn a_target_serves_a_tenant_on_the_other_shard(
    kcp: &Sharded,
    (host, _, cluster): &(&str, String, &Cluster),
    key: &str,
) -> TestResult {
    let tenant = TENANTS[1].0;
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "remote", "labels": {"app": "remote"}}});
    kcp.kubectl(tenant, &["apply", "-f", "-"], Some(&ns.to_string()))?;
    kcp.kubectl(tenant, &["-n", "remote", "create", "configmap", "cfg", "--from-literal=from=shard-1"], None)?;
    kcp.kubectl(tenant, &["-n", "remote", "apply", "-f", "-"], Some(&deployment("api", 1)))?;
    let location = json!({"workspace": host});
    kcp.kubectl(tenant, &["apply", "-f", "-"], Some(&placement("remote", "remote", location, None)))?;
    eventually("the cross-shard Placement refused without consent", WAIT, || async {
        let (reason, p) = scheduled(kcp, tenant, "remote")?;
        Ok((reason == "WorkspaceNotAllowed").then_some(p))
    })
    .await?;
    let labels = |ns: &str| kcp.kubectl(tenant, &["get", "namespace", ns, "-o", "jsonpath={.metadata.labels}"], None);
    ensure!(!labels("remote")?.contains(key), "assigned without consent: {}", labels("remote")?);

    let allow = json!({"spec": {"allowedWorkspaces": [tenant]}}).to_string();
    kcp.kubectl(host, &["patch", "synctarget", "phys", "--type=merge", "-p", &allow], None)?;
    let p = eventually("the cross-shard Placement scheduled once allowed", WAIT, || async {
        let (reason, p) = scheduled(kcp, tenant, "remote")?;
        Ok((reason == "Scheduled").then_some(p))
    })
    .await?;
    ensure!(p["status"]["selectedTargets"][0]["workspace"] == *host, "status {}", p["status"]);
    let dns = kcp.downstream_ns(host, "phys", tenant, "remote").await?;
    let was = identity(&wait_copy(cluster, &dns, "configmap", "cfg").await?);
    eventually("the Deployment's status back in shard-1's kcp", WAIT, || async {
        let out = kcp.kubectl(tenant, &["-n", "remote", "get", "deployment", "api", "-o", "json"], None)?;
        let d: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok((d["status"]["availableReplicas"] == 1).then_some(()))
    })
    .await?;
    let finalizers = || {
        kcp.kubectl(tenant, &["-n", "remote", "get", "configmap", "cfg", "-o", "jsonpath={.metadata.finalizers}"], None)
    };
    ensure!(finalizers()?.contains(key), "no finalizer of {key} on sh-b's ConfigMap: {}", finalizers()?);
    // The target's own syncer sees the copy too (same label, same cluster) but not its kcp
    // object: had it taken "not in my view" for "deleted", the copy would be gone or new.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = identity(&copy(cluster, &dns, "configmap", "cfg")?.ok_or("the cross-shard copy was deleted")?);
    ensure!(now == was, "the cross-shard copy was rewritten or recreated: {was:?} → {now:?}");
    println!("root's target serves shard-1's tenant with consent: copied, status back, copy left alone for 5 s");

    let revoke = json!({"spec": {"allowedWorkspaces": null}}).to_string();
    kcp.kubectl(host, &["patch", "synctarget", "phys", "--type=merge", "-p", &revoke], None)?;
    eventually("the copy removed once consent is withdrawn", WAIT, || async {
        Ok(copy(cluster, &dns, "configmap", "cfg")?.is_none().then_some(()))
    })
    .await?;
    eventually("the finalizer released once consent is withdrawn", WAIT, || async {
        Ok((!finalizers()?.contains(key)).then_some(()))
    })
    .await?;
    let (reason, _) = scheduled(kcp, tenant, "remote")?;
    ensure!(reason == "WorkspaceNotAllowed", "after revocation the Placement says {reason}");
    // Left to the split managers below, it would wait for a shard neither follows alone.
    kcp.kubectl(tenant, &["delete", "placement", "remote"], None)?;
    println!("consent withdrawn: the copy left the cluster and the finalizer the object");
    Ok(())
}

/// Item 3 of issue 12: a manager per shard (`--shards`), each electing its leader on its own
/// Lease, each syncing only its shard's tenants: with the shard-1 manager killed, sh-b's new
/// objects wait for it while sh-a's keep syncing, and its replacement picks them up.
async fn managers_split_the_shards(
    kcp: &Sharded,
    admin: &str,
    placed: &[(&str, String, &Cluster)],
    keys: &[String],
) -> TestResult {
    let start = |shard: &str| {
        let identity = format!("{shard}-manager");
        let args = [
            "--cluster-address-allow",
            "127.0.0.1/32",
            "--syncer-heartbeat-interval",
            "2s",
            "--shards",
            shard,
            "--leader-elect",
            "--leader-election-identity",
            &identity,
        ];
        Tmc::manager(admin, PROVIDER, &args, kcp.log(&format!("manager-{shard}")))
    };
    let lease_holder = |shard: &str| {
        let lease = format!("tmc-manager-{shard}");
        kcp.kubectl(
            PROVIDER,
            &["-n", "default", "get", "lease", &lease, "-o", "jsonpath={.spec.holderIdentity}", "--ignore-not-found"],
            None,
        )
    };
    let root = start("root");
    let mut shard1 = start("shard-1");
    for shard in ["root", "shard-1"] {
        eventually(&format!("the Lease tmc-manager-{shard} held by {shard}-manager"), WAIT, || async {
            Ok((lease_holder(shard)? == format!("{shard}-manager")).then_some(()))
        })
        .await?;
    }
    for ((tenant, dns, cluster), name) in placed.iter().zip(["split-a", "split-b"]) {
        kcp.kubectl(tenant, &["-n", "web", "create", "configmap", name], None)?;
        wait_copy(cluster, dns, "configmap", name).await?;
    }
    // Each manager's syncers hold only its own shard's target (its metrics name the key; the
    // gauge is refreshed every second, so the own target's series is waited for).
    for (m, own, other) in [(&root, &keys[0], &keys[1]), (&shard1, &keys[1], &keys[0])] {
        let synced = |metrics: &str, key: &str| {
            let label = format!("sync_target=\"{key}\"");
            metrics.lines().any(|l| l.starts_with("tmc_synced_objects{") && l.contains(&label))
        };
        let metrics = eventually(&format!("{own} in the metrics of its shard's manager"), WAIT, || async {
            let (_, metrics) = crate::ops::get(&format!("http://{}/metrics", m.metrics)).await?;
            Ok(synced(&metrics, own).then_some(metrics))
        })
        .await?;
        ensure!(!synced(&metrics, other), "a --shards manager's syncers hold the other shard's target {other}");
    }
    println!("two managers (--shards root, --shards shard-1): each leads its own Lease and syncs its own shard");

    // The shard-1 manager killed: sh-b's new object waits, sh-a's syncs; a new shard-1 manager
    // takes the Lease over (after it expires) and syncs what waited.
    drop(shard1);
    let ((a, a_dns, a_cluster), (b, b_dns, b_cluster)) = (&placed[0], &placed[1]);
    kcp.kubectl(b, &["-n", "web", "create", "configmap", "waits"], None)?;
    kcp.kubectl(a, &["-n", "web", "create", "configmap", "goes-on"], None)?;
    wait_copy(a_cluster, a_dns, "configmap", "goes-on").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        copy(b_cluster, b_dns, "configmap", "waits")?.is_none(),
        "sh-b's object was synced with its shard's manager dead: the root manager followed shard-1"
    );
    shard1 = start("shard-1");
    wait_copy(b_cluster, b_dns, "configmap", "waits").await?;
    drop((root, shard1));
    println!("shard-1's manager killed: sh-a synced on, sh-b waited for the replacement, which synced it");
    Ok(())
}
