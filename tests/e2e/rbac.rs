//! The kcp RBAC shipped in config/kcp-rbac is enough for `tmc manager`: a manager running as a
//! plain kcp user bound only to it reconciles a SyncTarget. (The shared manager runs as the kcp
//! admin, which proves nothing about RBAC.)

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::env::{self, MANAGER_USER_TOKEN, TestResult, Tmc, eventually};
use crate::{World, ensure};

const PROVIDER: &str = "root:rbac-provider";
const TENANT: &str = "root:rbac-tenant";

fn kustomize(dir: &str) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let out = Command::new("kubectl").arg("kustomize").arg(&path).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("kubectl kustomize {dir}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The admin kubeconfig with every user's credentials replaced by the manager user's token.
fn user_kubeconfig(admin: &Path) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(admin)?)?;
    for user in kc["users"].as_sequence_mut().ok_or("kubeconfig without users")? {
        let mut creds = serde_yaml::Mapping::new();
        creds.insert("token".into(), MANAGER_USER_TOKEN.into());
        user["user"] = serde_yaml::Value::Mapping(creds);
    }
    Ok(serde_yaml::to_string(&kc)?)
}

pub async fn manager_runs_with_the_shipped_kcp_rbac(w: Arc<World>) -> TestResult {
    let admin = w.kcp.kubeconfig.display().to_string();
    let (code, out, err) =
        env::tmc(&["install", "--kubeconfig", &admin, "--workspace", PROVIDER, "--create-workspace"]);
    ensure!(code == 0, "tmc install failed: {out}{err}");
    // Exactly what an operator applies: the provider's role, and path resolution in the parent.
    w.kcp.kubectl(PROVIDER, &["apply", "-f", "-"], Some(&kustomize("config/kcp-rbac")?))?;
    w.kcp.kubectl("root", &["apply", "-f", "-"], Some(&kustomize("config/kcp-rbac/parent")?))?;

    w.bind_tenant(TENANT, PROVIDER, Duration::from_secs(60)).await?;
    let target = "apiVersion: sync.kcp.io/v1alpha1\nkind: SyncTarget\nmetadata: {name: rbac-east}\nspec: {}\n";
    w.kcp.kubectl(TENANT, &["apply", "-f", "-"], Some(target))?;

    let kubeconfig = w.kcp.dir.path().join("rbac-manager.kubeconfig");
    std::fs::write(&kubeconfig, user_kubeconfig(&w.kcp.kubeconfig)?)?;
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
    let reason = eventually("the RBAC-limited manager writes the SyncTarget's status", Duration::from_secs(60), || {
        let w = w.clone();
        async move {
            let out = w.kcp.kubectl(
                TENANT,
                &[
                    "get",
                    "synctarget",
                    "rbac-east",
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Ready")].reason}"#,
                ],
                None,
            )?;
            Ok((!out.is_empty()).then_some(out))
        }
    })
    .await
    .map_err(|e| format!("{e}\nmanager log:\n{}", manager.output()))?;
    ensure!(reason == "WaitingForSyncer", "Ready reason {reason}");
    ensure!(manager.running(), "the manager exited:\n{}", manager.output());
    let log = manager.output();
    ensure!(!log.contains("forbidden"), "the manager was refused something:\n{log}");
    Ok(())
}
