//! Evidence of a successful apply on the kcp object (see [`crate::apis::applied`]): written
//! after the cluster accepted the object, read by the Placement reconciler before a moving
//! namespace leaves its old target. One merge patch per object and target when the record
//! changes (a new generation applied, a Deployment becoming available or not); none in a steady
//! state.
//!
//! Only a move needs it: the Placement reconciler names the targets it waits on in the
//! namespace's [`AWAITING_EVIDENCE_ANNOTATION`](crate::apis::names::AWAITING_EVIDENCE_ANNOTATION),
//! written with the new assignment label and removed with the old one, and only those targets'
//! syncers write evidence. A namespace that is not
//! moving (every first placement, and a namespace kept on two clusters) costs kcp no evidence
//! write; on two clusters the two syncers' evidence patches of one object would otherwise collide
//! in the virtual workspace (its read-and-guarded-update gives up, and the retries are the tail).
//! A record left from an earlier move is not refreshed, so it can lag the cluster; a later move
//! calls for evidence again and the record is rewritten when it differs.

use kube::api::{DynamicObject, Patch};
use kube::core::ApiResource;
use serde_json::{Value, json};

use super::unconditional::{self, Part};
use super::{Engine, SPEC_HASH_ANNOTATION, SyncError, api_err};
use crate::apis::applied::{Applied, applied_annotation};
use crate::kcp::ClusterKey;
use crate::server::metrics::SyncOp;

impl Engine {
    /// Records that the cluster holds `obj` as applied with `hash`; `downstream` is the status
    /// view of the cluster's copy, if known. Call only after a successful apply (or a copy found
    /// to match). Nothing is written unless a move of the namespace waits on this target.
    pub(super) async fn record_evidence(
        &self,
        resource: &ApiResource,
        key: &ClusterKey,
        obj: &DynamicObject,
        hash: &str,
        downstream: Option<&Value>,
    ) -> Result<(), SyncError> {
        let namespace = key.namespace.as_deref().unwrap_or_default();
        if !self.upstream.awaits_evidence(&key.cluster, namespace, &self.target_key) {
            return Ok(());
        }
        let record = Applied::new(&resource.kind, obj.metadata.generation, hash, downstream, SPEC_HASH_ANNOTATION);
        let annotation = applied_annotation(&self.target_key);
        let current = obj.metadata.annotations.as_ref().and_then(|a| a.get(&annotation));
        if current.and_then(|c| Applied::decode(c)).as_ref() == Some(&record) {
            return Ok(());
        }
        self.patch_evidence(resource, key, json!({ annotation: record.encode() })).await
    }

    /// Removes this target's evidence once it no longer runs the object, so that a later
    /// assignment to it starts without any.
    pub(super) async fn forget_evidence(
        &self,
        resource: &ApiResource,
        key: &ClusterKey,
        obj: &DynamicObject,
    ) -> Result<(), SyncError> {
        let annotation = applied_annotation(&self.target_key);
        if !obj.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(&annotation)) {
            return Ok(());
        }
        self.patch_evidence(resource, key, json!({ annotation: null })).await
    }

    async fn patch_evidence(
        &self,
        resource: &ApiResource,
        key: &ClusterKey,
        annotations: Value,
    ) -> Result<(), SyncError> {
        let api = self.upstream_api(resource, key);
        let patch = json!({ "metadata": { "annotations": annotations } });
        let started = std::time::Instant::now();
        let written = unconditional::patch(&api, &key.name, Part::Object, &Patch::Merge(&patch)).await;
        self.telemetry.op(&resource.plural, SyncOp::Evidence, super::telemetry::done_or_gone(&written), started);
        match written {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
            Err(e) => Err(api_err("record apply evidence")(e)),
        }
    }
}
