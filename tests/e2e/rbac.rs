//! Least privilege, proved (issue 9), on both sides:
//!
//! - kcp: a manager running as a plain kcp user bound only to config/kcp-rbac syncs objects,
//!   reads Secrets through the export's claims, labels namespaces for a Placement, posts Events
//!   and adds and releases finalizers. (The shared manager runs as the kcp admin, which proves
//!   nothing about RBAC.)
//! - clusters: a syncer whose cluster identity is a ServiceAccount holding exactly the RBAC
//!   `tmc syncer-manifest` prints syncs all four default kinds, reverts drift and cleans up, in
//!   pull mode and (as a push-mode kubeconfig) in the RBAC-limited manager above; and that
//!   identity cannot read a Secret in a namespace it did not create.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kcp_tmc::kcp::workspace;
use kcp_tmc::syncer::naming::target_key;
use serde_json::json;

use crate::env::{self, MANAGER_USER_TOKEN, TestResult, Tmc, eventually};
use crate::syncer::{
    WAIT, assigned_namespace, deployment, downstream_get, downstream_ns, events, list, upstream_get, wait_downstream,
    wait_ready_reason,
};
use crate::{World, ensure};

const PROVIDER: &str = "root:rbac-provider";
const TENANT: &str = "root:rbac-tenant";
const PULL_TENANT: &str = "root:rbac-pull";

fn kustomize(dir: &str) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let out = Command::new("kubectl").arg("kustomize").arg(&path).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("kubectl kustomize {dir}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubeconfig` with every user's credentials replaced by the bearer token `token`.
fn with_token(kubeconfig: &str, token: &str) -> Result<String, String> {
    let mut kc: serde_yaml::Value = serde_yaml::from_str(kubeconfig).map_err(|e| e.to_string())?;
    for user in kc["users"].as_sequence_mut().ok_or("kubeconfig without users")? {
        let mut creds = serde_yaml::Mapping::new();
        creds.insert("token".into(), token.into());
        user["user"] = serde_yaml::Value::Mapping(creds);
    }
    serde_yaml::to_string(&kc).map_err(|e| e.to_string())
}

/// A cluster identity holding exactly the RBAC of `tmc syncer-manifest`.
pub struct ManifestIdentity {
    /// A kubeconfig for the cluster whose user is the manifest's ServiceAccount.
    pub kubeconfig: PathBuf,
    /// Its user name, `system:serviceaccount:<namespace>:syncer-<target>`.
    pub username: String,
}

impl ManifestIdentity {
    /// Applies `tmc syncer-manifest <target>` (syncer namespace `namespace`) to cluster `index`
    /// as its admin would, and takes a token of the manifest's ServiceAccount.
    pub fn apply(w: &World, index: usize, ws: &str, target: &str, namespace: &str) -> Result<Self, String> {
        let kcp_kubeconfig = w.kcp.kubeconfig.display().to_string();
        let (code, manifest, err) = env::tmc(&[
            "syncer-manifest",
            target,
            "--workspace",
            ws,
            "--kcp-kubeconfig",
            &kcp_kubeconfig,
            "--image",
            "registry.example/kcp-tmc:dev",
            "--namespace",
            namespace,
        ]);
        ensure!(code == 0, "tmc syncer-manifest failed: {err}");
        let cluster = &w.clusters[index];
        cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest)?;
        let account = format!("syncer-{target}");
        let token = cluster.kubectl(&["-n", namespace, "create", "token", &account, "--duration=1h"])?;
        let kubeconfig = w.kcp.dir.path().join(format!("{target}-cluster{index}.kubeconfig"));
        std::fs::write(&kubeconfig, with_token(&cluster.kubeconfig_text(), token.trim())?)
            .map_err(|e| e.to_string())?;
        Ok(Self { kubeconfig, username: format!("system:serviceaccount:{namespace}:{account}") })
    }

    /// kubectl as this identity: (succeeded, stdout and stderr).
    pub fn kubectl(&self, args: &[&str]) -> Result<(bool, String), String> {
        let out = Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    /// `kubectl auth can-i <what>` as this identity.
    pub fn can_i(&self, what: &[&str]) -> Result<bool, String> {
        let (_, said) = self.kubectl(&[&["auth", "can-i"], what].concat())?;
        match said.lines().next().map(str::trim) {
            Some("yes") => Ok(true),
            Some("no") => Ok(false),
            _ => Err(format!("kubectl auth can-i {what:?}: {said}")),
        }
    }
}

pub async fn manager_runs_with_the_shipped_kcp_rbac(w: Arc<World>) -> TestResult {
    let admin = w.kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &admin, "--workspace", PROVIDER, "--create-workspace"]);
    ensure!(code == 0, "tmc install failed: {out}{err}");
    // Exactly what an operator applies: the provider's role, and path resolution in the parent.
    w.kcp.kubectl(PROVIDER, &["apply", "-f", "-"], Some(&kustomize("config/kcp-rbac")?))?;
    w.kcp.kubectl("root", &["apply", "-f", "-"], Some(&kustomize("config/kcp-rbac/parent")?))?;
    // Path reads in every workspace, granted in the shard's system:admin with the shard admin.
    let system_admin = Command::new("kubectl")
        .args([&format!("--kubeconfig={}", w.kcp.kubeconfig.display()), "--context=system:admin"])
        .args(["apply", "-k", concat!(env!("CARGO_MANIFEST_DIR"), "/config/kcp-rbac/system-admin")])
        .output()?;
    let said = String::from_utf8_lossy(&system_admin.stderr);
    ensure!(system_admin.status.success(), "applying config/kcp-rbac/system-admin: {said}");

    w.bind_tenant(TENANT, PROVIDER, Duration::from_secs(60)).await?;
    let target = "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: rbac-east}\nspec: {}\n";
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(target))?;

    let kubeconfig = w.kcp.dir.path().join("rbac-manager.kubeconfig");
    std::fs::write(&kubeconfig, with_token(&std::fs::read_to_string(&w.kcp.kubeconfig)?, MANAGER_USER_TOKEN)?)?;
    let kubeconfig = kubeconfig.display().to_string();
    // The user really is unprivileged: it cannot read Secrets in the provider workspace.
    let denied = Command::new("kubectl")
        .args([&format!("--kubeconfig={kubeconfig}"), &format!("--server={}", w.kcp.server(PROVIDER))])
        .args(["get", "secrets", "-A"])
        .output()?;
    let said = String::from_utf8_lossy(&denied.stderr);
    ensure!(!denied.status.success() && said.contains("orbidden"), "secrets must be forbidden: {said}");

    // As config/manager runs it: the shipped RBAC must cover the Lease too.
    let log = w.kcp.dir.path().join("rbac-manager.log");
    let mut manager =
        Tmc::manager(&kubeconfig, PROVIDER, &["--leader-elect", "--cluster-address-allow", "127.0.0.1/32"], log)
            .process;
    let with_log = |e: String, m: &Tmc| format!("{e}\nmanager log:\n{}", m.output());
    let message = wait_ready_reason(&w, TENANT, "rbac-east", "WaitingForSyncer").await;
    message.map_err(|e| with_log(e, &manager))?;

    // A push-mode target whose kubeconfig (a Secret, read through the claim) holds exactly the
    // syncer manifest's RBAC on cluster 0: the same minimum serves both modes.
    let identity = ManifestIdentity::apply(&w, 0, TENANT, "rbac-push", "kcp-tmc-rbac-push")?;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "rbac-push-kubeconfig", "namespace": "default" },
        "stringData": { "kubeconfig": std::fs::read_to_string(&identity.kubeconfig)? },
    });
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(&secret.to_string()))?;
    let target = json!({
        "apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget",
        "metadata": { "name": "rbac-push", "labels": { "rbac": "push" } },
        "spec": { "kubeconfigSecretRef": { "namespace": "default", "name": "rbac-push-kubeconfig" } },
    });
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(&target.to_string()))?;
    wait_ready_reason(&w, TENANT, "rbac-push", "Ready").await.map_err(|e| with_log(e, &manager))?;

    // A Placement assigns the namespace (the manager labels it); a ConfigMap and a Secret sync,
    // and a Deployment the cluster rejects is reported with an Event.
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: rbac-app, labels: {app: rbac-app}}\n";
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(ns))?;
    let mut bad: serde_json::Value = serde_json::from_str(&deployment("bad", 1))?;
    bad["spec"]["template"]["spec"]["containers"][0]["name"] = json!("Web_Server");
    let objects = list(&[
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v"}}).to_string(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"pw": "rbac-pw"}})
            .to_string(),
        bad.to_string(),
    ]);
    w.kcp.kubectl(TENANT, &["-n", "rbac-app", "apply", "-f", "-"], Some(&objects))?;
    let placement = json!({
        "apiVersion": "placement.kcp.io/v1alpha1", "kind": "Placement", "metadata": { "name": "rbac" },
        "spec": { "namespaceSelector": { "matchLabels": { "app": "rbac-app" } },
                  "locationSelector": { "matchLabels": { "rbac": "push" } } },
    });
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(&placement.to_string()))?;
    let key = target_key(&workspace::resolve(&w.clients, &TENANT.parse().unwrap()).await?, "rbac-push");
    eventually("the Placement assigns rbac-app", WAIT, || async {
        let ns = w.kcp.kubectl(TENANT, &["get", "namespace", "rbac-app", "-o", "json"], None)?;
        let ns: serde_json::Value = serde_json::from_str(&ns).map_err(|e| e.to_string())?;
        Ok((ns["metadata"]["labels"][format!("state.tmc.kcp.io/{key}")] == "Sync").then_some(()))
    })
    .await
    .map_err(|e| with_log(e, &manager))?;
    let dns = downstream_ns(&w, TENANT, "rbac-push", TENANT, "rbac-app").await;
    wait_downstream(&w, 0, &dns, "configmap", "cfg").await.map_err(|e| with_log(e, &manager))?;
    let copy = wait_downstream(&w, 0, &dns, "secret", "creds").await?;
    ensure!(copy["data"]["pw"] == "cmJhYy1wdw==", "synced Secret data {}", copy["data"]);
    let finalizer = format!("tmc.kcp.io/syncer-{key}");
    let cfg = upstream_get(&w, TENANT, "rbac-app", "configmap", "cfg")?.ok_or("upstream cfg gone")?;
    ensure!(cfg["metadata"]["finalizers"].to_string().contains(&finalizer), "finalizers {}", cfg["metadata"]);
    eventually("a SyncRejected Event for the invalid Deployment", WAIT, || async {
        Ok(events(&w, TENANT, "rbac-app", "SyncRejected")?.iter().any(|e| e.contains("bad")).then_some(()))
    })
    .await
    .map_err(|e| with_log(e, &manager))?;
    // Deleting in kcp deletes the copy and releases the finalizer.
    w.kcp.kubectl(TENANT, &["-n", "rbac-app", "delete", "configmap", "cfg", "--wait=false"], None)?;
    eventually("cfg gone downstream and upstream", WAIT, || async {
        let down = downstream_get(&w, 0, &dns, "configmap", "cfg")?;
        let up = upstream_get(&w, TENANT, "rbac-app", "configmap", "cfg")?;
        Ok((down.is_none() && up.is_none()).then_some(()))
    })
    .await
    .map_err(|e| with_log(e, &manager))?;

    ensure!(manager.running(), "the manager exited:\n{}", manager.output());
    let log = manager.output();
    let refused: Vec<&str> = log.lines().filter(|l| l.to_lowercase().contains("forbidden")).collect();
    ensure!(refused.is_empty(), "the manager was refused something:\n{}", refused.join("\n"));
    Ok(())
}

pub async fn pull_mode_syncer_runs_with_exactly_the_manifest_rbac(w: Arc<World>) -> TestResult {
    let ws = PULL_TENANT;
    w.bind_tenant(ws, crate::PROVIDER, Duration::from_secs(60)).await?;
    let target = "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: pull-least}\nspec: {}\n";
    w.kcp.kubectl(ws, &["apply", "-f", "-"], Some(target))?;
    wait_ready_reason(&w, ws, "pull-least", "WaitingForSyncer").await?;
    let identity = ManifestIdentity::apply(&w, 1, ws, "pull-least", "kcp-tmc-rbac-pull")?;
    let key = target_key(&workspace::resolve(&w.clients, &ws.parse().unwrap()).await?, "pull-least");
    assigned_namespace(&w, ws, "least", &key)?;
    let objects = list(&[
        deployment("web", 1),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        .to_string(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v"}}).to_string(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"pw": "least-pw"}})
            .to_string(),
    ]);
    w.kcp.kubectl(ws, &["-n", "least", "apply", "-f", "-"], Some(&objects))?;

    let syncer = Tmc::spawn(
        &[
            "syncer",
            "--kubeconfig",
            &w.kcp.kubeconfig.display().to_string(),
            "--workspace",
            ws,
            "--sync-target-name",
            "pull-least",
            "--downstream-kubeconfig",
            &identity.kubeconfig.display().to_string(),
            "--heartbeat-interval",
            "1s",
            "--metrics-port",
            &env::free_port().to_string(),
            "--health-port",
            &env::free_port().to_string(),
        ],
        w.kcp.dir.path().join("rbac-pull-syncer.log"),
    );
    let with_log = |e: String| format!("{e}\nsyncer log:\n{}", syncer.output());
    wait_ready_reason(&w, ws, "pull-least", "Ready").await.map_err(with_log)?;
    let dns = downstream_ns(&w, ws, "pull-least", ws, "least").await;
    for (kind, name) in [("deployment", "web"), ("service", "web"), ("configmap", "cfg"), ("secret", "creds")] {
        wait_downstream(&w, 1, &dns, kind, name).await.map_err(with_log)?;
    }
    let ns = downstream_get(&w, 1, "", "namespace", &dns)?.ok_or("downstream namespace gone")?;
    let annotated = &ns["metadata"]["annotations"]["tmc.kcp.io/syncer-identity"];
    ensure!(annotated == identity.username.as_str(), "identity annotation {annotated}");
    eventually("pull-mode status up", WAIT, || async {
        let d = upstream_get(&w, ws, "least", "deployment", "web")?.ok_or("gone")?;
        Ok((d["status"]["availableReplicas"] == 1).then_some(()))
    })
    .await
    .map_err(with_log)?;

    // Drift, seen through the per-namespace Secret watch and the cluster-wide ConfigMap watch.
    let cluster = &w.clusters[1];
    cluster.kubectl(&["-n", &dns, "patch", "secret", "creds", "--type=merge", "-p", r#"{"stringData":{"pw":"x"}}"#])?;
    cluster.kubectl(&["-n", &dns, "delete", "configmap", "cfg"])?;
    eventually("the Secret reverted and the ConfigMap recreated", Duration::from_secs(30), || async {
        let s = downstream_get(&w, 1, &dns, "secret", "creds")?.ok_or("secret gone")?;
        let c = downstream_get(&w, 1, &dns, "configmap", "cfg")?;
        Ok((s["data"]["pw"] == "bGVhc3QtcHc=" && c.is_some()).then_some(()))
    })
    .await
    .map_err(with_log)?;

    // It can read Secrets where it created the namespace, and nowhere else.
    ensure!(identity.can_i(&["get", "secrets", "-n", &dns])?, "cannot read Secrets in its own namespace");
    for what in [
        &["list", "secrets", "--all-namespaces"][..],
        &["get", "secrets", "-n", "kcp-tmc-rbac-pull"],
        &["get", "secrets", "-n", "kube-system"],
        &["patch", "deployments", "-n", "kube-system"],
        &["delete", "namespace/kube-system"],
    ] {
        ensure!(!identity.can_i(what)?, "the syncer's identity can {what:?}");
    }
    let (read, said) = identity.kubectl(&["-n", "kcp-tmc-rbac-pull", "get", "secret", "syncer-pull-least-kcp"])?;
    ensure!(!read && said.contains("cannot get resource \"secrets\""), "read another namespace's Secret: {said}");
    let refused: Vec<String> =
        syncer.output().lines().filter(|l| l.to_lowercase().contains("forbidden")).map(Into::into).collect();
    ensure!(refused.is_empty(), "the syncer was refused something:\n{}", refused.join("\n"));

    // Deletion, then unassignment: copies, the namespace (deleted through the namespace role)
    // and the finalizers go.
    w.kcp.kubectl(ws, &["-n", "least", "delete", "secret", "creds", "--wait=false"], None)?;
    eventually("the Secret gone downstream and upstream", WAIT, || async {
        let down = downstream_get(&w, 1, &dns, "secret", "creds")?;
        let up = upstream_get(&w, ws, "least", "secret", "creds")?;
        Ok((down.is_none() && up.is_none()).then_some(()))
    })
    .await
    .map_err(with_log)?;
    w.kcp.kubectl(ws, &["label", "namespace", "least", &format!("state.tmc.kcp.io/{key}-")], None)?;
    eventually("the downstream namespace deleted", WAIT, || async {
        let ns = downstream_get(&w, 1, "", "namespace", &dns)?;
        Ok(ns.is_none_or(|n| n["status"]["phase"] == "Terminating").then_some(()))
    })
    .await
    .map_err(with_log)?;
    eventually("upstream finalizers released", WAIT, || async {
        let c = upstream_get(&w, ws, "least", "configmap", "cfg")?.ok_or("upstream cfg gone")?;
        Ok((!c["metadata"]["finalizers"].to_string().contains("tmc.kcp.io/syncer")).then_some(()))
    })
    .await
    .map_err(with_log)?;
    Ok(())
}
