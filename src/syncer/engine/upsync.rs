//! Upsync's I/O (a Placement's `spec.upsync`): objects an operator created in this target's copy
//! of a namespace are copied back into the tenant's namespace in kcp.
//!
//! One watch per (kind, downstream namespace) of the objects *without* this target's label, only
//! in namespaces proven ours (a namespace someone else created is never read from). After each
//! change, and every [`RESYNC`], a pass decides per name with [`upsync::decide`]. A copy is
//! written only into the namespace whose copy in the cluster holds the original (the locator
//! maps it back, so one tenant's cluster objects never reach another tenant), and deleted only
//! once the watch has listed without its original: an unlisted watch means unknown, never gone.
//! Nothing happens for a kind whose kcp view has not listed either.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::TypeMeta;
use kube::runtime::watcher;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Engine;
use super::scope::Route;
use crate::kcp::{ClusterKey, error_message};
use crate::runtime::reflector::{self, Reflector, Store, Synced};
use crate::syncer::naming::{Locator, TARGET_LABEL};
use crate::syncer::redact;
use crate::syncer::upsync::{self, Step};

/// The field manager of upsync's writes to kcp.
pub const UPSYNC_FIELD_MANAGER: &str = "tmc-upsyncer";

/// How often the pass runs without a change (a failed write is retried then).
const RESYNC: Duration = Duration::from_secs(15);

/// Upsync's state in one syncer.
#[derive(Default)]
pub(super) struct Upsyncs {
    watches: Mutex<HashMap<(usize, String), Watch>>,
    changed: tokio::sync::Notify,
    /// Hashes written whose write the kcp view has not shown yet: not written again meanwhile.
    written: Mutex<HashMap<(usize, ClusterKey), String>>,
    /// Conflicts already reported, by (resource, key, UID of kcp's object): one event each.
    reported: Mutex<HashSet<(usize, ClusterKey, String)>>,
}

/// One watch of originals in a downstream namespace, for the tenant namespace `source`.
struct Watch {
    source: ClusterKey,
    originals: Arc<Originals>,
    listed: Synced,
    cancel: CancellationToken,
}

/// The originals one watch sees, by name.
#[derive(Default)]
struct Originals(RwLock<HashMap<String, Arc<DynamicObject>>>);

impl Store for Arc<Originals> {
    type Key = String;
    type Item = Arc<DynamicObject>;
    fn upsert(&self, key: &String, item: Arc<DynamicObject>) {
        self.0.write().expect("originals poisoned").insert(key.clone(), item);
    }
    fn remove(&self, key: &String) {
        self.0.write().expect("originals poisoned").remove(key);
    }
    fn replace(&self, fresh: Vec<(String, Arc<DynamicObject>)>) -> Vec<String> {
        let mut map = self.0.write().expect("originals poisoned");
        let fresh: HashMap<String, Arc<DynamicObject>> = fresh.into_iter().collect();
        let gone = map.keys().filter(|k| !fresh.contains_key(*k)).cloned().collect();
        *map = fresh;
        gone
    }
}

impl Upsyncs {
    /// Runs a pass soon: an assignment changed, or a namespace was proven ours.
    pub(super) fn wake(&self) {
        self.changed.notify_one();
    }
}

impl Engine {
    /// Runs upsync until `cancel` fires.
    pub(super) async fn upsync(self, cancel: CancellationToken) {
        loop {
            self.upsync_watches(&cancel);
            self.upsync_pass().await;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.upsyncs.changed.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            // Changes that arrive together are handled in one pass.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.upsyncs.watches.lock().expect("upsync poisoned").drain().for_each(|(_, w)| w.cancel.cancel());
    }

    /// Starts the watches the assignments ask for and stops the others.
    fn upsync_watches(&self, cancel: &CancellationToken) {
        let active: Vec<usize> = self.active.read().expect("active poisoned").iter().copied().collect();
        let mut wanted: HashMap<(usize, String), ClusterKey> = HashMap::new();
        for (ns_key, kinds) in self.upstream.upsynced_namespaces(&self.target_key) {
            if self.route(&ns_key.cluster) != Route::Mine || !self.consents(&ns_key.cluster) {
                continue;
            }
            let locator = Locator::new(self.target.clone(), &ns_key.cluster, &ns_key.name);
            let dns = locator.downstream_namespace();
            if self.downstream.owned(&dns, &locator).is_none() {
                continue;
            }
            for &index in &active {
                let Some(r) = self.upstream.resource(index) else { continue };
                if kinds.contains(&(r.api.group.clone(), r.api.kind.clone())) {
                    wanted.insert((index, dns.clone()), ns_key.clone());
                }
            }
        }
        let mut watches = self.upsyncs.watches.lock().expect("upsync poisoned");
        watches.retain(|k, w| {
            let keep = wanted.contains_key(k);
            if !keep {
                w.cancel.cancel();
            }
            keep
        });
        for ((index, dns), source) in wanted {
            if watches.contains_key(&(index, dns.clone())) {
                continue;
            }
            let Some(resource) = self.upstream.resource(index) else { continue };
            let api: Api<DynamicObject> = Api::namespaced_with(self.downstream.client.clone(), &dns, &resource.api);
            let config = watcher::Config::default().labels(&format!("!{TARGET_LABEL}"));
            let originals = Arc::new(Originals::default());
            let reflector =
                Reflector::new(originals.clone(), |o: &DynamicObject| Some(o.name_any()), |_, o| Arc::new(o));
            let listed = reflector.synced();
            let child = cancel.child_token();
            let (upsyncs, c, what) =
                (self.upsyncs.clone(), child.clone(), format!("originals of {} in {dns}", resource.api.plural));
            tokio::spawn(async move {
                let events = reflector::watch(api, config);
                reflector.run(events, c, &what, move |_| upsyncs.changed.notify_one()).await;
            });
            watches.insert((index, dns), Watch { source, originals, listed, cancel: child });
        }
    }

    /// Decides and acts for every name of every watch.
    async fn upsync_pass(&self) {
        let snapshot: Vec<(usize, ClusterKey, Arc<Originals>, bool)> = {
            let watches = self.upsyncs.watches.lock().expect("upsync poisoned");
            watches
                .iter()
                .map(|((i, _), w)| (*i, w.source.clone(), w.originals.clone(), w.listed.is_synced()))
                .collect()
        };
        for (index, source, originals, listed) in snapshot {
            let Some(resource) = self.upstream.resource(index) else { continue };
            // kcp's view unknown: a copy missing from it might exist; nothing is decided.
            if !self.upstream.synced(index) {
                continue;
            }
            let kind = resource.api.kind.clone();
            let types = TypeMeta { api_version: resource.api.api_version.clone(), kind: kind.clone() };
            let originals: HashMap<String, Arc<DynamicObject>> =
                originals.0.read().expect("originals poisoned").clone();
            let mut names: BTreeSet<String> = originals.keys().cloned().collect();
            // kcp's side is read as metadata only (labels, UID, kcp-tmc's annotations): all
            // `in_kcp`, delete and conflict read, without decoding every object of the namespace.
            for key in self.upstream.keys_in(index, &source.cluster, &source.name) {
                let from_us = self
                    .upstream
                    .metadata(index, &key)
                    .is_some_and(|o| o.labels().get(crate::apis::names::UPSYNCED_FROM_LABEL) == Some(&self.target_key));
                if from_us {
                    names.insert(key.name);
                }
            }
            for name in names {
                let key = ClusterKey::new(source.cluster.clone(), Some(source.name.clone()), name.clone());
                let original = originals.get(&name).map(|o| serde_json::to_value(o.as_ref()).unwrap_or_default());
                let desired = original
                    .filter(|o| upsync::copyable(&kind, o))
                    .map(|o| upsync::desired(&o, &types, &self.target_key));
                let held = self.upstream.metadata(index, &key);
                let held_value = held.as_ref().map(|o| serde_json::to_value(o).unwrap_or_default());
                let kcp = upsync::in_kcp(held_value.as_ref(), &self.target_key);
                match upsync::decide(desired.as_ref(), listed, &kcp) {
                    Step::Nothing => {
                        self.upsyncs.written.lock().expect("upsync poisoned").remove(&(index, key));
                    }
                    Step::Write => self.upsync_write(index, &resource.api, &key, desired.as_ref()).await,
                    Step::Delete => self.upsync_delete(&resource.api, &key, held.as_ref()).await,
                    Step::Conflict => self.upsync_conflict(index, &resource.api, &key, held.as_ref()).await,
                }
            }
        }
    }

    async fn upsync_write(
        &self,
        index: usize,
        api: &kube::core::ApiResource,
        key: &ClusterKey,
        desired: Option<&Value>,
    ) {
        let Some(desired) = desired else { return };
        let hash = desired["metadata"]["annotations"][upsync::UPSYNC_HASH_ANNOTATION].as_str().unwrap_or_default();
        let memo = (index, key.clone());
        if self.upsyncs.written.lock().expect("upsync poisoned").get(&memo).is_some_and(|h| h == hash) {
            return;
        }
        let params = PatchParams::apply(UPSYNC_FIELD_MANAGER).force();
        match self.upstream_api(api, key).patch(&key.name, &params, &Patch::Apply(desired)).await {
            Ok(_) => {
                tracing::info!(workspace = %key.cluster, namespace = ?key.namespace, name = %key.name, "copied back to kcp");
                self.upsyncs.written.lock().expect("upsync poisoned").insert(memo, hash.to_string());
            }
            // Retried at the next pass. A refusal is told to the tenant once per version of the
            // original, on their namespace (in it, so `kubectl -n <ns> get events` shows it),
            // with what kcp said about a Secret's values cut out.
            Err(e) => {
                let message = redact::scrub(desired, &error_message(&e));
                tracing::warn!(workspace = %key.cluster, name = %key.name, error = %message, "copying back to kcp failed; retrying");
                let refused =
                    matches!(&e, kube::Error::Api(s) if (400..500).contains(&s.code) && ![409, 429].contains(&s.code));
                let first = self.upsyncs.reported.lock().expect("upsync poisoned").insert((
                    index,
                    key.clone(),
                    format!("refused:{hash}"),
                ));
                if refused && first {
                    let ns = key.namespace.as_deref().unwrap_or_default();
                    let namespace_api = kube::core::ApiResource::erase::<Namespace>(&());
                    let regarding = DynamicObject::new(ns, &namespace_api).within(ns);
                    let said = crate::net::response::bounded_line(&message, crate::net::response::MESSAGE_MAX);
                    let note =
                        format!("{} could not copy back {} {}: {said}; retrying", self.target.name, api.kind, key.name);
                    self.events.warn(&key.cluster, &namespace_api, &regarding, "UpsyncFailed", note).await;
                }
            }
        }
    }

    /// Deletes the copy `held` (this target's, as `decide` checked), if kcp still holds that
    /// very object.
    async fn upsync_delete(&self, api: &kube::core::ApiResource, key: &ClusterKey, held: Option<&DynamicObject>) {
        let Some(uid) = held.and_then(|o| o.metadata.uid.clone()) else { return };
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
            ..Default::default()
        };
        match self.upstream_api(api, key).delete(&key.name, &params).await {
            Ok(_) => {
                tracing::info!(workspace = %key.cluster, name = %key.name, "copy deleted in kcp: its original is gone")
            }
            Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
            Err(e) => tracing::warn!(workspace = %key.cluster, name = %key.name, error = %error_message(&e),
                "deleting a copied-back object failed; retrying"),
        }
    }

    /// Says once, on kcp's object, that the cluster's original of the same name is not copied
    /// back over it.
    async fn upsync_conflict(
        &self,
        index: usize,
        api: &kube::core::ApiResource,
        key: &ClusterKey,
        held: Option<&DynamicObject>,
    ) {
        let Some(held) = held else { return };
        let uid = held.metadata.uid.clone().unwrap_or_default();
        if !self.upsyncs.reported.lock().expect("upsync poisoned").insert((index, key.clone(), uid)) {
            return;
        }
        let note = format!(
            "{} holds a {} {} created in its cluster; not copied back: this {} is not a copy from there, and is left as it is",
            self.target.name, api.kind, key.name, api.kind
        );
        self.events.warn(&key.cluster, api, held, "UpsyncConflict", note).await;
    }
}
