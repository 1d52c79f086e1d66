//! Status up: the downstream status, or the aggregate over several targets, onto the kcp object.

use std::collections::BTreeSet;

use kube::api::{DynamicObject, Patch};
use kube::core::ApiResource;
use serde_json::{Value, json};

use super::unconditional::{self, Part};
use super::{Engine, SPEC_HASH_ANNOTATION, SyncError, api_err};
use crate::kcp::ClusterKey;
use crate::server::metrics::SyncOp;
use crate::syncer::status;

impl Engine {
    /// Brings the downstream status up. With one target it is the upstream status; with several,
    /// this target's status goes into its annotation and the upstream status is the aggregate
    /// (see [`super::status`]). Every write happens only when something differs. Returns whether
    /// the upstream status was written.
    pub(super) async fn status_up(
        &self,
        resource: &ApiResource,
        key: &ClusterKey,
        obj: &DynamicObject,
        upstream: &Value,
        downstream: &Value,
        applied_hash: &str,
    ) -> Result<bool, SyncError> {
        let applied_current = downstream["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == applied_hash;
        let mine = status::translate(downstream, applied_current, obj.metadata.generation);
        if mine.is_null() {
            return Ok(false);
        }
        let namespace = key.namespace.as_deref().unwrap_or_default();
        let api = self.upstream_api(resource, key);
        // The targets that should run it: assigned, and selected by their workload selector.
        let labels = obj.metadata.labels.clone().unwrap_or_default();
        let targets: BTreeSet<String> = (self.upstream.assigned_targets(&key.cluster, namespace).into_iter())
            .filter(|t| self.upstream.selects(&key.cluster, namespace, t, &labels))
            .collect();
        let desired = if targets.len() <= 1 {
            mine
        } else {
            let annotation = status::status_annotation(&self.target_key);
            let text = mine.to_string();
            if upstream["metadata"]["annotations"][&annotation].as_str() != Some(text.as_str()) {
                let patch = json!({ "metadata": { "annotations": { annotation: text } } });
                let started = std::time::Instant::now();
                let recorded = unconditional::patch(&api, &key.name, Part::Object, &Patch::Merge(&patch)).await;
                self.telemetry.op(&resource.plural, SyncOp::Status, recorded.is_ok(), started);
                recorded.map_err(api_err("record per-target status"))?;
                // The resulting event brings every syncer of this object back here.
                return Ok(false);
            }
            let annotations = obj.metadata.annotations.clone().unwrap_or_default();
            // This syncer runs it, whether or not the cached object shows its new finalizer yet.
            let mut finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
            finalizers.push(self.finalizer());
            status::aggregate(&resource.kind, &status::recorded(&annotations, &finalizers, &targets))
        };
        if desired.is_null() || desired == upstream["status"] {
            return Ok(false);
        }
        tracing::debug!("writing upstream status");
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{ "op": "add", "path": "/status", "value": desired }]))
                .expect("a static JSON patch");
        // A 404 here is an error too: it also means "no status subresource", which must show.
        let started = std::time::Instant::now();
        let written = unconditional::patch(&api, &key.name, Part::Status, &Patch::Json::<()>(patch)).await;
        self.telemetry.op(&resource.plural, SyncOp::Status, written.is_ok(), started);
        written.map(|_| true).map_err(api_err("write upstream status"))
    }

    /// Removes this target's status annotation once it no longer runs the object.
    pub(super) async fn forget_status(
        &self,
        resource: &ApiResource,
        key: &ClusterKey,
        obj: &DynamicObject,
    ) -> Result<(), SyncError> {
        let annotation = status::status_annotation(&self.target_key);
        if !obj.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(&annotation)) {
            return Ok(());
        }
        let api = self.upstream_api(resource, key);
        let patch = json!({ "metadata": { "annotations": { annotation: null } } });
        let started = std::time::Instant::now();
        let removed = unconditional::patch(&api, &key.name, Part::Object, &Patch::Merge(&patch)).await;
        let ok = super::telemetry::done_or_gone(&removed);
        self.telemetry.op(&resource.plural, SyncOp::Status, ok, started);
        match removed {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(api_err("remove per-target status")(e)),
        }
    }
}
