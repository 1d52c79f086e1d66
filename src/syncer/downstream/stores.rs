//! How each downstream watch writes what it sees (see [`crate::runtime::reflector::Store`]):
//! the object watches each own a slice of the shared cache; the namespace and autoscaler
//! watches act on every change themselves.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;

use super::{Cached, Downstream, Enqueue, ObjectId, Objects, newer};
use crate::runtime::reflector::Store;

/// The autoscaler watch's view: which Deployment each autoscaler scales.
pub(super) struct AutoscalerStore {
    pub(super) view: Downstream,
    pub(super) deployments: usize,
    pub(super) enqueue: Enqueue,
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
pub(super) struct NamespaceStore {
    pub(super) view: Downstream,
    pub(super) enqueue: Enqueue,
    /// The UID each namespace was last seen with: a delete forgets ownership only of that one.
    pub(super) uids: Mutex<HashMap<String, Option<String>>>,
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

/// Whether the `cached` entry stays when the watch delivers `arrived`: a write the syncer
/// recorded after the version the watch (or a list under way) reports is newer; and the same
/// version already compared is the same object (a resourceVersion names one state), so its
/// verdict stands instead of a whole copy that would wait for the next comparison.
fn supersedes(cached: &Cached, arrived: &Cached) -> bool {
    let same_version = cached.resource_version().is_some() && cached.resource_version() == arrived.resource_version();
    newer(cached.resource_version(), arrived.resource_version())
        || (same_version && matches!(cached, Cached::Matched(_)))
}

/// The objects one downstream watch owns in the shared cache: those of its resource, in its
/// namespace (or all namespaces).
pub(super) struct Slice {
    pub(super) objects: Arc<RwLock<Objects>>,
    pub(super) index: usize,
    pub(super) namespace: Option<String>,
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
        let mut objects = self.objects.write().expect("downstream cache poisoned");
        if !objects.get(key).is_some_and(|cached| supersedes(cached, &item)) {
            objects.insert(key.clone(), item);
        }
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
        for (key, item) in fresh {
            if !objects.get(&key).is_some_and(|cached| supersedes(cached, &item)) {
                objects.insert(key, item);
            }
        }
        vanished
    }
}
