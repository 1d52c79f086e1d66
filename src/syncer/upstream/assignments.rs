//! What the view knows of namespace assignments: the namespace watch, routing each change to
//! the syncers of the targets that gained or lost a namespace, and the queries syncers and the
//! Placement reconciler ask of it.

use std::collections::{BTreeSet, HashSet};

use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::{SyncKey, Upstream, namespace_resource};
use crate::kcp::{ClusterKey, LogicalClusterName};
use crate::runtime::reflector::{self, Reflector, Store, cluster_key};
use crate::syncer::kept::Held;
use crate::syncer::resources::Assignment;

/// The namespace assignments as the namespace reflector writes them: every change goes
/// through [`Upstream::namespace_changed`], which routes the namespace's objects to the targets
/// that gained or lost it. A relist applies its namespaces one by one (each change must be
/// routed), then unassigns the ones that vanished.
struct NamespaceStore(Upstream);

impl Store for NamespaceStore {
    type Key = ClusterKey;
    type Item = Assignment;
    fn upsert(&self, key: &ClusterKey, now: Assignment) {
        self.0.present.insert(key, ());
        self.0.namespace_changed(key, now);
    }
    fn remove(&self, key: &ClusterKey) {
        self.0.present.remove(key);
        self.0.namespace_changed(key, Assignment::default());
    }
    fn replace(&self, fresh: Vec<(ClusterKey, Assignment)>) -> Vec<ClusterKey> {
        let listed: HashSet<ClusterKey> = fresh.iter().map(|(k, _)| k.clone()).collect();
        self.0.present.replace_all(listed.iter().map(|k| (k.clone(), ())).collect(), |_| true);
        fresh.into_iter().for_each(|(key, now)| self.0.namespace_changed(&key, now));
        // Only assigned namespaces are cached, so only they can vanish.
        let vanished =
            self.0.namespaces.all_keys(|_| true).into_iter().filter(|k| !listed.contains(k)).collect::<Vec<_>>();
        vanished.iter().for_each(|key| self.0.namespace_changed(key, Assignment::default()));
        vanished
    }
}

impl Upstream {
    /// Whether the kcp namespace `key.cluster`/`namespace` is assigned to `target_key`.
    pub fn is_assigned(&self, cluster: &LogicalClusterName, namespace: &str, target_key: &str) -> bool {
        let ns_key = ClusterKey::new(cluster.clone(), None, namespace);
        self.namespaces.get(&ns_key).is_some_and(|a| a.targets.contains(target_key))
    }

    /// Whether the namespace's workload selector for `target_key` (if any) selects `labels`.
    pub fn selects(
        &self,
        cluster: &LogicalClusterName,
        namespace: &str,
        target_key: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        let ns_key = ClusterKey::new(cluster.clone(), None, namespace);
        self.namespaces.get(&ns_key).is_some_and(|a| a.selects(target_key, labels))
    }

    /// The replicas `target_key` runs of an object in `namespace` that asks for `total`, when
    /// they are divided (see [`Assignment::replicas_of`]).
    pub fn replicas_of(
        &self,
        cluster: &LogicalClusterName,
        namespace: &str,
        target_key: &str,
        total: i64,
    ) -> Option<i64> {
        let ns_key = ClusterKey::new(cluster.clone(), None, namespace);
        self.namespaces.get(&ns_key).and_then(|a| a.replicas_of(target_key, total))
    }

    /// Runs `f` over the overrides that change `target_key`'s copies in `namespace` (see
    /// [`Assignment::overrides_of`]); an unassigned namespace has none.
    pub fn with_overrides<T>(
        &self,
        cluster: &LogicalClusterName,
        namespace: &str,
        target_key: &str,
        f: impl FnOnce(Result<&[crate::apis::placement::overrides::TargetOverride], String>) -> T,
    ) -> T {
        let ns_key = ClusterKey::new(cluster.clone(), None, namespace);
        match self.namespaces.get(&ns_key) {
            Some(a) => f(a.overrides_of(target_key)),
            None => f(Ok(&[])),
        }
    }

    /// The namespaces assigned to `target_key` whose objects of some kinds it copies back, with
    /// those (group, kind)s.
    pub fn upsynced_namespaces(&self, target_key: &str) -> Vec<(ClusterKey, BTreeSet<(String, String)>)> {
        let wanted = |a: &Assignment| a.upsync.get(target_key).is_some_and(|k| !k.is_empty());
        let keys = self.namespaces.all_keys(|a| a.targets.contains(target_key) && wanted(a));
        keys.into_iter()
            .filter_map(|k| {
                let kinds = self.namespaces.get(&k)?.upsync.get(target_key)?.clone();
                Some((k, kinds))
            })
            .collect()
    }

    /// Why the namespace's workload selector for `target_key` is invalid (it selects nothing).
    pub fn invalid_selector(&self, cluster: &LogicalClusterName, namespace: &str, target_key: &str) -> Option<String> {
        let ns_key = ClusterKey::new(cluster.clone(), None, namespace);
        self.namespaces.get(&ns_key).and_then(|a| a.invalid.get(target_key).cloned())
    }

    /// Whether a move of the kcp namespace waits on `target_key`, which then records evidence of
    /// its applies.
    pub fn awaits_evidence(&self, cluster: &LogicalClusterName, namespace: &str, target_key: &str) -> bool {
        let ns_key = ClusterKey::new(cluster.clone(), None, namespace);
        self.namespaces.get(&ns_key).is_some_and(|a| a.awaiting.contains(target_key))
    }

    /// The target keys the kcp namespace is assigned to.
    pub fn assigned_targets(&self, cluster: &LogicalClusterName, namespace: &str) -> BTreeSet<String> {
        let ns_key = ClusterKey::new(cluster.clone(), None, namespace);
        self.namespaces.get(&ns_key).map(|a| a.targets.clone()).unwrap_or_default()
    }

    /// Every object and namespace currently assigned to `target_key`.
    pub fn assigned_keys(&self, target_key: &str) -> Vec<SyncKey> {
        let mut out = vec![];
        for ns in self.namespaces.all_keys(|a| a.targets.contains(target_key)) {
            out.extend(self.keys_in_namespace(&ns.cluster, &ns.name));
        }
        out
    }

    /// The (group, kind) of every watched API with objects in the given namespaces of `cluster`:
    /// what a target must sync to run them.
    pub fn kinds_in(&self, cluster: &LogicalClusterName, namespaces: &BTreeSet<String>) -> BTreeSet<(String, String)> {
        let slots = self.slots.read().expect("slots poisoned").clone();
        slots
            .iter()
            .filter(|slot| {
                let kind = &slot.resource.api.kind;
                let in_scope = |h: &Held| h.namespace().is_some_and(|n| namespaces.contains(n));
                // A metadata-only object keeps what `skip_reason` reads.
                // Objects no syncer copies (a namespace's kube-root-ca.crt, token Secrets) need
                // nothing; only ConfigMaps and Secrets have such, so only they pay for the check.
                let synced = |h: &Held| {
                    !matches!(kind.as_str(), "ConfigMap" | "Secret")
                        || crate::syncer::transform::skip_reason(
                            kind,
                            &serde_json::to_value(h.metadata_object()).unwrap_or_default(),
                        )
                        .is_none()
                };
                !slot.cache.keys_in(cluster, |h| in_scope(h) && synced(h)).is_empty()
            })
            .map(|slot| (slot.resource.api.group.clone(), slot.resource.api.kind.clone()))
            .collect()
    }

    /// The keys of slot `index`'s objects in `namespace` of `cluster`.
    pub fn keys_in(&self, index: usize, cluster: &LogicalClusterName, namespace: &str) -> Vec<ClusterKey> {
        let Some(slot) = self.slot(index) else { return vec![] };
        slot.cache.keys_in(cluster, |h| h.namespace() == Some(namespace))
    }

    /// The objects of slot `index` currently assigned to `target_key`.
    pub fn assigned_keys_of(&self, target_key: &str, index: usize) -> Vec<SyncKey> {
        let namespaces = self.namespaces.all_keys(|a| a.targets.contains(target_key));
        let keys = namespaces.into_iter().flat_map(|ns| self.keys_in(index, &ns.cluster, &ns.name));
        keys.map(|key| SyncKey { resource: Some(index), key }).collect()
    }

    pub(super) fn keys_in_namespace(&self, cluster: &LogicalClusterName, namespace: &str) -> Vec<SyncKey> {
        let mut out = vec![SyncKey { resource: None, key: ClusterKey::new(cluster.clone(), None, namespace) }];
        let slots = self.slots.read().expect("slots poisoned").clone();
        for (index, slot) in slots.iter().enumerate() {
            let keys = slot.cache.keys_in(cluster, |h| h.namespace() == Some(namespace));
            out.extend(keys.into_iter().map(|key| SyncKey { resource: Some(index), key }));
        }
        out
    }

    pub(super) fn notify(&self, targets: &BTreeSet<String>, keys: &[SyncKey]) {
        let subscribers = self.subscribers.lock().expect("subscribers poisoned");
        for target in targets {
            if let Some(tx) = subscribers.get(target) {
                keys.iter().for_each(|k| {
                    let _ = tx.send(k.clone());
                });
            }
        }
    }

    /// Whether the namespace of `key` is assigned to any target: only then may its objects be
    /// kept whole.
    pub(super) fn placed(&self, key: &ClusterKey) -> bool {
        let Some(ns) = &key.namespace else { return false };
        self.namespaces.get(&ClusterKey::new(key.cluster.clone(), None, ns.clone())).is_some()
    }

    pub(super) fn targets_of(&self, key: &ClusterKey) -> BTreeSet<String> {
        let Some(ns) = &key.namespace else { return BTreeSet::new() };
        self.assigned_targets(&key.cluster, ns)
    }

    pub(super) async fn watch_namespaces(self, cancel: CancellationToken) {
        let api: Api<DynamicObject> = Api::all_with(self.watch_client.clone(), &namespace_resource());
        let reflector = Reflector::new(NamespaceStore(self.clone()), cluster_key, |_, ns: DynamicObject| {
            Assignment::of(&serde_json::to_value(&ns).unwrap_or_default())
        })
        .with_synced(self.namespaces_listed.clone());
        let what = format!("kcp namespaces at {}", self.clients.base_url());
        // NamespaceStore routes every change itself.
        reflector.run(reflector::watch(api, watcher::Config::default()), cancel, &what, |_| {}).await;
    }

    pub(super) fn namespace_changed(&self, key: &ClusterKey, now: Assignment) {
        let before = self.namespaces.get(key).map(|a| (*a).clone()).unwrap_or_default();
        if before == now {
            return;
        }
        // Targets that gained or lost the namespace, or whose workload selector changed.
        let changed = before.changed_targets(&now);
        if now.targets.is_empty() {
            self.namespaces.remove(key);
            self.slim_namespace(key);
        } else {
            self.namespaces.insert(key, now);
        }
        self.notify(&changed, &self.keys_in_namespace(&key.cluster, &key.name));
    }

    /// Keeps only the metadata of the objects of a namespace that is placed nowhere any more.
    pub(super) fn slim_namespace(&self, ns: &ClusterKey) {
        let slots = self.slots.read().expect("slots poisoned").clone();
        for slot in slots {
            let _writing = slot.writing.lock().expect("slot writer poisoned");
            let whole = slot.cache.keys_in(&ns.cluster, |h| h.is_whole() && h.namespace() == Some(ns.name.as_str()));
            for key in whole {
                if let Some(held) = slot.cache.get(&key) {
                    slot.cache.insert(&key, held.slimmed());
                }
            }
        }
    }
}
