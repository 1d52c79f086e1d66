//! The shared view of kcp that every push-mode syncer behind one virtual-workspace URL reads.
//!
//! Watch once, fan out: one wildcard watch of namespaces (their assignment labels) and one per
//! synced resource feed caches keyed by logical cluster; each change is routed to the syncers of
//! the targets the object's namespace is assigned to. A namespace whose assignment changes routes
//! all its objects to the targets it gained or lost, so they copy or clean up.
//!
//! Resources are added on demand ([`Upstream::ensure`]) as syncers discover what their targets
//! support; a resource's slot index never changes, and its watch runs as long as the view does.
//!
//! Bounded cost: objects are kept whole only in namespaces assigned to some target and only up to
//! a size limit; of all others the view keeps metadata (see [`super::kept`]), and
//! [`Upstream::whole`] reads such an object from kcp when a sync needs it. Resource watches list
//! by streaming (`sendInitialEvents`): the initial state arrives one object at a time and is
//! slimmed as it arrives, instead of in pages of 500 whole objects that would all be in memory
//! at once.

mod assignments;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::kept::{self, Held};
use super::resources::{Assignment, SyncedResource, Unavailable};
use crate::apis::sync::v1alpha1::SyncedResourceState;
use crate::kcp::{ClusterClients, ClusterKey, LogicalClusterName, WorkspacePath, error_message};
use crate::runtime::cache::ClusterCache;
use crate::runtime::guard::supervise;
use crate::runtime::reflector::{self, Reflector, Store, Synced, cluster_key};

/// What a syncer is asked to reconcile: one object of one synced resource (by slot index), or
/// with `resource: None` a whole namespace (its downstream clean-up).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncKey {
    pub resource: Option<usize>,
    pub key: ClusterKey,
}

/// What [`Upstream::whole`] found.
#[derive(Debug)]
pub enum Read {
    /// The object whole, in the version the view holds.
    Whole(Arc<DynamicObject>),
    /// Not in the view, or not in kcp.
    Gone,
    /// kcp holds a newer version than the view had; the view has it now: sync again.
    Newer,
}

/// One watched resource and its cache.
struct Slot {
    resource: Arc<SyncedResource>,
    cache: ClusterCache<Held>,
    /// Held across every write of `cache` together with the placement check that decides what
    /// is kept, so that a namespace's assignment changing in between cannot leave an object
    /// whole in a namespace placed nowhere.
    writing: Mutex<()>,
    /// Set once the resource's watch has listed kcp: before that, an object missing from the
    /// cache is unknown, not absent (see [`Upstream::synced`]).
    synced: Synced,
}

/// A slot's cache as its reflector writes it: every write takes the slot's write lock and
/// checks placement again, so an object held whole (decided as it arrived, perhaps while a
/// relist was buffered) is slimmed if its namespace was unplaced meanwhile.
struct SlotStore {
    slot: Arc<Slot>,
    view: Upstream,
}

impl SlotStore {
    fn checked(&self, key: &ClusterKey, held: Held) -> Held {
        if held.is_whole() && !self.view.placed(key) { held.slimmed() } else { held }
    }
}

impl Store for SlotStore {
    type Key = ClusterKey;
    type Item = Held;
    fn upsert(&self, key: &ClusterKey, held: Held) {
        let _writing = self.slot.writing.lock().expect("slot writer poisoned");
        self.slot.cache.insert(key, self.checked(key, held));
    }
    fn remove(&self, key: &ClusterKey) {
        let _writing = self.slot.writing.lock().expect("slot writer poisoned");
        self.slot.cache.remove(key);
    }
    fn replace(&self, fresh: Vec<(ClusterKey, Held)>) -> Vec<ClusterKey> {
        let _writing = self.slot.writing.lock().expect("slot writer poisoned");
        let fresh = fresh.into_iter().map(|(k, h)| (k.clone(), self.checked(&k, h))).collect();
        self.slot.cache.replace_all(fresh, |_| true)
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Upstream {
    pub clients: ClusterClients,
    /// What the watches span: every bound workspace (`/clusters/*` through the virtual
    /// workspace) in the manager, one workspace in a pull-mode syncer.
    watch_client: kube::Client,
    slots: Arc<RwLock<Vec<Arc<Slot>>>>,
    /// Serialises [`Upstream::ensure`], so two syncers asking at once share one watch.
    adding: Arc<tokio::sync::Mutex<()>>,
    namespaces: ClusterCache<Assignment>,
    /// Every namespace the view lists, placed or not: which workspaces this endpoint serves
    /// (see [`Upstream::serves`]).
    present: ClusterCache<()>,
    /// True once the namespace watch has listed: resource watches wait for it, so objects of
    /// placed namespaces are kept whole from the first list rather than each read again.
    namespaces_listed: Synced,
    /// The largest encoded object kept whole (see [`super::kept`]).
    whole_object_limit: usize,
    subscribers: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<SyncKey>>>>,
    cancel: CancellationToken,
}

impl Upstream {
    /// Watches every workspace bound to the export behind `clients` (a virtual-workspace URL)
    /// until `cancel` fires.
    pub fn new(clients: ClusterClients, cancel: CancellationToken) -> Self {
        let watch_client = clients.wildcard();
        Self::with_watch_client(clients, watch_client, cancel)
    }

    /// Watches the one workspace `path` (pull mode: a syncer beside the cluster).
    pub fn for_workspace(clients: ClusterClients, path: &WorkspacePath, cancel: CancellationToken) -> Self {
        let watch_client = clients.path(path);
        Self::with_watch_client(clients, watch_client, cancel)
    }

    fn with_watch_client(clients: ClusterClients, watch_client: kube::Client, cancel: CancellationToken) -> Self {
        Self {
            clients,
            watch_client,
            slots: Default::default(),
            adding: Default::default(),
            namespaces: ClusterCache::default(),
            present: ClusterCache::default(),
            namespaces_listed: Synced::default(),
            whole_object_limit: kept::DEFAULT_WHOLE_OBJECT_LIMIT,
            subscribers: Default::default(),
            cancel,
        }
    }

    /// Keeps objects whole only up to `bytes` of JSON (default
    /// [`kept::DEFAULT_WHOLE_OBJECT_LIMIT`]); larger ones are read from kcp when synced.
    pub fn with_whole_object_limit(mut self, bytes: usize) -> Self {
        self.whole_object_limit = bytes;
        self
    }

    /// Watches namespaces until cancelled; resource watches start in [`Upstream::ensure`].
    pub async fn run(self) {
        let cancel = self.cancel.clone();
        let c = cancel.clone();
        supervise("kcp namespace watch", cancel, move || self.clone().watch_namespaces(c.clone())).await
    }

    /// The slot index of `resource`, starting its watch first if nobody watches it yet. Fails
    /// with `NotServedByKcp` when kcp does not serve it here (not exported, not claimed).
    pub async fn ensure(&self, resource: &SyncedResource) -> Result<usize, Unavailable> {
        let _adding = self.adding.lock().await;
        if let Some(index) = self.index_of(&resource.api) {
            return Ok(index);
        }
        let api: Api<DynamicObject> = Api::all_with(self.watch_client.clone(), &resource.api);
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(Unavailable::new(
                    SyncedResourceState::NotServedByKcp,
                    format!(
                        "kcp does not serve {} {} here: add it to the APIExport (tmc install --workload-crd) or bind it",
                        resource.api.api_version, resource.api.plural
                    ),
                ));
            }
            Err(e) => {
                return Err(Unavailable::new(
                    SyncedResourceState::DiscoveryFailed,
                    format!("listing {} in kcp failed: {}", resource.api.plural, error_message(&e)),
                ));
            }
        }
        let slot = Arc::new(Slot {
            resource: Arc::new(resource.clone()),
            cache: ClusterCache::default(),
            writing: Mutex::new(()),
            synced: Synced::default(),
        });
        let index = {
            let mut slots = self.slots.write().expect("slots poisoned");
            slots.push(slot);
            slots.len() - 1
        };
        tracing::info!(endpoint = self.clients.base_url(), resource = %resource.api.plural, "watching a new resource in kcp");
        let (this, c) = (self.clone(), self.cancel.clone());
        tokio::spawn(supervise("kcp resource watch", c.clone(), move || this.clone().watch_resource(index, c.clone())));
        Ok(index)
    }

    fn index_of(&self, api: &ApiResource) -> Option<usize> {
        let slots = self.slots.read().expect("slots poisoned");
        slots.iter().position(|s| s.resource.api.api_version == api.api_version && s.resource.api.plural == api.plural)
    }

    fn slot(&self, index: usize) -> Option<Arc<Slot>> {
        self.slots.read().expect("slots poisoned").get(index).cloned()
    }

    /// The resource in slot `index`.
    pub fn resource(&self, index: usize) -> Option<Arc<SyncedResource>> {
        self.slot(index).map(|s| s.resource.clone())
    }

    /// Whether the view of slot `index` is authoritative: the namespace watch and the resource's
    /// watch have both listed kcp. Until then, an object or assignment missing from the view
    /// means "not known yet", never "absent": nothing may be deleted or released on it.
    pub fn synced(&self, index: usize) -> bool {
        self.namespaces_listed.is_synced() && self.slot(index).is_some_and(|s| s.synced.is_synced())
    }

    /// Whether `other` is this very view (a clone of it), not another view of the same URL.
    pub fn same_view(&self, other: &Upstream) -> bool {
        Arc::ptr_eq(&self.slots, &other.slots)
    }

    /// Whether the workspace `cluster` is served behind this view's endpoint (one of its
    /// namespaces is listed), or `None` before the namespace watch has listed. kcp creates a
    /// `default` namespace in every workspace, so a bound workspace is never without one.
    pub fn serves(&self, cluster: &LogicalClusterName) -> Option<bool> {
        self.namespaces_listed.is_synced().then(|| self.present.has_cluster(cluster))
    }

    /// Registers the syncer of `target_key`; it is sent every object currently assigned to it,
    /// then every change.
    pub fn subscribe(&self, target_key: &str) -> mpsc::UnboundedReceiver<SyncKey> {
        let (tx, rx) = mpsc::unbounded_channel();
        for key in self.assigned_keys(target_key) {
            let _ = tx.send(key);
        }
        self.subscribers.lock().expect("subscribers poisoned").insert(target_key.to_string(), tx);
        rx
    }

    /// Drops `target_key`'s subscription once its receiver is gone. A syncer that stops after
    /// its replacement subscribed (a changed kubeconfig starts the new one beside the old) must
    /// not take the replacement's subscription with it: that syncer would hear of no change again.
    pub fn unsubscribe(&self, target_key: &str) {
        let mut subscribers = self.subscribers.lock().expect("subscribers poisoned");
        if subscribers.get(target_key).is_some_and(|tx| tx.is_closed()) {
            subscribers.remove(target_key);
        }
    }

    /// Every cached object, of every resource and workspace, for which `pred` holds, in its
    /// metadata-only form ([`Held::metadata_object`]: no apiVersion, kind or contents), which is
    /// all its callers read. Decoding them whole made the finalizer sweeper, which asked for
    /// every synced object, the largest transient in the manager's heap profile.
    pub fn find(&self, pred: impl Fn(&Held) -> bool) -> Vec<(usize, ClusterKey, DynamicObject)> {
        let slots = self.slots.read().expect("slots poisoned").clone();
        let mut out = vec![];
        for (index, slot) in slots.iter().enumerate() {
            for key in slot.cache.all_keys(|h| pred(h)) {
                if let Some(held) = slot.cache.get(&key) {
                    out.push((index, key, held.metadata_object()));
                }
            }
        }
        out
    }

    /// The cached upstream object, if it exists. Its metadata is always current, its contents
    /// may be missing (namespace placed nowhere, or larger than the limit): what is to be copied
    /// comes from [`Upstream::whole`].
    pub fn object(&self, resource: usize, key: &ClusterKey) -> Option<Arc<DynamicObject>> {
        Some(self.slot(resource)?.cache.get(key)?.object())
    }

    /// The cached upstream object's metadata-only form ([`Held::metadata_object`]), without
    /// decoding a whole object: for readers of its labels, UID and kcp-tmc's own annotations.
    pub fn metadata(&self, resource: usize, key: &ClusterKey) -> Option<DynamicObject> {
        Some(self.slot(resource)?.cache.get(key)?.metadata_object())
    }

    /// The object of `key` whole, read from kcp when the view holds only its metadata (see
    /// [`kept`]). [`Read::Newer`] when kcp holds a newer version than the view: the view then
    /// takes the version read (unless a watch event replaced the entry meanwhile) and the key is
    /// to be synced again on it. The watch normally brings that version itself; after kcp was
    /// killed and restarted mid-write the chaos suite saw it never come (a finalizer write that
    /// failed on the client had landed), and waiting for it left objects unsynced for good.
    pub async fn whole(&self, resource: usize, key: &ClusterKey) -> Result<Read, kube::Error> {
        let Some(slot) = self.slot(resource) else { return Ok(Read::Gone) };
        let Some(held) = slot.cache.get(key) else { return Ok(Read::Gone) };
        if held.is_whole() {
            return Ok(Read::Whole(held.object()));
        }
        let client = self.clients.cluster(&key.cluster);
        let api: Api<DynamicObject> =
            Api::namespaced_with(client, key.namespace.as_deref().unwrap_or_default(), &slot.resource.api);
        let Some(read) = api.get_opt(&key.name).await? else { return Ok(Read::Gone) };
        let read = kept::strip(read);
        let version = held.resource_version().map(str::to_string);
        let fits = kept::fits(&read, self.whole_object_limit);
        let newer = read.metadata.resource_version != version;
        let _writing = slot.writing.lock().expect("slot writer poisoned");
        let current = slot.cache.get(key);
        // Kept for the next sync unless a watch event replaced the entry meanwhile.
        let untouched = current.is_some_and(|c| !c.is_whole() && c.resource_version() == version.as_deref());
        if newer {
            if untouched {
                slot.cache.insert(key, Held::new(read, self.placed(key), fits));
            }
            return Ok(Read::Newer);
        }
        if fits && self.placed(key) && untouched {
            slot.cache.insert(key, Held::whole(&read));
        }
        Ok(Read::Whole(Arc::new(read)))
    }

    async fn watch_resource(self, index: usize, cancel: CancellationToken) {
        let Some(slot) = self.slot(index) else { return };
        let resource = slot.resource.api.clone();
        tokio::select! {
            _ = self.namespaces_listed.wait_synced() => {}
            _ = cancel.cancelled() => return,
        }
        let api: Api<DynamicObject> = Api::all_with(self.watch_client.clone(), &resource);
        // Streaming list: see the module docs. kcp serves it (WatchList) through the virtual
        // workspace and on its own server. Each object is slimmed as it arrives, so a relist's
        // buffer holds what the cache would.
        let config = watcher::Config::default().streaming_lists();
        let (view, limit) = (self.clone(), self.whole_object_limit);
        let store = SlotStore { slot: slot.clone(), view: self.clone() };
        let reflector = Reflector::new(store, cluster_key, move |key: &ClusterKey, obj: DynamicObject| {
            let fits = kept::fits(&obj, limit);
            Held::new(obj, view.placed(key), fits)
        })
        .with_synced(slot.synced.clone())
        .on_listed({
            let (slot, endpoint, plural) = (slot.clone(), self.clients.base_url().to_string(), resource.plural.clone());
            move || {
                let (objects, whole) = (slot.cache.len(), slot.cache.all_keys(|h| h.is_whole()).len());
                tracing::info!(endpoint, resource = %plural, objects, whole, "listed a resource in kcp");
            }
        });
        let what = format!("kcp {} at {}", resource.plural, self.clients.base_url());
        reflector
            .run(reflector::watch(api, config), cancel, &what, |changes| {
                // Vanished objects (deleted in kcp while the watch was down) are routed like
                // deletes: their syncers see them absent and clean their copies up.
                for change in changes {
                    let key = change.key().clone();
                    self.notify(&self.targets_of(&key), &[SyncKey { resource: Some(index), key }]);
                }
            })
            .await;
    }
}

fn namespace_resource() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&())
}
