//! The I/O steps of the plan (see [`super::plan`]) other than applying: asking the cluster about
//! a copy, deleting it, releasing the finalizer. Each step does what the plan decided and no more.

use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject};
use kube::core::ApiResource;

use super::plan::{self, Action, DownstreamCopy, Facts};
use super::{Engine, SyncError, api_err, telemetry};
use crate::kcp::{ClusterKey, error_message};
use crate::server::metrics::SyncOp;
use crate::syncer::naming::TARGET_LABEL;
use crate::syncer::upstream::SyncKey;

/// What is left for the sync after [`Engine::remove`].
pub(super) enum Removal {
    /// The object is wanted: apply it.
    Apply,
    /// Done; look at the key again after the delay, if any.
    Done(Option<Duration>),
}

impl Engine {
    /// Carries out the plan for `facts` unless it is to apply.
    pub(super) async fn remove(
        &self,
        api: &ApiResource,
        key: &ClusterKey,
        upstream: Option<&std::sync::Arc<DynamicObject>>,
        mut facts: Facts,
        down_api: &Api<DynamicObject>,
    ) -> Result<Removal, SyncError> {
        let mut unreachable = None;
        loop {
            let action = plan::plan(&facts);
            tracing::debug!(?action, ?facts, "planned");
            match action {
                Action::Apply => return Ok(Removal::Apply),
                Action::Nothing => return Ok(Removal::Done(None)),
                Action::Wait(delay) => {
                    tracing::debug!(retry_in = ?delay, "kcp view not synced yet; nothing removed");
                    return Ok(Removal::Done(Some(delay)));
                }
                Action::LookDownstream => {
                    let (copy, error) = self.look_downstream(down_api, &key.name).await;
                    facts.downstream = copy;
                    unreachable = error;
                }
                Action::Retry => {
                    let message = unreachable.unwrap_or_else(|| "the cluster did not answer".into());
                    return Err(SyncError::Api { action: "read downstream copy".into(), message });
                }
                Action::DeleteCopy => {
                    let started = std::time::Instant::now();
                    let deleted = down_api.delete(&key.name, &DeleteParams::background()).await;
                    self.telemetry.op(&api.plural, SyncOp::Delete, telemetry::done_or_gone(&deleted), started);
                    match deleted {
                        Ok(_) => {
                            tracing::info!(namespace = ?down_api.namespace(), "deleted downstream copy");
                            // The delete event re-queues this key; the finalizer is released then.
                            return Ok(Removal::Done(None));
                        }
                        Err(kube::Error::Api(s)) if s.is_not_found() => facts.downstream = DownstreamCopy::Absent,
                        Err(e) if facts.deletion_timed_out => {
                            facts.downstream = DownstreamCopy::Unreachable;
                            unreachable = Some(error_message(&e));
                        }
                        Err(e) => return Err(api_err("delete downstream copy")(e)),
                    }
                }
                Action::ReleaseOrphaned => {
                    if let Some(obj) = upstream {
                        let note = format!(
                            "{} could not delete the copy for {:?} ({}); the finalizer is released and the copy will be deleted when the cluster is reachable again",
                            self.target.name,
                            self.settings.deletion_timeout,
                            unreachable.as_deref().unwrap_or("no answer")
                        );
                        self.events.warn(&key.cluster, api, obj, "DownstreamOrphaned", note).await;
                    }
                    return self.release(api, key, upstream).await;
                }
                Action::Release => return self.release(api, key, upstream).await,
            }
        }
    }

    /// Whether the cluster holds a copy this target wrote. Refused (403) means the syncer holds
    /// no rights there, so it cannot have written there either.
    async fn look_downstream(&self, down_api: &Api<DynamicObject>, name: &str) -> (DownstreamCopy, Option<String>) {
        match down_api.get_opt(name).await {
            Ok(None) => (DownstreamCopy::Absent, None),
            Ok(Some(o)) if o.metadata.labels.as_ref().and_then(|l| l.get(TARGET_LABEL)) == Some(&self.target_key) => {
                (DownstreamCopy::Ours, None)
            }
            Ok(Some(_)) => (DownstreamCopy::Foreign, None),
            Err(kube::Error::Api(s)) if s.code == 403 => (DownstreamCopy::Absent, None),
            Err(e) => (DownstreamCopy::Unreachable, Some(error_message(&e))),
        }
    }

    /// Nothing of the object is left downstream: its status and finalizer go from kcp, and its
    /// namespace is looked at again (it may be empty now).
    async fn release(
        &self,
        api: &ApiResource,
        key: &ClusterKey,
        upstream: Option<&std::sync::Arc<DynamicObject>>,
    ) -> Result<Removal, SyncError> {
        if let Some(obj) = upstream {
            self.forget_status(api, key, obj).await?;
            self.forget_evidence(api, key, obj).await?;
            self.set_finalizer(api, key, obj, false).await?;
        }
        let namespace = key.namespace.clone().unwrap_or_default();
        self.queue.add_after(
            SyncKey { resource: None, key: ClusterKey::new(key.cluster.clone(), None, &namespace) },
            Duration::from_secs(1),
        );
        Ok(Removal::Done(None))
    }
}
