//! What one syncer sees of its physical cluster: the namespaces and objects it wrote there.
//!
//! Everything the syncer writes carries the label `tmc.kcp.io/target=<target key>`, so its
//! watches are label-selector watches, not scans: a manual edit or deletion of a synced object
//! arrives as an event and is mapped back, through the namespace's locator annotation, to the
//! upstream object that owns it.
//!
//! Memory: an object is cached whole only until a sync has compared it with what kcp wants. Once
//! it matched, only the verdict is kept ([`Compared`]: resourceVersion, the hash of the desired
//! object it matched, and what status-up reads), so a synced ConfigMap costs a few hundred
//! bytes here instead of a second copy of its data. Any change in the cluster arrives by watch
//! as a whole object again and is compared again.
//!
//! Secrets are watched namespace by namespace, in the namespaces this syncer owns, because its
//! RBAC grants no cluster-wide Secret read (see [`super::access`]); every other kind is one
//! cluster-wide watch.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::access::watched_per_namespace;
use super::naming::{LOCATOR_ANNOTATION, Locator, TARGET_LABEL};
use super::resources::SyncedResource;
use super::upstream::SyncKey;
use crate::kcp::{ClusterKey, LogicalClusterName};
use crate::runtime::reflector::{self, Reflector, Store, Synced};

/// (resource, namespace, name) of a downstream object.
type ObjectId = (usize, String, String);
type Objects = HashMap<ObjectId, Cached>;
type Enqueue = Arc<dyn Fn(SyncKey) + Send + Sync>;
/// A watch: (resource, namespace), or (resource, `None`) cluster-wide.
type WatchId = (usize, Option<String>);

/// The watches that run once per owned namespace (see [`watched_per_namespace`]).
#[derive(Default)]
struct PerNamespace {
    /// Resources watched per namespace, with the sink and the cancellation of their watches.
    resources: HashMap<usize, (Arc<SyncedResource>, Enqueue, CancellationToken)>,
    /// The namespaces to watch them in.
    namespaces: BTreeSet<String>,
    /// Running watches by (resource, namespace).
    running: HashMap<(usize, String), CancellationToken>,
}

/// A downstream object as cached: whole until compared, then only the verdict.
#[derive(Clone)]
pub enum Cached {
    /// As the cluster last reported it, not yet compared with the desired object.
    Whole(Arc<DynamicObject>),
    /// It matched the desired object with hash `desired_hash` at `resource_version`.
    Matched(Arc<Compared>),
}

/// What is kept of a downstream object that matched the desired object.
#[derive(Debug, PartialEq)]
pub struct Compared {
    pub resource_version: Option<String>,
    pub desired_hash: String,
    /// `metadata.generation`, the spec-hash annotation and `status`, as status-up reads them;
    /// `None` for resources whose status does not come up (ConfigMaps, Secrets, …).
    pub status_view: Option<serde_json::Value>,
}

/// Names the object, never its contents: a cached Secret's data must not reach a log line.
impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cached::Whole(o) => f
                .debug_struct("Whole")
                .field("name", &o.metadata.name)
                .field("namespace", &o.metadata.namespace)
                .field("resource_version", &o.metadata.resource_version)
                .finish_non_exhaustive(),
            Cached::Matched(c) => f.debug_tuple("Matched").field(c).finish(),
        }
    }
}

impl Cached {
    fn resource_version(&self) -> Option<&str> {
        match self {
            Cached::Whole(o) => o.metadata.resource_version.as_deref(),
            Cached::Matched(c) => c.resource_version.as_deref(),
        }
    }
}

/// The parts of a downstream object status-up reads (the rest can be dropped once matched).
pub fn status_view(obj: &serde_json::Value, spec_hash_annotation: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "generation": obj["metadata"]["generation"],
            "annotations": { spec_hash_annotation: obj["metadata"]["annotations"][spec_hash_annotation] },
        },
        "status": obj["status"],
    })
}

/// Whether resourceVersion `a` is later than `b`. resourceVersions are opaque, but a
/// kube-apiserver's are etcd revisions; when they are not numbers nothing is assumed newer.
fn newer(a: Option<&str>, b: Option<&str>) -> bool {
    let rv = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
    matches!((rv(a), rv(b)), (Some(x), Some(y)) if x > y)
}

/// See the module docs.
#[derive(Clone)]
pub struct Downstream {
    pub client: Client,
    target_key: String,
    /// Name → locator of every namespace carrying our label: what events map back through.
    /// Anyone can write that label and annotation, so this map is no proof of ownership.
    namespaces: Arc<RwLock<HashMap<String, Locator>>>,
    /// Name → (locator, UID) of the namespaces proven ours (created by this syncer, or matched
    /// against the record in kcp); forgotten when the namespace is deleted or changes UID.
    owned: Arc<RwLock<HashMap<String, (Locator, String)>>>,
    objects: Arc<RwLock<Objects>>,
    /// (namespace, Deployment) pairs that a HorizontalPodAutoscaler in the cluster scales.
    autoscaled: Arc<RwLock<HashMap<(String, String), String>>>,
    /// Whether each running watch has completed its first list.
    listed: Arc<RwLock<HashMap<WatchId, Synced>>>,
    per_namespace: Arc<Mutex<PerNamespace>>,
}

impl Downstream {
    pub fn new(client: Client, target_key: &str) -> Self {
        Self {
            client,
            target_key: target_key.to_string(),
            namespaces: Default::default(),
            owned: Default::default(),
            objects: Default::default(),
            autoscaled: Default::default(),
            listed: Default::default(),
            per_namespace: Default::default(),
        }
    }

    /// Whether the cache holds the cluster's objects of `resource` in `namespace`: its watch
    /// there (or cluster-wide) has listed once. Until then an object missing from the cache may
    /// still exist in the cluster.
    pub fn synced(&self, resource: usize, namespace: &str) -> bool {
        let listed = self.listed.read().expect("downstream cache poisoned");
        [(resource, None), (resource, Some(namespace.to_string()))]
            .iter()
            .any(|id| listed.get(id).is_some_and(Synced::is_synced))
    }

    /// How many synced objects of each resource the cluster holds.
    pub fn counts(&self) -> HashMap<usize, usize> {
        let mut out = HashMap::new();
        for (index, _, _) in self.objects.read().expect("downstream cache poisoned").keys() {
            *out.entry(*index).or_default() += 1;
        }
        out
    }

    /// The upstream keys of every cached object of `resource` (to revisit them all).
    pub fn keys_of(&self, resource: usize) -> Vec<SyncKey> {
        let objects = self.objects.read().expect("downstream cache poisoned");
        let found: Vec<(String, String)> =
            objects.keys().filter(|(i, _, _)| *i == resource).map(|(_, ns, n)| (ns.clone(), n.clone())).collect();
        drop(objects);
        found.iter().filter_map(|(ns, name)| self.upstream_key(resource, ns, name)).collect()
    }

    fn selector(&self) -> watcher::Config {
        watcher::Config::default().labels(&format!("{TARGET_LABEL}={}", self.target_key))
    }

    /// The last state of a synced object the cluster reported.
    pub fn object(&self, resource: usize, namespace: &str, name: &str) -> Option<Cached> {
        let objects = self.objects.read().expect("downstream cache poisoned");
        objects.get(&(resource, namespace.to_string(), name.to_string())).cloned()
    }

    /// Caches an object the syncer just wrote, unless the watch already delivered a newer one.
    pub fn record(&self, resource: usize, obj: DynamicObject) {
        let id = (resource, obj.metadata.namespace.clone().unwrap_or_default(), obj.name_any());
        let mut objects = self.objects.write().expect("downstream cache poisoned");
        let rv = obj.metadata.resource_version.as_deref();
        let newer_cached = objects.get(&id).is_some_and(|cached| newer(cached.resource_version(), rv));
        if !newer_cached {
            objects.insert(id, Cached::Whole(Arc::new(reflector::strip(obj))));
        }
    }

    /// Replaces a whole cached object by the verdict that it matched, if the cache still holds
    /// that version (a newer event must be compared afresh).
    pub fn matched(&self, resource: usize, namespace: &str, name: &str, compared: Compared) {
        let id = (resource, namespace.to_string(), name.to_string());
        let mut objects = self.objects.write().expect("downstream cache poisoned");
        if let Some(cached) = objects.get_mut(&id)
            && cached.resource_version() == compared.resource_version.as_deref()
        {
            *cached = Cached::Matched(Arc::new(compared));
        }
    }

    /// Whether an autoscaler in the cluster scales the Deployment `namespace`/`name`.
    pub fn autoscaled(&self, namespace: &str, name: &str) -> bool {
        let map = self.autoscaled.read().expect("downstream cache poisoned");
        map.contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// Watches HorizontalPodAutoscalers (all of them: they are the cluster's, not labelled by
    /// us), remembering which Deployments they scale and re-syncing those when that changes
    /// (also when an autoscaler vanished in a relist).
    pub async fn watch_autoscalers(
        self,
        deployments: usize,
        enqueue: impl Fn(SyncKey) + Send + Sync + 'static,
        cancel: CancellationToken,
    ) {
        let api: Api<HorizontalPodAutoscaler> = Api::all(self.client.clone());
        let store = AutoscalerStore { view: self.clone(), deployments, enqueue: Arc::new(enqueue) };
        let reflector = Reflector::new(
            store,
            |hpa: &HorizontalPodAutoscaler| Some((hpa.namespace().unwrap_or_default(), hpa.name_any())),
            |_, hpa| {
                let target = &hpa.spec.scale_target_ref;
                (target.kind == "Deployment").then(|| target.name.clone())
            },
        );
        let what = format!("autoscalers for {}", self.target_key);
        reflector.run(reflector::watch(api, watcher::Config::default()), cancel, &what, |_| {}).await;
    }

    /// Records that the autoscaler `hpa` scales `deployment` (in its namespace) or nothing;
    /// re-syncs the Deployments whose autoscaling changed.
    fn autoscaler_changed(
        &self,
        hpa: &(String, String),
        deployment: Option<String>,
        resync: &dyn Fn(SyncKey),
        index: usize,
    ) {
        let hpa_id = format!("{}/{}", hpa.0, hpa.1);
        let changed = {
            let mut map = self.autoscaled.write().expect("downstream cache poisoned");
            let before: Vec<(String, String)> =
                map.iter().filter(|(_, h)| **h == hpa_id).map(|(k, _)| k.clone()).collect();
            before.iter().for_each(|k| {
                map.remove(k);
            });
            let now = deployment.map(|d| (hpa.0.clone(), d));
            if let Some(scaled) = &now {
                map.insert(scaled.clone(), hpa_id);
            }
            before.into_iter().chain(now).collect::<Vec<_>>()
        };
        for (ns, name) in changed {
            if self.object(index, &ns, &name).is_some() {
                self.upstream_key(index, &ns, &name).into_iter().for_each(resync);
            }
        }
    }

    /// Whether any synced object is left in the downstream namespace.
    pub fn namespace_in_use(&self, namespace: &str) -> bool {
        self.objects.read().expect("downstream cache poisoned").keys().any(|(_, ns, _)| ns == namespace)
    }

    /// The UID of the namespace `name` if it is proven ours for `locator`.
    pub fn owned(&self, name: &str, locator: &Locator) -> Option<String> {
        let owned = self.owned.read().expect("downstream cache poisoned");
        owned.get(name).filter(|(l, _)| l == locator).map(|(_, uid)| uid.clone())
    }

    /// Records a namespace proven ours, so events from objects in it map back even before the
    /// namespace watch reports it, and later syncs need not prove it again.
    pub fn remember_namespace(&self, name: &str, locator: Locator, uid: &str) {
        self.namespaces.write().expect("downstream cache poisoned").insert(name.to_string(), locator.clone());
        self.owned.write().expect("downstream cache poisoned").insert(name.to_string(), (locator, uid.to_string()));
        self.watch_namespace(name);
    }

    /// Forgets that `name` is ours (deleted by the syncer itself).
    pub fn forget_namespace(&self, name: &str) {
        self.owned.write().expect("downstream cache poisoned").remove(name);
    }

    /// Starts the per-namespace watches in `namespace` that do not run yet.
    fn watch_namespace(&self, namespace: &str) {
        let mut scoped = self.per_namespace.lock().expect("downstream cache poisoned");
        scoped.namespaces.insert(namespace.to_string());
        let resources: Vec<(usize, Arc<SyncedResource>, Enqueue, CancellationToken)> =
            scoped.resources.iter().map(|(i, (r, e, c))| (*i, r.clone(), e.clone(), c.clone())).collect();
        for (index, resource, enqueue, cancel) in resources {
            self.start_in(&mut scoped, index, resource, enqueue, &cancel, namespace);
        }
    }

    fn start_in(
        &self,
        scoped: &mut PerNamespace,
        index: usize,
        resource: Arc<SyncedResource>,
        enqueue: Enqueue,
        cancel: &CancellationToken,
        namespace: &str,
    ) {
        let id = (index, namespace.to_string());
        if scoped.running.contains_key(&id) {
            return;
        }
        let token = cancel.child_token();
        scoped.running.insert(id, token.clone());
        tokio::spawn(self.clone().watch(index, resource, Some(namespace.to_string()), enqueue, token));
    }

    /// Stops the per-namespace watches of a namespace that is gone, and forgets what they saw.
    fn unwatch_namespace(&self, namespace: &str) {
        let mut scoped = self.per_namespace.lock().expect("downstream cache poisoned");
        scoped.namespaces.remove(namespace);
        let stopped: Vec<usize> = scoped.running.keys().filter(|(_, ns)| ns == namespace).map(|(i, _)| *i).collect();
        for index in &stopped {
            if let Some(token) = scoped.running.remove(&(*index, namespace.to_string())) {
                token.cancel();
            }
        }
        drop(scoped);
        let mut listed = self.listed.write().expect("downstream cache poisoned");
        stopped.iter().for_each(|i| {
            listed.remove(&(*i, Some(namespace.to_string())));
        });
        drop(listed);
        let mut objects = self.objects.write().expect("downstream cache poisoned");
        objects.retain(|(i, ns, _), _| ns != namespace || !stopped.contains(i));
    }

    /// The upstream keys of the cached objects in a downstream namespace.
    fn objects_in(&self, namespace: &str) -> Vec<SyncKey> {
        let objects = self.objects.read().expect("downstream cache poisoned");
        let found: Vec<(usize, String)> =
            objects.keys().filter(|(_, ns, _)| ns == namespace).map(|(i, _, n)| (*i, n.clone())).collect();
        drop(objects);
        found.iter().filter_map(|(i, name)| self.upstream_key(*i, namespace, name)).collect()
    }

    /// The upstream key an event on a downstream object maps back to.
    fn upstream_key(&self, resource: usize, namespace: &str, name: &str) -> Option<SyncKey> {
        let namespaces = self.namespaces.read().expect("downstream cache poisoned");
        let locator = namespaces.get(namespace)?;
        let cluster = LogicalClusterName::new(locator.cluster.as_str()).ok()?;
        Some(SyncKey { resource: Some(resource), key: ClusterKey::new(cluster, Some(locator.namespace.clone()), name) })
    }

    /// Watches the namespaces this syncer owns, keeping the name → locator map. Objects that
    /// were cached before their namespace was known are sent to `enqueue` once it is, so none is
    /// missed (e.g. an orphan found after a restart). A namespace that vanished in a relist
    /// (deleted while the watch was down) is forgotten like a deleted one.
    pub async fn watch_namespaces(self, enqueue: impl Fn(SyncKey) + Send + Sync + 'static, cancel: CancellationToken) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let store = NamespaceStore { view: self.clone(), enqueue: Arc::new(enqueue), uids: Default::default() };
        let reflector = Reflector::new(store, |ns: &Namespace| Some(ns.name_any()), |_, ns| ns);
        let what = format!("downstream namespaces of {}", self.target_key);
        // NamespaceStore acts on every change itself.
        reflector.run(reflector::watch(api, self.selector()), cancel, &what, |_| {}).await;
    }

    /// A namespace carrying our label appeared or changed; `listed` when it came from a list.
    fn namespace_seen(&self, ns: &Namespace, listed: bool, enqueue: &Enqueue) {
        let name = ns.name_any();
        // Same name, another UID: deleted and created again, perhaps by someone else.
        let mut owned = self.owned.write().expect("downstream cache poisoned");
        if owned.get(&name).is_some_and(|(_, uid)| ns.metadata.uid.as_ref() != Some(uid)) {
            owned.remove(&name);
        }
        drop(owned);
        let locator = ns.annotations().get(LOCATOR_ANNOTATION).and_then(|a| Locator::from_annotation(a));
        let mut map = self.namespaces.write().expect("downstream cache poisoned");
        if let Some(locator) = locator
            && map.insert(name.clone(), locator).is_none()
        {
            drop(map);
            // Namespaces found by a list are watched at once (to find orphans); new ones once
            // the engine has made sure they are ours and bound (`remember_namespace`), so no
            // watch starts before it may read there.
            if listed {
                self.watch_namespace(&name);
            }
            self.objects_in(&name).into_iter().for_each(|k| enqueue(k));
        }
    }

    /// A namespace is gone: ownership is forgotten if it was proven for its last-seen `uid` (or
    /// for any, when that is unknown).
    fn namespace_gone(&self, name: &str, uid: Option<&String>) {
        self.namespaces.write().expect("downstream cache poisoned").remove(name);
        let mut owned = self.owned.write().expect("downstream cache poisoned");
        if owned.get(name).is_some_and(|(_, owned_uid)| uid.is_none_or(|uid| uid == owned_uid)) {
            owned.remove(name);
        }
        drop(owned);
        self.unwatch_namespace(name);
    }

    /// Watches the synced objects of one resource, caching them and sending the upstream key of
    /// every change (drift, deletion, new status) to `enqueue`: cluster-wide, or in each owned
    /// namespace for a resource [`watched_per_namespace`] (then this returns at once).
    pub async fn watch_resource(
        self,
        index: usize,
        resource: Arc<SyncedResource>,
        enqueue: impl Fn(SyncKey) + Send + Sync + 'static,
        cancel: CancellationToken,
    ) {
        let enqueue: Enqueue = Arc::new(enqueue);
        if !watched_per_namespace(&resource.api) {
            return self.watch(index, resource, None, enqueue, cancel).await;
        }
        let mut scoped = self.per_namespace.lock().expect("downstream cache poisoned");
        scoped.resources.insert(index, (resource.clone(), enqueue.clone(), cancel.clone()));
        for namespace in scoped.namespaces.clone() {
            self.start_in(&mut scoped, index, resource.clone(), enqueue.clone(), &cancel, &namespace);
        }
    }

    /// One watch of `resource`, in `namespace` or (`None`) cluster-wide. After a relist, objects
    /// the cache held that the cluster no longer has (deleted while the watch was down) are
    /// dropped and their upstream keys sent, so the sync sees them missing and restores them.
    async fn watch(
        self,
        index: usize,
        resource: Arc<SyncedResource>,
        namespace: Option<String>,
        enqueue: Enqueue,
        cancel: CancellationToken,
    ) {
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource.api),
            None => Api::all_with(self.client.clone(), &resource.api),
        };
        let slice = Slice { objects: self.objects.clone(), index, namespace: namespace.clone() };
        let reflector = Reflector::new(
            slice,
            move |o: &DynamicObject| Some((index, o.metadata.namespace.clone().unwrap_or_default(), o.name_any())),
            |_, o| Cached::Whole(Arc::new(o)),
        );
        self.listed.write().expect("downstream cache poisoned").insert((index, namespace.clone()), reflector.synced());
        let what = format!(
            "downstream {} of {} in {}",
            resource.api.plural,
            self.target_key,
            namespace.as_deref().unwrap_or("*")
        );
        // Cache first (the reflector stores before it reports), then map back: the namespace
        // watch adds a namespace to its map before it re-sends the cached objects in it, so
        // whichever runs second sees the other's work and no object is lost between the two.
        reflector
            .run(reflector::watch(api, self.selector()), cancel, &what, |changes| {
                for change in changes {
                    let (_, ns, name) = change.key();
                    let key = self.upstream_key(index, ns, name);
                    tracing::debug!(target_key = %self.target_key, resource = %resource.api.plural, object = ?change, upstream = ?key, "downstream event");
                    if let Some(key) = key {
                        enqueue(key);
                    }
                }
            })
            .await;
    }
}

/// The autoscaler watch's view: which Deployment each autoscaler scales.
struct AutoscalerStore {
    view: Downstream,
    deployments: usize,
    enqueue: Enqueue,
}

impl Store for AutoscalerStore {
    type Key = (String, String);
    type Item = Option<String>;
    fn upsert(&self, hpa: &(String, String), scaled: Option<String>) {
        self.view.autoscaler_changed(hpa, scaled, &*self.enqueue, self.deployments);
    }
    fn remove(&self, hpa: &(String, String)) {
        self.view.autoscaler_changed(hpa, None, &*self.enqueue, self.deployments);
    }
    fn replace(&self, fresh: Vec<((String, String), Option<String>)>) -> Vec<(String, String)> {
        let listed: HashSet<String> = fresh.iter().map(|((ns, n), _)| format!("{ns}/{n}")).collect();
        let known: Vec<String> =
            self.view.autoscaled.read().expect("downstream cache poisoned").values().cloned().collect();
        let vanished: Vec<(String, String)> = known
            .into_iter()
            .filter(|id| !listed.contains(id))
            .filter_map(|id| id.split_once('/').map(|(ns, n)| (ns.to_string(), n.to_string())))
            .collect();
        fresh.into_iter().for_each(|(hpa, scaled)| self.upsert(&hpa, scaled));
        vanished.iter().for_each(|hpa| self.remove(hpa));
        vanished
    }
}

/// The namespace watch's view: the name → locator map and the per-namespace watches.
struct NamespaceStore {
    view: Downstream,
    enqueue: Enqueue,
    /// The UID each namespace was last seen with: a delete forgets ownership only of that one.
    uids: Mutex<HashMap<String, Option<String>>>,
}

impl NamespaceStore {
    fn seen(&self, ns: &Namespace, listed: bool) {
        let uids = &mut *self.uids.lock().expect("downstream cache poisoned");
        uids.insert(ns.name_any(), ns.metadata.uid.clone());
        self.view.namespace_seen(ns, listed, &self.enqueue);
    }

    fn gone(&self, name: &String) {
        let uid = self.uids.lock().expect("downstream cache poisoned").remove(name).flatten();
        self.view.namespace_gone(name, uid.as_ref());
    }
}

impl Store for NamespaceStore {
    type Key = String;
    type Item = Namespace;
    fn upsert(&self, _: &String, ns: Namespace) {
        self.seen(&ns, false);
    }
    fn remove(&self, name: &String) {
        self.gone(name);
    }
    fn replace(&self, fresh: Vec<(String, Namespace)>) -> Vec<String> {
        let listed: HashSet<&String> = fresh.iter().map(|(k, _)| k).collect();
        let known: Vec<String> =
            self.view.namespaces.read().expect("downstream cache poisoned").keys().cloned().collect();
        let vanished: Vec<String> = known.into_iter().filter(|k| !listed.contains(k)).collect();
        drop(listed);
        fresh.iter().for_each(|(_, ns)| self.seen(ns, true));
        vanished.iter().for_each(|name| self.gone(name));
        vanished
    }
}

/// The objects one downstream watch owns in the shared cache: those of its resource, in its
/// namespace (or all namespaces).
struct Slice {
    objects: Arc<RwLock<Objects>>,
    index: usize,
    namespace: Option<String>,
}

impl Slice {
    fn owns(&self, (index, ns, _): &ObjectId) -> bool {
        *index == self.index && self.namespace.as_ref().is_none_or(|mine| mine == ns)
    }
}

impl Store for Slice {
    type Key = ObjectId;
    type Item = Cached;
    fn upsert(&self, key: &ObjectId, item: Cached) {
        self.objects.write().expect("downstream cache poisoned").insert(key.clone(), item);
    }
    fn remove(&self, key: &ObjectId) {
        self.objects.write().expect("downstream cache poisoned").remove(key);
    }
    fn replace(&self, fresh: Vec<(ObjectId, Cached)>) -> Vec<ObjectId> {
        let mut objects = self.objects.write().expect("downstream cache poisoned");
        let listed: HashSet<&ObjectId> = fresh.iter().map(|(k, _)| k).collect();
        let vanished: Vec<ObjectId> = objects.keys().filter(|k| self.owns(k) && !listed.contains(k)).cloned().collect();
        vanished.iter().for_each(|k| {
            objects.remove(k);
        });
        // A write the syncer recorded while the list was under way is newer than the list.
        for (key, item) in fresh {
            if !objects.get(&key).is_some_and(|cached| newer(cached.resource_version(), item.resource_version())) {
                objects.insert(key, item);
            }
        }
        vanished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A client that is never called: these tests exercise the cache alone.
    fn offline_client() -> Client {
        let service = tower::service_fn(|_: http::Request<kube::client::Body>| async {
            Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("offline"))
        });
        Client::new(service, "default")
    }

    fn object(rv: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "c", "namespace": "ns", "resourceVersion": rv },
            "data": { "big": "x".repeat(100) },
        }))
        .unwrap()
    }

    fn compared(rv: &str) -> Compared {
        Compared { resource_version: Some(rv.into()), desired_hash: "h".into(), status_view: None }
    }

    fn state(d: &Downstream) -> Option<(&'static str, String)> {
        d.object(0, "ns", "c").map(|c| match &c {
            Cached::Whole(o) => ("whole", o.metadata.resource_version.clone().unwrap_or_default()),
            Cached::Matched(m) => ("matched", m.resource_version.clone().unwrap_or_default()),
        })
    }

    #[tokio::test]
    async fn objects_are_kept_whole_until_matched_and_newer_versions_win() {
        let d = Downstream::new(offline_client(), "key");
        d.record(0, object("5"));
        assert_eq!(state(&d), Some(("whole", "5".into())));
        // A verdict for another version is stale and dropped.
        d.matched(0, "ns", "c", compared("4"));
        assert_eq!(state(&d), Some(("whole", "5".into())));
        d.matched(0, "ns", "c", compared("5"));
        assert_eq!(state(&d), Some(("matched", "5".into())));
        // An older write response never replaces what the watch (or a later write) delivered.
        d.record(0, object("3"));
        assert_eq!(state(&d), Some(("matched", "5".into())));
        d.record(0, object("7"));
        assert_eq!(state(&d), Some(("whole", "7".into())));
        assert_eq!(d.counts(), HashMap::from([(0, 1)]));
    }

    #[test]
    fn a_relist_replaces_only_its_own_slice_and_keeps_newer_writes() {
        let objects: Arc<RwLock<Objects>> = Default::default();
        let mut cm = object("5");
        let id = |i: usize, ns: &str, n: &str| (i, ns.to_string(), n.to_string());
        {
            let mut map = objects.write().unwrap();
            for key in [id(0, "ns", "c"), id(0, "ns", "gone"), id(0, "other", "x"), id(1, "ns", "c")] {
                map.insert(key, Cached::Whole(Arc::new(cm.clone())));
            }
        }
        // Resource 0 in namespace "ns" relists: "gone" did not come back; "c" came back older
        // than what the syncer recorded meanwhile.
        cm.metadata.resource_version = Some("4".into());
        let slice = Slice { objects: objects.clone(), index: 0, namespace: Some("ns".into()) };
        let vanished = slice.replace(vec![(id(0, "ns", "c"), Cached::Whole(Arc::new(cm)))]);
        assert_eq!(vanished, vec![id(0, "ns", "gone")]);
        let map = objects.read().unwrap();
        let mut keys: Vec<_> = map.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, vec![id(0, "ns", "c"), id(0, "other", "x"), id(1, "ns", "c")], "other slices untouched");
        assert_eq!(map[&id(0, "ns", "c")].resource_version(), Some("5"), "the newer recorded write stays");
    }

    #[test]
    fn status_view_keeps_what_status_up_reads() {
        let obj = json!({
            "metadata": { "generation": 3, "annotations": { "tmc.kcp.io/spec-hash": "abc", "other": "x" } },
            "spec": { "template": "large" },
            "status": { "replicas": 2 },
        });
        let view = status_view(&obj, "tmc.kcp.io/spec-hash");
        assert_eq!(
            view,
            json!({
                "metadata": { "generation": 3, "annotations": { "tmc.kcp.io/spec-hash": "abc" } },
                "status": { "replicas": 2 },
            })
        );
    }
}
