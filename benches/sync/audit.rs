//! Who wrote what in kcp during the restart: kcp's own audit log, so that a write the request
//! counters show can be told apart as kcp-tmc's (its `User-Agent` is `kcp-tmc/<version>`) or
//! another client's (kcp's controllers, the peer, the bench's kubectl).
//!
//! The policy leaves out reads and the kinds the bench writes in bulk (its workload kinds,
//! events, Leases, access reviews), so auditing costs kcp next to nothing during the timed runs:
//! a write of kcp-tmc to those kinds is still counted by `apiserver_request_total` and charged
//! to it, never explained away.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  verbs: [get, list, watch]
- level: None
  resources:
  - {group: "", resources: [configmaps, events]}
  - {group: apps, resources: [deployments]}
  - {group: bench.example.com, resources: [widgets]}
  - {group: coordination.k8s.io, resources: [leases]}
  - {group: authorization.k8s.io}
  - {group: authentication.k8s.io}
- level: Metadata
"#;

/// kcp's audit log of one bench run.
pub struct AuditLog {
    /// Holds the policy and the log (kept with `TMC_E2E_KEEP`).
    _dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl AuditLog {
    pub fn new() -> AuditLog {
        let dir = tempfile::Builder::new()
            .prefix("tmc-bench-audit")
            .disable_cleanup(std::env::var_os("TMC_E2E_KEEP").is_some())
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
        let log = dir.path().join("audit.log");
        AuditLog { _dir: dir, log }
    }

    /// kcp's flags for this log.
    pub fn flags(&self) -> Vec<String> {
        let policy = self.log.with_file_name("policy.yaml");
        vec![format!("--audit-policy-file={}", policy.display()), format!("--audit-log-path={}", self.log.display())]
    }

    /// How far the log is written now: [`AuditLog::writers_since`] reads from there.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Successful writes logged after `mark`, by `resource[/subresource] by <client>`.
    pub fn writers_since(&self, mark: u64) -> BTreeMap<String, u64> {
        writers(&read_from(&self.log, mark))
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).into_owned()
}

/// The client of a `User-Agent`: its first word before a slash (`kcp-tmc/0.1.0` → `kcp-tmc`,
/// `kcp/v1.34.3+kcp-v0.32.3 (linux/amd64) …` → `kcp`).
fn client_of(user_agent: &str) -> &str {
    match user_agent.split(['/', ' ']).next() {
        Some(c) if !c.is_empty() => c,
        _ => "(no user agent)",
    }
}

/// Successful write events (JSON lines) by `resource[/subresource] by <client>`.
fn writers(lines: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for event in lines.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        let code = event["responseStatus"]["code"].as_u64().unwrap_or(0);
        if event["stage"] != "ResponseComplete" || !(200..300).contains(&code) {
            continue;
        }
        let resource = match (event["objectRef"]["resource"].as_str(), event["objectRef"]["subresource"].as_str()) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.to_string(),
            _ => continue,
        };
        let client = client_of(event["userAgent"].as_str().unwrap_or_default());
        *out.entry(format!("{resource} by {client}")).or_default() += 1;
    }
    out
}
