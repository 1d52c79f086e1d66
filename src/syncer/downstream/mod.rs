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

mod stores;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use self::stores::{AutoscalerStore, NamespaceStore, Slice};
use super::access::watched_per_namespace;
use super::naming::{LOCATOR_ANNOTATION, Locator, SPEC_HASH_ANNOTATION, TARGET_LABEL};
use super::resources::SyncedResource;
use super::upstream::SyncKey;
use crate::kcp::{ClusterKey, LogicalClusterName};
use crate::runtime::reflector::{self, Reflector, Synced};

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

/// Compares a downstream object with the `desired` one (whose hash is `desired_hash`): what is
/// kept of it when it matches, and the first difference when it does not. The status view is
/// taken either way, for status-up (`status_up`: its resource's status comes up).
pub fn compare(
    obj: &DynamicObject,
    desired: &serde_json::Value,
    desired_hash: &str,
    status_up: bool,
) -> (Compared, Option<String>) {
    let whole = serde_json::to_value(obj).unwrap_or_default();
    let difference = (!crate::json::is_subset(desired, &whole))
        .then(|| crate::json::first_difference(desired, &whole).unwrap_or_else(|| "differs".into()));
    let compared = Compared {
        resource_version: obj.metadata.resource_version.clone(),
        desired_hash: desired_hash.to_string(),
        status_view: status_up.then(|| status_view(&whole, SPEC_HASH_ANNOTATION)),
    };
    (compared, difference)
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

    /// Caches what the cluster answered to a write of the syncer (its verdict when it matched
    /// what was written, see [`compare`]), unless the watch already delivered a newer version.
    pub fn record(&self, resource: usize, namespace: &str, name: &str, cached: Cached) {
        let id = (resource, namespace.to_string(), name.to_string());
        let mut objects = self.objects.write().expect("downstream cache poisoned");
        let newer_cached = objects.get(&id).is_some_and(|c| newer(c.resource_version(), cached.resource_version()));
        if !newer_cached {
            objects.insert(id, cached);
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
        let types = resource.api.clone();
        let reflector = Reflector::new(
            slice,
            move |o: &DynamicObject| Some((index, o.metadata.namespace.clone().unwrap_or_default(), o.name_any())),
            // Items of a list carry no apiVersion and kind (only watch events do): without them
            // every copy read by a (re)list would differ from the desired object and be applied
            // again, one write per object after every restart or relist.
            move |_, mut o: DynamicObject| {
                o.types.get_or_insert_with(|| kube::core::TypeMeta {
                    api_version: types.api_version.clone(),
                    kind: types.kind.clone(),
                });
                Cached::Whole(Arc::new(o))
            },
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

#[cfg(test)]
mod tests;
