//! Downstream namespaces (created with their locator, never taken from someone else), their
//! removal once empty, and take-over protection for objects in them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::json;

use super::{ADOPT_ANNOTATION, Engine, SyncError, api_err};
use crate::kcp::ClusterKey;
use crate::syncer::access::IDENTITY_ANNOTATION;
use crate::syncer::naming::{self, LOCATOR_ANNOTATION, Locator, TARGET_LABEL};

impl Engine {
    /// Refuses to overwrite a downstream object this syncer did not create, unless the upstream
    /// object carries `tmc.kcp.io/adopt: "true"`.
    pub(super) async fn check_take_over(
        &self,
        down_api: &Api<DynamicObject>,
        api: &kube::core::ApiResource,
        key: &ClusterKey,
        obj: &DynamicObject,
    ) -> Result<(), SyncError> {
        let Some(existing) = down_api.get_opt(&key.name).await.map_err(api_err("read downstream object"))? else {
            return Ok(());
        };
        let ours = existing.metadata.labels.as_ref().and_then(|l| l.get(TARGET_LABEL)) == Some(&self.target_key);
        let adopt =
            obj.metadata.annotations.as_ref().and_then(|a| a.get(ADOPT_ANNOTATION)).map(String::as_str) == Some("true");
        if ours || adopt {
            return Ok(());
        }
        let err = SyncError::NotOurs {
            kind: api.kind.clone(),
            namespace: existing.metadata.namespace.clone().unwrap_or_default(),
            name: key.name.clone(),
        };
        let note = format!(
            "{err} on {}; left alone. Annotate this object with {ADOPT_ANNOTATION}=true to take it over.",
            self.target.name
        );
        self.events.warn(&key.cluster, api, obj, "TakeOverRefused", note).await;
        Err(err)
    }

    pub(super) async fn ensure_namespace(&self, name: &str, locator: &Locator) -> Result<(), SyncError> {
        // Known from the namespace watch (label-selected, so ours) or an earlier check: no request
        // (but the binding, once per process: a crash may have come between create and bind).
        if self.downstream.holds(name, locator) {
            return self.access.ensure(name).await.map_err(api_err("bind the syncer in its namespace"));
        }
        let api: Api<Namespace> = Api::all(self.downstream.client.clone());
        let existing = api.get_opt(name).await.map_err(api_err("read downstream namespace"))?;
        let annotation = existing
            .as_ref()
            .map(|ns| ns.metadata.annotations.as_ref().and_then(|a| a.get(LOCATOR_ANNOTATION)).map(String::as_str));
        match naming::ownership(locator, annotation) {
            naming::Ownership::Ours => {}
            naming::Ownership::Foreign { found } => {
                return Err(SyncError::ForeignNamespace { namespace: name.to_string(), found });
            }
            naming::Ownership::Absent => {
                let identity = self.access.identity().await.map_err(api_err("ask the cluster who the syncer is"))?;
                let mut annotations = json!({ LOCATOR_ANNOTATION: locator.to_annotation() });
                if let Some(identity) = identity {
                    // What the shipped admission policy checks before the syncer may bind itself here.
                    annotations[IDENTITY_ANNOTATION] = json!(identity);
                }
                let ns: Namespace = serde_json::from_value(json!({
                    "metadata": { "name": name, "labels": { TARGET_LABEL: self.target_key }, "annotations": annotations }
                }))
                .expect("static namespace");
                match api.create(&PostParams::default(), &ns).await {
                    Ok(_) => tracing::info!(namespace = name, "created downstream namespace"),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(api_err("create downstream namespace")(e)),
                }
            }
        }
        self.access.ensure(name).await.map_err(api_err("bind the syncer in its namespace"))?;
        self.downstream.remember_namespace(name, locator.clone());
        Ok(())
    }

    /// Deletes the downstream namespace of a kcp namespace once nothing of it is synced there.
    pub(super) async fn sync_namespace(&self, key: &ClusterKey) -> Result<Option<Duration>, SyncError> {
        if self.upstream.is_assigned(&key.cluster, &key.name, &self.target_key) {
            return Ok(None);
        }
        let locator = Locator::new(self.target.clone(), &key.cluster, &key.name);
        let dns = locator.downstream_namespace();
        if self.downstream.namespace_in_use(&dns) {
            return Ok(Some(Duration::from_secs(2)));
        }
        let api: Api<Namespace> = Api::all(self.downstream.client.clone());
        let Some(ns) = api.get_opt(&dns).await.map_err(api_err("read downstream namespace"))? else { return Ok(None) };
        let ours =
            ns.metadata.annotations.as_ref().and_then(|a| a.get(LOCATOR_ANNOTATION)) == Some(&locator.to_annotation());
        if ours && ns.metadata.deletion_timestamp.is_none() {
            api.delete(&dns, &DeleteParams::background()).await.map_err(api_err("delete downstream namespace"))?;
            tracing::info!(namespace = %dns, "deleted empty downstream namespace");
        }
        Ok(None)
    }
}
