//! Hostile tenants (issue 9): one test per row, each asserting the exact reason kcp-tmc gives
//! and that a bystander tenant's objects, assignments and metrics are untouched.
//!
//! The bystander is one workspace with one push-mode SyncTarget on cluster 1 and one assigned
//! namespace holding a ConfigMap and a Secret, set up once for the whole run. Every row calls
//! [`Bystander::untouched`] after its attack: the downstream copies keep their UIDs and
//! resourceVersions (nothing rewrote or recreated them), the kcp namespace keeps its assignment
//! label, the SyncTarget stays Ready and its `tmc_synctarget_ready` series still reads 1.

pub mod address;
pub mod forgery;
pub mod kubeconfig;
pub mod memory;
pub mod placement;
pub mod rbac;
pub mod secrets;
pub mod time;

use std::time::Duration;

use serde_json::json;
use tokio::sync::OnceCell;

use crate::World;
use crate::env::eventually;
use crate::syncer::{assigned_namespace, downstream_get, downstream_ns, list, register, wait_downstream};

pub const BYSTANDER_WS: &str = "root:bystander";
const TARGET: &str = "bystander";
const NAMESPACE: &str = "calm";
const CLUSTER: usize = 1;

/// What the bystander's world looked like once it had settled.
pub struct Bystander {
    pub target_key: String,
    pub downstream_namespace: String,
    /// (kind, name, uid, resourceVersion) of each downstream copy.
    copies: Vec<(&'static str, &'static str, String, String)>,
}

static BYSTANDER: OnceCell<Bystander> = OnceCell::const_new();

impl Bystander {
    /// The bystander, set up on first use (concurrent callers wait for the one set-up).
    pub async fn get(w: &World) -> Result<&'static Bystander, String> {
        BYSTANDER.get_or_try_init(|| Self::set_up(w)).await
    }

    async fn set_up(w: &World) -> Result<Bystander, String> {
        w.bind_tenant(BYSTANDER_WS, crate::PROVIDER, Duration::from_secs(90)).await?;
        let target_key = register(w, BYSTANDER_WS, TARGET, CLUSTER).await?;
        assigned_namespace(w, BYSTANDER_WS, NAMESPACE, &target_key)?;
        let objects = list(&[
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "calm-config"},
                   "data": {"mood": "calm"}})
            .to_string(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "calm-secret"},
                   "stringData": {"password": "bystander-password-value"}})
            .to_string(),
        ]);
        w.kcp.kubectl(BYSTANDER_WS, &["-n", NAMESPACE, "apply", "-f", "-"], Some(&objects))?;
        let downstream_namespace = downstream_ns(w, BYSTANDER_WS, TARGET, BYSTANDER_WS, NAMESPACE).await;
        let mut copies = vec![];
        for (kind, name) in [("configmap", "calm-config"), ("secret", "calm-secret")] {
            let obj = wait_downstream(w, CLUSTER, &downstream_namespace, kind, name).await?;
            let meta = &obj["metadata"];
            copies.push((kind, name, meta["uid"].as_str().unwrap_or_default().to_string(), String::new()));
        }
        // The first apply is followed by the syncer's own bookkeeping; take the resourceVersions
        // once they have stopped moving, so a later comparison means "nobody wrote since".
        let settled = eventually("the bystander's copies to settle", Duration::from_secs(60), || async {
            let before = read_versions(w, &downstream_namespace, &copies)?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let after = read_versions(w, &downstream_namespace, &copies)?;
            Ok((before == after).then_some(after))
        })
        .await?;
        for (copy, rv) in copies.iter_mut().zip(settled) {
            copy.3 = rv;
        }
        Ok(Bystander { target_key, downstream_namespace, copies })
    }

    /// Fails with what changed if the bystander's copies, assignment, readiness or metrics moved.
    pub async fn untouched(&self, w: &World) -> Result<(), String> {
        for (kind, name, uid, rv) in &self.copies {
            let obj = downstream_get(w, CLUSTER, &self.downstream_namespace, kind, name)?
                .ok_or_else(|| format!("bystander's {kind} {name} vanished from cluster {CLUSTER}"))?;
            let (got_uid, got_rv) = (&obj["metadata"]["uid"], &obj["metadata"]["resourceVersion"]);
            if got_uid.as_str() != Some(uid) || got_rv.as_str() != Some(rv) {
                return Err(format!(
                    "bystander's {kind} {name} changed: uid {uid} → {got_uid}, resourceVersion {rv} → {got_rv}"
                ));
            }
        }
        let label = format!("state.tmc.kcp.io/{}", self.target_key);
        let ns = w.kcp.kubectl(BYSTANDER_WS, &["get", "namespace", NAMESPACE, "-o", "json"], None)?;
        let ns: serde_json::Value = serde_json::from_str(&ns).map_err(|e| e.to_string())?;
        if ns["metadata"]["labels"][&label].as_str() != Some("Sync") {
            return Err(format!("bystander's namespace lost its assignment {label}: {}", ns["metadata"]["labels"]));
        }
        let ready = w.kcp.kubectl(
            BYSTANDER_WS,
            &["get", "synctarget", TARGET, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
            None,
        )?;
        if ready != "True" {
            return Err(format!("bystander's SyncTarget is no longer Ready ({ready:?})"));
        }
        // One scrape can come back empty when the loaded machine delays the manager past its
        // header-read timeout; a few tries tell that from a series that is really gone.
        let series = format!("tmc_synctarget_ready{{sync_target=\"{}\"}} 1", self.target_key);
        let url = format!("{}/metrics", w.manager_metrics);
        let mut last = String::new();
        for _ in 0..5 {
            match crate::ops::get(&url).await {
                Ok((200, body)) if body.lines().any(|l| l == series) => return Ok(()),
                Ok((200, _)) => return Err(format!("the manager's /metrics lost {series:?}")),
                Ok((code, _)) => last = format!("HTTP {code}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Err(format!("the manager's /metrics could not be read: {last}"))
    }
}

fn read_versions(
    w: &World,
    namespace: &str,
    copies: &[(&'static str, &'static str, String, String)],
) -> Result<Vec<String>, String> {
    copies
        .iter()
        .map(|(kind, name, _, _)| {
            let obj = downstream_get(w, CLUSTER, namespace, kind, name)?
                .ok_or_else(|| format!("bystander's {kind} {name} is missing"))?;
            Ok(obj["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}
