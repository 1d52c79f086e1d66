//! A real Prometheus server (Debian's package, fetched by `tests/servers.sh prometheus`) that
//! scrapes one target every second, and its `promtool`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::env::{eventually, free_port};

/// The directory holding `prometheus` and `promtool`: `$TMC_PROMETHEUS_DIR`, or fetched (and
/// cached) by `tests/servers.sh prometheus`.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("TMC_PROMETHEUS_DIR") {
        return Ok(dir.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers.sh");
    let out = Command::new(script)
        .arg("prometheus")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("run tests/servers.sh: {e}"))?;
    if !out.status.success() {
        return Err("tests/servers.sh prometheus failed (see its output above)".into());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A Prometheus process with its own temporary directory, killed on drop.
pub struct Prometheus {
    child: Child,
    pub dir: tempfile::TempDir,
    /// e.g. `http://127.0.0.1:4321`
    pub url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) every second, and waits
    /// until it answers.
    pub async fn start(bin: &Path, target: &str) -> Result<Prometheus, String> {
        let dir = tempfile::Builder::new()
            .prefix("tmc-e2e-prometheus")
            .disable_cleanup(std::env::var_os("TMC_E2E_KEEP").is_some())
            .tempdir()
            .map_err(|e| e.to_string())?;
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tmc-manager\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("prometheus.log")).map_err(|e| e.to_string())?;
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin.join("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.join("prometheus").display()))?;
        let prometheus = Prometheus { child, dir, url: format!("http://{address}") };
        let ready = format!("{}/-/ready", prometheus.url);
        eventually("Prometheus to be ready", Duration::from_secs(60), || async {
            Ok(crate::ops::get(&ready).await.ok().filter(|(status, _)| *status == 200).map(|_| ()))
        })
        .await
        .map_err(|e| format!("{e}; see {}", prometheus.log().display()))?;
        Ok(prometheus)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    /// The result vector of an instant PromQL query (`query` needs no URL escaping).
    pub async fn query(&self, query: &str) -> Result<Vec<serde_json::Value>, String> {
        let (status, body) = crate::ops::get(&format!("{}/api/v1/query?query={query}", self.url)).await?;
        let answer: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("query {query}: {status}, not JSON ({e}): {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("query {query}: {status} {body}"));
        }
        Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Runs `promtool check metrics` on `body`: Ok, or what promtool said.
pub fn check_metrics(bin: &Path, body: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(bin.join("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e}"))?;
    child.stdin.take().expect("piped").write_all(body.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && said.trim().is_empty() { Ok(()) } else { Err(format!("{}: {said}", out.status)) }
}
