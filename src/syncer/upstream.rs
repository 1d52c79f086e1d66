//! The shared view of kcp that every push-mode syncer behind one virtual-workspace URL reads.
//!
//! Watch once, fan out: one wildcard watch of namespaces (their assignment labels) and one per
//! synced resource feed caches keyed by logical cluster; each change is routed to the syncers of
//! the targets the object's namespace is assigned to. A namespace whose assignment changes routes
//! all its objects to the targets it gained or lost, so they copy or clean up.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::resources::{SyncedResource, assigned_targets};
use crate::kcp::{ClusterClients, ClusterKey, LogicalClusterName, WorkspacePath};
use crate::reconciler::cache::ClusterCache;
use crate::reconciler::next_or_cancelled;

/// What a syncer is asked to reconcile: one object of one synced resource (by index into the
/// resource list), or with `resource: None` a whole namespace (its downstream clean-up).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncKey {
    pub resource: Option<usize>,
    pub key: ClusterKey,
}

/// See the module docs.
#[derive(Clone)]
pub struct Upstream {
    pub clients: ClusterClients,
    /// What the watches span: every bound workspace (`/clusters/*` through the virtual
    /// workspace) in the manager, one workspace in a pull-mode syncer.
    watch_client: kube::Client,
    pub resources: Arc<Vec<SyncedResource>>,
    namespaces: ClusterCache<BTreeSet<String>>,
    objects: Arc<Vec<ClusterCache<DynamicObject>>>,
    subscribers: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<SyncKey>>>>,
}

impl Upstream {
    /// Watches every workspace bound to the export behind `clients` (a virtual-workspace URL).
    pub fn new(clients: ClusterClients, resources: Vec<SyncedResource>) -> Self {
        let watch_client = clients.wildcard();
        Self::with_watch_client(clients, watch_client, resources)
    }

    /// Watches the one workspace `path` (pull mode: a syncer beside the cluster).
    pub fn for_workspace(clients: ClusterClients, path: &WorkspacePath, resources: Vec<SyncedResource>) -> Self {
        let watch_client = clients.path(path);
        Self::with_watch_client(clients, watch_client, resources)
    }

    fn with_watch_client(clients: ClusterClients, watch_client: kube::Client, resources: Vec<SyncedResource>) -> Self {
        let objects = resources.iter().map(|_| ClusterCache::default()).collect();
        Self {
            clients,
            watch_client,
            resources: Arc::new(resources),
            namespaces: ClusterCache::default(),
            objects: Arc::new(objects),
            subscribers: Default::default(),
        }
    }

    /// Runs the watches until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.clone().watch_namespaces(cancel.clone()));
        for index in 0..self.resources.len() {
            tasks.spawn(self.clone().watch_resource(index, cancel.clone()));
        }
        while tasks.join_next().await.is_some() {}
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

    pub fn unsubscribe(&self, target_key: &str) {
        self.subscribers.lock().expect("subscribers poisoned").remove(target_key);
    }

    /// The cached upstream object, if it exists.
    pub fn object(&self, resource: usize, key: &ClusterKey) -> Option<Arc<DynamicObject>> {
        self.objects.get(resource)?.get(key)
    }

    /// Whether the kcp namespace `key.cluster`/`namespace` is assigned to `target_key`.
    pub fn is_assigned(&self, cluster: &LogicalClusterName, namespace: &str, target_key: &str) -> bool {
        let ns_key = ClusterKey::new(cluster.clone(), None, namespace);
        self.namespaces.get(&ns_key).is_some_and(|keys| keys.contains(target_key))
    }

    /// The target keys the kcp namespace is assigned to.
    pub fn assigned_targets(&self, cluster: &LogicalClusterName, namespace: &str) -> BTreeSet<String> {
        let ns_key = ClusterKey::new(cluster.clone(), None, namespace);
        self.namespaces.get(&ns_key).map(|k| (*k).clone()).unwrap_or_default()
    }

    /// Every object and namespace currently assigned to `target_key`.
    pub fn assigned_keys(&self, target_key: &str) -> Vec<SyncKey> {
        let mut out = vec![];
        for ns in self.namespaces.all_keys(|keys| keys.contains(target_key)) {
            out.extend(self.keys_in_namespace(&ns.cluster, &ns.name));
        }
        out
    }

    fn keys_in_namespace(&self, cluster: &LogicalClusterName, namespace: &str) -> Vec<SyncKey> {
        let mut out = vec![SyncKey { resource: None, key: ClusterKey::new(cluster.clone(), None, namespace) }];
        for (index, cache) in self.objects.iter().enumerate() {
            let keys = cache.keys_in(cluster, |o| o.metadata.namespace.as_deref() == Some(namespace));
            out.extend(keys.into_iter().map(|key| SyncKey { resource: Some(index), key }));
        }
        out
    }

    fn notify(&self, targets: &BTreeSet<String>, keys: &[SyncKey]) {
        let subscribers = self.subscribers.lock().expect("subscribers poisoned");
        for target in targets {
            if let Some(tx) = subscribers.get(target) {
                keys.iter().for_each(|k| {
                    let _ = tx.send(k.clone());
                });
            }
        }
    }

    fn targets_of(&self, key: &ClusterKey) -> BTreeSet<String> {
        let Some(ns) = &key.namespace else { return BTreeSet::new() };
        let ns_key = ClusterKey::new(key.cluster.clone(), None, ns.clone());
        self.namespaces.get(&ns_key).map(|k| (*k).clone()).unwrap_or_default()
    }

    async fn watch_namespaces(self, cancel: CancellationToken) {
        let api: Api<DynamicObject> = Api::all_with(self.watch_client.clone(), &namespace_resource());
        let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut relisted = HashSet::new();
        while let Some(event) = next_or_cancelled(&mut events, &cancel).await {
            match event {
                Err(e) => {
                    tracing::warn!(endpoint = self.clients.base_url(), error = %e, "watching namespaces failed; retrying")
                }
                Ok(watcher::Event::Init) => relisted.clear(),
                Ok(watcher::Event::InitApply(ns)) | Ok(watcher::Event::Apply(ns)) => {
                    if let Some(key) = ClusterKey::of(&ns) {
                        let now = assigned_targets(&serde_json::to_value(&ns).unwrap_or_default());
                        self.namespace_changed(&key, now);
                        relisted.insert(key);
                    }
                }
                Ok(watcher::Event::InitDone) => {}
                Ok(watcher::Event::Delete(ns)) => {
                    if let Some(key) = ClusterKey::of(&ns) {
                        self.namespace_changed(&key, BTreeSet::new());
                    }
                }
            }
        }
    }

    fn namespace_changed(&self, key: &ClusterKey, now: BTreeSet<String>) {
        let before = self.namespaces.get(key).map(|k| (*k).clone()).unwrap_or_default();
        if before == now {
            return;
        }
        if now.is_empty() {
            self.namespaces.remove(key);
        } else {
            self.namespaces.insert(key, now.clone());
        }
        let changed: BTreeSet<String> = before.symmetric_difference(&now).cloned().collect();
        self.notify(&changed, &self.keys_in_namespace(&key.cluster, &key.name));
    }

    async fn watch_resource(self, index: usize, cancel: CancellationToken) {
        let resource = &self.resources[index].api;
        let api: Api<DynamicObject> = Api::all_with(self.watch_client.clone(), resource);
        let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
        let cache = &self.objects[index];
        while let Some(event) = next_or_cancelled(&mut events, &cancel).await {
            let (obj, deleted) = match event {
                Err(e) => {
                    tracing::warn!(endpoint = self.clients.base_url(), resource = %resource.plural, error = %e, "watch failed; retrying");
                    continue;
                }
                Ok(watcher::Event::InitApply(o)) | Ok(watcher::Event::Apply(o)) => (o, false),
                Ok(watcher::Event::Delete(o)) => (o, true),
                Ok(_) => continue,
            };
            let Some(key) = ClusterKey::of(&obj) else { continue };
            if deleted {
                cache.remove(&key);
            } else {
                cache.insert(&key, strip(obj));
            }
            self.notify(&self.targets_of(&key), &[SyncKey { resource: Some(index), key }]);
        }
    }
}

/// Drops what the syncer never reads before caching (managedFields are often the largest part).
fn strip(mut obj: DynamicObject) -> DynamicObject {
    obj.metadata.managed_fields = None;
    obj
}

fn namespace_resource() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&())
}
