//! Physical clusters for the e2e suite: etcd + kube-apiserver + controller-manager + scheduler +
//! kwok, started by `tests/cluster.sh` (the same script `make run` uses), stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster.sh")
}

impl Cluster {
    /// Starts a cluster with two fake nodes (blocking: run it on a blocking thread).
    pub fn start(name: &str) -> Result<Cluster, String> {
        Self::start_with(name, &[])
    }

    /// Starts a cluster with extra environment for `tests/cluster.sh` (e.g. `TMC_ETCD_ARGS`).
    pub fn start_with(name: &str, env: &[(&str, &str)]) -> Result<Cluster, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tmc-e2e-{name}-"))
            .disable_cleanup(std::env::var_os("TMC_E2E_KEEP").is_some())
            .tempdir()
            .map_err(|e| e.to_string())?;
        let out = Command::new(script())
            .args(["up", &dir.path().display().to_string(), "2"])
            .envs(env.iter().copied())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("tests/cluster.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!("cluster {name} did not start; logs in {}", dir.path().display()));
        }
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(Cluster { dir, kubeconfig })
    }

    /// Runs one `tests/cluster.sh` command on this cluster; its stdout.
    fn script(&self, command: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(script())
            .args([command, &self.dir.path().display().to_string()])
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("tests/cluster.sh {command}: {e}"))?;
        if !out.status.success() {
            return Err(format!("tests/cluster.sh {command} failed; logs in {}", self.dir.path().display()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// kill -9 of the kube-apiserver; etcd and the controllers keep running.
    pub fn kill_apiserver(&self) -> Result<(), String> {
        self.script("apiserver-kill", &[]).map(|_| ())
    }

    /// Starts the kube-apiserver again on the same port and etcd; returns once it is ready
    /// (blocking: run it on a blocking thread).
    pub fn start_apiserver(&self) -> Result<(), String> {
        self.script("apiserver-start", &[]).map(|_| ())
    }

    /// Deletes `key` in etcd behind the kube-apiserver's back; how many keys were deleted.
    pub fn etcd_delete(&self, key: &str) -> Result<u64, String> {
        let out = self.script("etcd-delete", &[key])?;
        out.parse().map_err(|e| format!("etcd-delete answered {out:?}: {e}"))
    }

    /// Compacts etcd to its current revision, so a watch resumed from before it gets 410 Gone;
    /// returns that revision.
    pub fn etcd_compact(&self) -> Result<u64, String> {
        let out = self.script("etcd-compact", &[])?;
        out.parse().map_err(|e| format!("etcd-compact answered {out:?}: {e}"))
    }

    pub fn kubeconfig_text(&self) -> String {
        std::fs::read_to_string(&self.kubeconfig).unwrap_or_default()
    }

    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Runs kubectl against this cluster; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl against this cluster with `stdin`; returns stdout.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The kube-apiserver's count of write requests (create, update, patch, apply, delete) for
    /// `resource` so far, from its own /metrics.
    pub fn write_requests(&self, resource: &str) -> Result<u64, String> {
        let metrics = self.kubectl(&["get", "--raw", "/metrics"])?;
        Ok(metrics
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
            .filter(|l| l.contains(&format!("resource=\"{resource}\"")))
            .filter(|l| {
                ["POST", "PUT", "PATCH", "APPLY", "DELETE"].iter().any(|v| l.contains(&format!("verb=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["down", &self.dir.path().display().to_string()]).status();
    }
}
