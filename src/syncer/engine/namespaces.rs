//! Downstream namespaces: created by the syncer and recorded in kcp (never taken from someone
//! else, whatever annotations it carries), their removal once empty, and take-over protection
//! for objects in them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::ApiResource;
use serde_json::json;

use super::{ADOPT_ANNOTATION, Engine, SyncError, api_err};
use crate::kcp::{ClusterKey, LogicalClusterName};
use crate::syncer::access::IDENTITY_ANNOTATION;
use crate::syncer::naming::{self, CLAIM_ANNOTATION, LOCATOR_ANNOTATION, Locator, Ownership, Record, TARGET_LABEL};
use crate::syncer::resources::WORKLOAD_SELECTOR_PREFIX;

impl Engine {
    /// Refuses to overwrite a downstream object this syncer did not create, unless the upstream
    /// object carries `tmc.kcp.io/adopt: "true"`.
    pub(super) async fn check_take_over(
        &self,
        down_api: &Api<DynamicObject>,
        api: &kube::core::ApiResource,
        key: &ClusterKey,
        obj: &DynamicObject,
    ) -> Result<Option<DynamicObject>, SyncError> {
        let Some(existing) = down_api.get_opt(&key.name).await.map_err(api_err("read downstream object"))? else {
            return Ok(None);
        };
        let ours = existing.metadata.labels.as_ref().and_then(|l| l.get(TARGET_LABEL)) == Some(&self.target_key);
        let adopt =
            obj.metadata.annotations.as_ref().and_then(|a| a.get(ADOPT_ANNOTATION)).map(String::as_str) == Some("true");
        if ours || adopt {
            return Ok(Some(existing));
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

    /// Makes sure the downstream namespace for `locator` exists and is provably ours: created by
    /// this target's syncer, as recorded on the kcp namespace (see [`naming::ownership`]).
    pub(super) async fn ensure_namespace(
        &self,
        cluster: &LogicalClusterName,
        name: &str,
        locator: &Locator,
    ) -> Result<(), SyncError> {
        // Proven earlier in this process, and the namespace watch has not seen it go.
        // (The binding is checked once per process: a crash may have come between create and bind.)
        if self.downstream.owned(name, locator).is_some() {
            return self.access.ensure(name).await.map_err(api_err("bind the syncer in its namespace"));
        }
        let down: Api<Namespace> = Api::all(self.downstream.client.clone());
        let kcp: Api<Namespace> = Api::all(self.upstream.clients.cluster(cluster));
        // A lost race (the create answers 409, a record write finds the kcp namespace changed)
        // is judged again from what exists then.
        for _ in 0..3 {
            let Some(upstream) = kcp.get_opt(&locator.namespace).await.map_err(api_err("read kcp namespace"))? else {
                return Err(SyncError::Api { action: "read kcp namespace".into(), message: "it is gone".into() });
            };
            let record = Record::parse(annotation(&upstream, &self.owner_annotation()));
            let existing = down.get_opt(name).await.map_err(api_err("read downstream namespace"))?;
            let (nonce, rv) = match naming::ownership(locator, &record, existing.as_ref().map(observed)) {
                Ownership::Foreign(why) => {
                    return Err(SyncError::ForeignNamespace { namespace: name.to_string(), why });
                }
                Ownership::Ours { uid } => {
                    let rv = upstream.metadata.resource_version.as_deref();
                    let proven = Record::Created(uid.clone());
                    if record != proven && self.write_record(&kcp, &locator.namespace, rv, &proven).await?.is_none() {
                        continue;
                    }
                    self.access.ensure(name).await.map_err(api_err("bind the syncer in its namespace"))?;
                    self.downstream.remember_namespace(name, locator.clone(), &uid);
                    self.upsyncs.wake();
                    return Ok(());
                }
                // The claim goes to kcp before the create: should the syncer stop between the
                // create and recording the UID, the nonce on the namespace still proves it ours.
                Ownership::Absent => match record {
                    Record::Claimed(nonce) => (nonce, upstream.metadata.resource_version.clone()),
                    _ => {
                        let nonce = format!("{:032x}", rand::random::<u128>());
                        let rv = upstream.metadata.resource_version.as_deref();
                        let claim = Record::Claimed(nonce.clone());
                        let Some(rv) = self.write_record(&kcp, &locator.namespace, rv, &claim).await? else {
                            continue;
                        };
                        (nonce, Some(rv))
                    }
                },
            };
            let mut annotations = json!({ LOCATOR_ANNOTATION: locator.to_annotation(), CLAIM_ANNOTATION: nonce });
            let identity = self.access.identity().await.map_err(api_err("ask the cluster who the syncer is"))?;
            if let Some(identity) = identity {
                // What the shipped admission policy checks before the syncer may bind itself here.
                annotations[IDENTITY_ANNOTATION] = json!(identity);
            }
            let ns: Namespace = serde_json::from_value(json!({
                "metadata": { "name": name, "labels": { TARGET_LABEL: self.target_key }, "annotations": annotations }
            }))
            .expect("static namespace");
            let created = match down.create(&PostParams::default(), &ns).await {
                Ok(created) => created,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(api_err("create downstream namespace")(e)),
            };
            tracing::info!(namespace = name, "created downstream namespace");
            let uid = created.metadata.uid.unwrap_or_default();
            // If this write loses a race, the next pass proves the namespace by its claim.
            if self
                .write_record(&kcp, &locator.namespace, rv.as_deref(), &Record::Created(uid.clone()))
                .await?
                .is_some()
            {
                self.access.ensure(name).await.map_err(api_err("bind the syncer in its namespace"))?;
                self.downstream.remember_namespace(name, locator.clone(), &uid);
                self.upsyncs.wake();
                return Ok(());
            }
        }
        Err(SyncError::Api {
            action: "create downstream namespace".into(),
            message: "it kept changing while being created; retrying".into(),
        })
    }

    fn owner_annotation(&self) -> String {
        naming::owner_annotation(&self.target_key)
    }

    /// Writes `record` on the kcp namespace if it still is at `rv`: its new resourceVersion, or
    /// `None` when it changed since.
    async fn write_record(
        &self,
        kcp: &Api<Namespace>,
        namespace: &str,
        rv: Option<&str>,
        record: &Record,
    ) -> Result<Option<String>, SyncError> {
        // resourceVersion makes this a compare-and-swap: two syncers of one target (a leader
        // hand-over) never overwrite each other's claim.
        let patch = json!({ "metadata": {
            "resourceVersion": rv,
            "annotations": { self.owner_annotation(): record.to_annotation() },
        }});
        match kcp.patch(namespace, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(ns) => Ok(Some(ns.metadata.resource_version.unwrap_or_default())),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(api_err("record the downstream namespace in kcp")(e)),
        }
    }

    /// Deletes the downstream namespace of a kcp namespace once nothing of it is synced there,
    /// if it is provably ours; then, once it is gone, removes the record of it from kcp.
    pub(super) async fn sync_namespace(&self, key: &ClusterKey) -> Result<Option<Duration>, SyncError> {
        tracing::debug!(namespace = %key.name, "sync namespace");
        if self.upstream.is_assigned(&key.cluster, &key.name, &self.target_key) {
            self.report_invalid_selector(key).await;
            return Ok(None);
        }
        let locator = Locator::new(self.target.clone(), &key.cluster, &key.name);
        let dns = locator.downstream_namespace();
        // "Not assigned" and "nothing of it left" are the truth only once the views have listed.
        if !self.views_synced(&dns) {
            tracing::debug!(namespace = %key.name, "views not synced yet; the downstream namespace is kept");
            return Ok(Some(super::plan::WAIT_FOR_VIEW));
        }
        if self.downstream.namespace_in_use(&dns) {
            return Ok(Some(Duration::from_secs(2)));
        }
        let down: Api<Namespace> = Api::all(self.downstream.client.clone());
        let existing = down.get_opt(&dns).await.map_err(api_err("read downstream namespace"))?;
        if existing.as_ref().is_some_and(|ns| ns.metadata.deletion_timestamp.is_some()) {
            return Ok(Some(Duration::from_secs(2)));
        }
        // A workspace this target never served has no namespace and no record here: its kcp
        // namespace is not even read.
        if existing.is_none() && !self.consents(&key.cluster) {
            return Ok(None);
        }
        let kcp: Api<Namespace> = Api::all(self.upstream.clients.cluster(&key.cluster));
        let upstream = kcp.get_opt(&key.name).await.map_err(api_err("read kcp namespace"))?;
        let record = Record::parse(upstream.as_ref().and_then(|ns| annotation(ns, &self.owner_annotation())));
        let Some(ns) = existing else {
            if let Some(upstream) = upstream.filter(|_| record != Record::None) {
                let rv = upstream.metadata.resource_version.as_deref();
                if self.write_record(&kcp, &key.name, rv, &Record::None).await?.is_none() {
                    return Ok(Some(Duration::from_secs(1)));
                }
            }
            return Ok(None);
        };
        // Proof from kcp, or from this process when the kcp namespace is already gone.
        let uid = match naming::ownership(&locator, &record, Some(observed(&ns))) {
            Ownership::Ours { uid } => Some(uid),
            _ => self.downstream.owned(&dns, &locator).filter(|uid| ns.metadata.uid.as_ref() == Some(uid)),
        };
        let Some(uid) = uid else {
            tracing::info!(namespace = %dns, "not deleting a downstream namespace that is not provably ours");
            return Ok(None);
        };
        // The UID precondition: never a namespace someone created under that name meanwhile.
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
            ..DeleteParams::background()
        };
        match down.delete(&dns, &params).await {
            Ok(_) => tracing::info!(namespace = %dns, "deleted empty downstream namespace"),
            Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
            Err(e) => return Err(api_err("delete downstream namespace")(e)),
        }
        self.downstream.forget_namespace(&dns);
        // Looked at again until it is gone, then the record goes (kept meanwhile, so a namespace
        // assigned again while this one terminates is not mistaken for someone else's).
        Ok(Some(Duration::from_secs(2)))
    }
}

impl Engine {
    /// Whether the kcp view of every resource this syncer ever synced has listed (so the
    /// namespace's assignment is known), and the cluster's view of `dns` for each resource
    /// watched cluster-wide (so "no copy left in it" is known). A resource watched per namespace
    /// has no watch in a namespace being given up; its copies are deleted one by one first.
    fn views_synced(&self, dns: &str) -> bool {
        let started = self.started.lock().expect("started poisoned").clone();
        !started.is_empty()
            && started.iter().all(|&i| {
                let per_namespace =
                    self.upstream.resource(i).is_some_and(|r| crate::syncer::access::watched_per_namespace(&r.api));
                self.upstream.synced(i) && (per_namespace || self.downstream.synced(i, dns))
            })
    }

    /// Whether this target runs namespaces of `cluster`: its own workspace, or one it allows
    /// (`spec.allowedWorkspaces`).
    pub(super) fn consents(&self, cluster: &LogicalClusterName) -> bool {
        *cluster == self.target_cluster || self.allowed.borrow().contains(cluster)
    }

    /// Tells the tenant, with a Warning Event on the kcp namespace, that its workload selector
    /// for this target is invalid and so selects nothing. Only for workspaces this target
    /// serves: another workspace learns nothing about this target from it.
    async fn report_invalid_selector(&self, key: &ClusterKey) {
        if !self.consents(&key.cluster) {
            return;
        }
        let Some(why) = self.upstream.invalid_selector(&key.cluster, &key.name, &self.target_key) else { return };
        tracing::debug!(namespace = %key.name, why, "invalid workload selector");
        let kcp: Api<Namespace> = Api::all(self.upstream.clients.cluster(&key.cluster));
        let ns = match kcp.get_opt(&key.name).await {
            Ok(Some(ns)) => ns,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(namespace = %key.name, error = %crate::kcp::error_message(&e), "cannot read kcp namespace");
                return;
            }
        };
        let mut obj = DynamicObject::new(&key.name, &ApiResource::erase::<Namespace>(&()));
        obj.metadata.uid = ns.metadata.uid;
        let note = format!(
            "{WORKLOAD_SELECTOR_PREFIX}{}: {why}; nothing of this namespace is synced to {} until it is fixed",
            self.target_key, self.target.name
        );
        let api = ApiResource::erase::<Namespace>(&());
        self.events.warn(&key.cluster, &api, &obj, "InvalidWorkloadSelector", note).await;
    }
}

fn annotation<'a>(ns: &'a Namespace, key: &str) -> Option<&'a str> {
    ns.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

fn observed(ns: &Namespace) -> naming::Observed<'_> {
    naming::Observed {
        uid: ns.metadata.uid.as_deref().unwrap_or_default(),
        locator: annotation(ns, LOCATOR_ANNOTATION),
        claim: annotation(ns, CLAIM_ANNOTATION),
    }
}
