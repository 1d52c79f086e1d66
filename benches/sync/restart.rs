//! What a restart costs a platform team: a manager holding every synced object gets SIGTERM and a
//! new one starts; how long until `/readyz` answers 200, how long until it is settled (its cluster
//! views hold every synced object again and no key waits in any queue), and how many writes it
//! makes to kcp and to the clusters meanwhile — counted by the API servers themselves
//! (`apiserver_request_total`), not by the manager. Also the cost of unplaced objects.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::api::PostParams;
use serde_json::json;

use crate::report::proc_mb;
use crate::setup::{Bench, start_manager};

/// Write verbs as `apiserver_request_total` labels them.
const WRITE_VERBS: &[&str] = &["POST", "PUT", "PATCH", "APPLY", "DELETE"];

/// What one restart showed.
pub struct Restart {
    pub ready_s: f64,
    pub settled_s: f64,
    /// Writes by resource (subresource after a slash), in kcp and in both clusters, from just
    /// before the SIGTERM until 5 s after settling.
    pub kcp_writes: BTreeMap<String, u64>,
    pub cluster_writes: BTreeMap<String, u64>,
    /// kcp's writes over the same span by `resource by <client>`, from kcp's audit log (which
    /// leaves out the workload kinds, see [`crate::audit`]).
    pub kcp_writers: BTreeMap<String, u64>,
    /// Objects the old manager's syncers held in their clusters (`tmc_synced_objects`).
    pub synced: u64,
    pub hwm_mb: f64,
}

impl Restart {
    /// Writes that count against "a restart writes nothing": to stored objects, leaving out the
    /// SyncTargets' status (heartbeats: they say the syncer is alive and run on their own clock;
    /// shown apart), access reviews (POSTs that store nothing: kcp's virtual workspaces authorize
    /// through SubjectAccessReviews, the syncer asks who it is) and Leases (the servers' own; the
    /// bench's manager runs without leader election).
    ///
    /// A kcp write the audit log gives to another client (kcp's own controllers, the peer) is
    /// taken off its resource's count, never more than that count; every other write, audited
    /// or not, is charged to kcp-tmc.
    pub fn writes(&self) -> u64 {
        let counted = |r: &str| r != "synctargets/status" && !r.ends_with("reviews") && r != "leases";
        let others = self.others();
        let kcp = self
            .kcp_writes
            .iter()
            .filter(|(r, _)| counted(r))
            .map(|(r, n)| n.saturating_sub(*others.get(r).unwrap_or(&0)));
        kcp.chain(self.cluster_writes.iter().filter(|(r, _)| counted(r)).map(|(_, n)| *n)).sum()
    }

    /// kcp writes the audit log gives to clients other than kcp-tmc, by resource[/subresource]
    /// as `apiserver_request_total` names it (kcp's audit names an export's resource with its
    /// identity, `synctargets:<identity>`; the counters do not).
    pub fn others(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (k, n) in &self.kcp_writers {
            let (resource, client) = k.split_once(" by ").unwrap_or((k, ""));
            if client == "kcp-tmc" {
                continue;
            }
            let plain = match resource.split_once(':') {
                Some((name, rest)) => match rest.split_once('/') {
                    Some((_, sub)) => format!("{name}/{sub}"),
                    None => name.to_string(),
                },
                None => resource.to_string(),
            };
            *out.entry(plain).or_default() += n;
        }
        out
    }
}

/// Write requests by resource[/subresource] from an API server's /metrics text.
pub fn write_counts(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            line[start..].split('"').next()
        };
        if !WRITE_VERBS.iter().any(|v| label("verb") == Some(v)) {
            continue;
        }
        let resource = match (label("resource").unwrap_or_default(), label("subresource").unwrap_or_default()) {
            (r, "") => r.to_string(),
            (r, s) => format!("{r}/{s}"),
        };
        let count = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
        *out.entry(resource).or_default() += count;
    }
    out
}

/// `after - before`, by key, leaving out what did not change.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The sum of every sample of metric `name` in a Prometheus text.
fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP/1.0 GET of `path` on `addr` (the manager's metrics and health ports): status and
/// body, or `None` while nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

impl Bench {
    fn kcp_metrics(&self) -> String {
        let out = Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kcp.kubeconfig.display()))
            .arg(format!("--server=https://127.0.0.1:{}", self.kcp.port))
            .args(["get", "--raw", "/metrics"])
            .output()
            .expect("kubectl");
        assert!(out.status.success(), "kcp /metrics: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cluster_writes(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for c in &self.clusters {
            for (k, n) in write_counts(&c.kubectl(&["get", "--raw", "/metrics"]).unwrap()) {
                *out.entry(k).or_default() += n;
            }
        }
        out
    }

    pub async fn manager_metrics(&self) -> String {
        http_get(&self.manager.metrics, "/metrics").await.map(|(_, body)| body).unwrap_or_default()
    }

    /// Waits until the running manager has no key queued and none waiting for a retry, seen for
    /// a full second, so that what the restart writes is the restart's cost and not work the old
    /// manager had left (a finalizer write that lost a race retries after its key's backoff,
    /// and since the copy no longer waits for the finalizer, "every copy in the cluster" does not
    /// imply "every finalizer written"). Gives up after 120 s and says what was left.
    async fn wait_quiet(&self) {
        let start = Instant::now();
        let mut quiet_since: Option<Instant> = None;
        loop {
            let metrics = self.manager_metrics().await;
            let (depth, failing) =
                (metric_sum(&metrics, "tmc_workqueue_depth"), metric_sum(&metrics, "tmc_workqueue_failing_keys"));
            if depth == 0.0 && failing == 0.0 {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(1) {
                    eprintln!("bench: restart: the old manager is quiet after {:.1} s", start.elapsed().as_secs_f64());
                    return;
                }
            } else {
                quiet_since = None;
            }
            if start.elapsed() > Duration::from_secs(120) {
                eprintln!(
                    "bench: restart: the old manager still has {depth} keys queued and {failing} failing after 120 s; restarting anyway"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM to the manager, a new one started, timed and counted (see the module docs).
    pub async fn restart(&mut self) -> Restart {
        self.wait_quiet().await;
        let synced = metric_sum(&self.manager_metrics().await, "tmc_synced_objects") as u64;
        let (kcp_before, clusters_before) = (write_counts(&self.kcp_metrics()), self.cluster_writes());
        let audited = self.audit.mark();
        let kcp_log_from = std::fs::metadata(self.kcp.log()).map_or(0, |m| m.len());
        self.manager.process.signal("TERM");
        let stopping = Instant::now();
        while self.manager.process.running() {
            assert!(stopping.elapsed() < Duration::from_secs(60), "the manager did not stop within 60 s of SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        self.manager = start_manager(&self.kcp, "manager-restarted.log");
        let health = self.manager.health.clone();
        let mut ready = None;
        let mut settled_since: Option<Instant> = None;
        // Settled: ready, the cluster views hold what the old manager held, no key waits (to run
        // or for a retry); seen
        // for one full second (a queue can be empty between two waves of a relist).
        while settled_since.is_none_or(|s| s.elapsed() < Duration::from_secs(1)) {
            assert!(started.elapsed() < Duration::from_secs(600), "not settled within 600 s of the restart");
            tokio::time::sleep(Duration::from_millis(50)).await;
            if ready.is_none() && http_get(&health, "/readyz").await.is_some_and(|(s, _)| s == 200) {
                ready = Some(started.elapsed());
            }
            let metrics = self.manager_metrics().await;
            let calm = ready.is_some()
                && metric_sum(&metrics, "tmc_synced_objects") as u64 >= synced
                && metric_sum(&metrics, "tmc_workqueue_depth") == 0.0
                && metric_sum(&metrics, "tmc_workqueue_failing_keys") == 0.0;
            settled_since = match (calm, settled_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
        }
        let settled = settled_since.unwrap().duration_since(started);
        tokio::time::sleep(Duration::from_secs(5)).await;
        keep_kcp_log(&self.kcp.log(), kcp_log_from);
        Restart {
            ready_s: ready.unwrap().as_secs_f64(),
            settled_s: settled.as_secs_f64(),
            kcp_writes: delta(&kcp_before, &write_counts(&self.kcp_metrics())),
            cluster_writes: delta(&clusters_before, &self.cluster_writes()),
            kcp_writers: self.audit.writers_since(audited),
            synced,
            hwm_mb: proc_mb(self.manager_pid(), "VmHWM"),
        }
    }

    /// KB of peak memory per object in a namespace no Placement selects: `count` ConfigMaps of
    /// 1 KiB written into a bound workspace, the manager's VmHWM before and after (10 s after
    /// the last write, for its watches to deliver them).
    pub async fn unplaced_kb_per_object(&self, count: usize) -> f64 {
        let ws = &self.workspaces[0];
        self.kcp.kubectl(ws, &["create", "namespace", "unplaced"], None).unwrap();
        let before = proc_mb(self.manager_pid(), "VmHWM");
        let api = self.kcp_api(ws, "unplaced");
        let cm = |n: usize| -> k8s_openapi::api::core::v1::ConfigMap {
            serde_json::from_value(
                json!({"metadata": {"name": format!("unplaced-{n}")}, "data": {"payload": "u".repeat(1024)}}),
            )
            .unwrap()
        };
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(0..count)
            .map(|n| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &cm(n)).await }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = proc_mb(self.manager_pid(), "VmHWM");
        eprintln!("bench: unplaced: VmHWM {before:.1} MB → {after:.1} MB over {count} ConfigMaps of 1 KiB");
        (after - before).max(0.0) * 1024.0 / count as f64
    }
}

/// Keeps what kcp logged from `from` (the restart's span) in `target/bench-restart-kcp.log`, and
/// says how many of its lines name ClusterRoleBindings: writes to them were counted in some
/// restarts, and no client of the audit log made them (see docs/performance.md).
fn keep_kcp_log(log: &std::path::Path, from: u64) {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let read = std::fs::File::open(log).and_then(|mut f| {
        f.seek(std::io::SeekFrom::Start(from))?;
        f.read_to_string(&mut text)
    });
    if let Err(e) = read {
        eprintln!("bench: restart: cannot read kcp's log {}: {e}", log.display());
        return;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), std::path::PathBuf::from);
    let kept = target.join("bench-restart-kcp.log");
    let crbs = text.lines().filter(|l| l.to_lowercase().contains("clusterrolebinding")).count();
    match std::fs::write(&kept, &text) {
        Ok(()) => eprintln!(
            "bench: restart: kcp logged {} lines meanwhile, {crbs} naming ClusterRoleBindings (kept in {})",
            text.lines().count(),
            kept.display()
        ),
        Err(e) => eprintln!("bench: restart: cannot keep kcp's log in {}: {e}", kept.display()),
    }
}
