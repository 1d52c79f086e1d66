//! The heartbeat: a probe of the cluster on a timer, reported as `status.lastSyncTime` (with
//! `status.syncedResources`) and, in push mode, to the SyncTarget reconciler as [`Probe`].

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::apis::sync::v1alpha1::SyncTarget;
use crate::kcp::error_message;

/// What the syncer's last probe of its cluster (an authorised list request) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Pending,
    Reachable,
    Unreachable(String),
    Unauthorized(String),
    /// The dialer refused the address the server resolved to (e.g. after DNS rebinding).
    Refused(String),
    /// The cluster answered with more than the manager reads.
    Oversized(String),
}

impl Probe {
    pub(super) fn of(result: &Result<(), kube::Error>) -> Self {
        use crate::net::dial::{DialError, find_cause};
        use crate::net::response::{MESSAGE_MAX, ResponseError, bounded_line};
        match result {
            Ok(()) => Probe::Reachable,
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
                Probe::Unauthorized(bounded_line(&s.message, MESSAGE_MAX))
            }
            Err(e) if find_cause::<DialError>(e).is_some_and(DialError::is_refusal) => Probe::Refused(error_message(e)),
            Err(e) if matches!(find_cause::<ResponseError>(e), Some(ResponseError::TooLarge { .. })) => {
                Probe::Oversized(error_message(e))
            }
            Err(e) => Probe::Unreachable(error_message(e)),
        }
    }
}

impl Engine {
    /// Reports the syncer alive in `status.lastSyncTime`, but only while the cluster answers an
    /// authorised request: a heartbeat means "this target works", not "this process runs".
    pub(super) async fn heartbeat(self, cancel: CancellationToken) {
        let targets: Api<SyncTarget> = Api::all(self.upstream.clients.cluster(&self.target_cluster));
        let probe: Api<Namespace> = Api::all(self.downstream.client.clone());
        loop {
            let result = probe.list_metadata(&ListParams::default().limit(1)).await.map(|_| ());
            let state = Probe::of(&result);
            self.probe.send_if_modified(|p| std::mem::replace(p, state.clone()) != state);
            match result {
                Ok(()) => {
                    let now =
                        jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now());
                    // The API report rides along: the heartbeat writes anyway, and counts that
                    // lag by one interval are fine.
                    let patch = json!({ "status": {
                        "lastSyncTime": now.to_string(),
                        "syncedResources": self.synced_resources(),
                    } });
                    let written =
                        targets.patch_status(&self.target.name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                    if let Err(e) = written {
                        tracing::warn!(target = %self.target.name, error = %error_message(&e), "heartbeat write failed")
                    }
                }
                Err(e) => {
                    tracing::warn!(target = %self.target.name, error = %error_message(&e), "cluster unreachable; no heartbeat")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.settings.heartbeat_interval) => {}
                _ = self.report_changed.notified() => {}
            }
        }
    }
}

/// How often `tmc_synced_objects` is refreshed from the cluster views. Once per heartbeat (20 s)
/// made a restarted manager look unsettled for up to a heartbeat after its views had listed.
const COUNT_INTERVAL: Duration = Duration::from_secs(1);

impl Engine {
    /// Refreshes `tmc_synced_objects` every [`COUNT_INTERVAL`] until `cancel` fires. The
    /// SyncTarget reconciler cancels a syncer before it drops the target's series, and the
    /// check right before each recording keeps a stopped syncer from bringing them back.
    pub(super) async fn count_synced(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(COUNT_INTERVAL) => {}
            }
            if cancel.is_cancelled() {
                return;
            }
            self.record_synced_objects();
        }
    }

    /// `tmc_synced_objects` from the downstream caches, per synced resource.
    /// Every resource whose downstream watch runs is reported, so one emptied reads 0.
    fn record_synced_objects(&self) {
        let counts = self.downstream.counts();
        let watched = self.started.lock().expect("started poisoned").clone();
        for index in watched {
            if let Some(resource) = self.upstream.resource(index) {
                let count = counts.get(&index).copied().unwrap_or(0);
                self.telemetry.metrics().set_synced_objects(self.telemetry.target_key(), &resource.api.plural, count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::dial::DialError;
    use crate::net::response::ResponseError;

    #[test]
    fn probe_table() {
        let api = |code| {
            kube::Error::Api(kube::core::Status::failure("no <b>way</b>\nat all", "Forbidden").with_code(code).boxed())
        };
        let service = |e: Box<dyn std::error::Error + Send + Sync>| kube::Error::Service(e);
        let cases = [
            (Ok(()), "Reachable", ""),
            (Err(api(401)), "Unauthorized", "no <b>way</b> at all"),
            (Err(api(403)), "Unauthorized", "no <b>way</b> at all"),
            (Err(api(502)), "Unreachable", "(502 Forbidden)"),
            (Err(service(Box::new(DialError::PlainHttp { server: "x:80".into() }))), "Refused", "plain http://"),
            (Err(service(Box::new(ResponseError::TooLarge { limit: 32 << 20 }))), "Oversized", "larger than 32 MiB"),
            (Err(service(Box::new(ResponseError::NotKubernetes { code: 200 }))), "Unreachable", "non-Kubernetes body"),
            (
                Err(service(Box::new(DialError::Unresolved { host: "x".into(), why: "nope".into() }))),
                "Unreachable",
                "does not resolve",
            ),
        ];
        for (result, want, fragment) in cases {
            let (got, text) = match Probe::of(&result) {
                Probe::Pending => ("Pending", String::new()),
                Probe::Reachable => ("Reachable", String::new()),
                Probe::Unreachable(m) => ("Unreachable", m),
                Probe::Unauthorized(m) => ("Unauthorized", m),
                Probe::Refused(m) => ("Refused", m),
                Probe::Oversized(m) => ("Oversized", m),
            };
            assert_eq!(got, want, "{result:?}");
            assert!(text.contains(fragment), "{text:?} should contain {fragment:?}");
        }
    }
}
