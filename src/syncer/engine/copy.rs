//! Writing one object's copy into the cluster: its namespace made sure of, a copy the cluster
//! already holds compared before anything is written, and the desired copy applied only when it
//! differs. What the cluster refuses is told to the tenant on their object.

use std::sync::Arc;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use super::{Engine, FIELD_MANAGER, SPEC_HASH_ANNOTATION, SyncError};
use crate::kcp::{ClusterKey, error_message};
use crate::server::metrics::SyncOp;
use crate::syncer::downstream::{self, Cached};
use crate::syncer::naming::Locator;
use crate::syncer::redact;
use crate::syncer::resources::SyncedResource;
use crate::syncer::transform::{self, Destination};
use crate::syncer::upstream::SyncKey;

/// Where one object's copy goes.
pub(super) struct Target<'a> {
    pub index: usize,
    pub resource: &'a SyncedResource,
    pub key: &'a ClusterKey,
    pub locator: &'a Locator,
    /// The downstream namespace.
    pub namespace: &'a str,
    pub api: &'a Api<DynamicObject>,
}

/// The copy the cluster holds once `copy_down` succeeded.
pub(super) struct Copied {
    /// The hash of the desired copy, recorded on it as [`SPEC_HASH_ANNOTATION`].
    pub hash: String,
    /// What status-up reads of the cluster's copy, if known before this sync.
    pub status_view: Option<Value>,
}

impl Engine {
    /// Makes the cluster hold the copy of `obj` (`value`, its JSON) that `t` describes; `current`
    /// is the cluster view's entry for it, if any.
    pub(super) async fn copy_down(
        &self,
        t: &Target<'_>,
        obj: &DynamicObject,
        value: &Value,
        mut current: Option<Cached>,
    ) -> Result<Copied, SyncError> {
        let (key, dns, resource) = (t.key, t.namespace, t.resource);
        if let Err(e) = self.ensure_namespace(&key.cluster, dns, t.locator).await {
            let note = format!("not synced to {}: {e}", self.target.name);
            let reason = match e {
                SyncError::ForeignNamespace { .. } => "DownstreamNamespaceConflict",
                _ => "DownstreamNamespaceFailed",
            };
            self.events.warn(&key.cluster, &resource.api, obj, reason, note).await;
            return Err(e);
        }
        if current.is_none() {
            // Not in the cluster view (it has not listed this namespace yet, e.g. just after a
            // restart, or the object is new): what the cluster holds is read once, and a copy
            // found there is compared like a cached one, so an unchanged copy is not written again.
            let found = self.check_take_over(t.api, &resource.api, key, obj).await?;
            current = found.map(|o| Cached::Whole(Arc::new(crate::runtime::reflector::strip(o))));
        }
        let dest = Destination { namespace: dns, target_key: &self.target_key, origin_cluster: key.cluster.as_str() };
        let mut desired = transform::desired(value, &dest);
        if resource.scale
            && let Some(ns) = key.namespace.as_deref()
        {
            let share = |total| self.upstream.replicas_of(&key.cluster, ns, &self.target_key, total);
            transform::divide_replicas(&mut desired, &resource.api.group, share);
        }
        if let Some(ns) = key.namespace.as_deref() {
            let object = (resource.api.group.as_str(), resource.api.kind.as_str(), key.name.as_str());
            let overridden = self.upstream.with_overrides(&key.cluster, ns, &self.target_key, |list| {
                transform::override_copy(&mut desired, list, object, &dest)
            });
            if let Err(why) = overridden {
                // Writing the copy without the change meant for this target would sync it wrong:
                // what the cluster holds stays as it was until the override is fixed.
                let note = format!("not synced to {}: {why}; its copy there is left as it was", self.target.name);
                self.events.warn(&key.cluster, &resource.api, obj, "OverrideFailed", note).await;
                return Err(SyncError::Override(why));
            }
        }
        if resource.api.kind == "Deployment" && self.downstream.autoscaled(dns, &key.name) {
            transform::leave_replicas_to_autoscaler(&mut desired);
        }
        let hash = crate::json::sha256_hex(desired.to_string().as_bytes(), 8);
        desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = json!(hash);
        // What status-up reads of the downstream object, and whether it matches `desired`.
        let (status_view, in_sync) = match &current {
            None => (None, false),
            Some(Cached::Matched(c)) => (c.status_view.clone(), c.desired_hash == hash),
            Some(Cached::Whole(cached)) => {
                let (compared, difference) = downstream::compare(cached, &desired, &hash, resource.status_up);
                let view = compared.status_view.clone();
                match &difference {
                    None => self.downstream.matched(t.index, dns, &key.name, compared),
                    Some(why) => tracing::debug!(difference = %why, "downstream differs"),
                }
                (view, difference.is_none())
            }
        };
        if !in_sync {
            self.apply(t, obj, &desired, &hash).await?;
        }
        Ok(Copied { hash, status_view })
    }

    /// Server-side applies `desired` and caches what the cluster answered.
    async fn apply(&self, t: &Target<'_>, obj: &DynamicObject, desired: &Value, hash: &str) -> Result<(), SyncError> {
        let (key, resource) = (t.key, t.resource);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let started = std::time::Instant::now();
        let applied = t.api.patch(&key.name, &params, &Patch::Apply(desired)).await;
        self.telemetry.op(&resource.api.plural, SyncOp::Apply, applied.is_ok(), started);
        match applied {
            // Cache what the cluster answered, so a sync that runs before the watch event
            // arrives sees this state instead of applying again; as the verdict when it
            // matched (the usual case), so the cache never holds a whole copy of it.
            Ok(applied) => {
                let (compared, difference) = downstream::compare(&applied, desired, hash, resource.status_up);
                let cached = match difference {
                    None => Cached::Matched(Arc::new(compared)),
                    Some(_) => Cached::Whole(Arc::new(crate::runtime::reflector::strip(applied))),
                };
                self.downstream.record(t.index, t.namespace, &key.name, cached);
                self.telemetry.applied(&SyncKey { resource: Some(t.index), key: key.clone() });
                tracing::info!(namespace = %t.namespace, "applied downstream");
                Ok(())
            }
            Err(e) => {
                // The cluster refused the object (invalid or immutable field, …) or failed to
                // store it (too large for its etcd, …): tell the tenant on their object, and
                // retry with backoff. An unreachable cluster is the SyncTarget's condition.
                // What the cluster said about a Secret may quote its data: scrubbed first.
                if let kube::Error::Api(s) = &e {
                    let (reason, verb) =
                        if s.code < 500 { ("SyncRejected", "rejected") } else { ("SyncFailed", "failed to store") };
                    // Values of a refused Secret cut out first, then the rest bounded to one line.
                    let said = redact::scrub(desired, &s.message);
                    let message = crate::net::response::bounded_line(&said, crate::net::response::MESSAGE_MAX);
                    let note = format!("{} {verb} it ({}): {message}; retrying", self.target.name, s.code);
                    self.events.warn(&key.cluster, &resource.api, obj, reason, note).await;
                }
                let message = redact::scrub(desired, &error_message(&e));
                Err(SyncError::Api { action: "apply downstream".into(), message })
            }
        }
    }
}
