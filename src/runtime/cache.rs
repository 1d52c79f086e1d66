//! A cache of watched objects keyed by logical cluster, then namespace and name.
//!
//! kube-runtime's reflector store keys by (namespace, name), which silently merges two objects
//! with the same name from different workspaces when they arrive through one wildcard watch.
//! This cache cannot: the logical cluster is the first level of its key.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use crate::kcp::{ClusterKey, LogicalClusterName};

type Bucket<T> = HashMap<(Option<String>, String), Arc<T>>;

/// See the module docs. Cheap to clone; clones share the same objects. A panic while it was
/// locked (in a caller's predicate) leaves it usable: it is a snapshot the watches correct.
pub struct ClusterCache<T> {
    inner: Arc<RwLock<HashMap<LogicalClusterName, Bucket<T>>>>,
}

impl<T> Clone for ClusterCache<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T> Default for ClusterCache<T> {
    fn default() -> Self {
        Self { inner: Default::default() }
    }
}

impl<T> ClusterCache<T> {
    pub fn insert(&self, key: &ClusterKey, obj: T) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(key.cluster.clone()).or_default().insert((key.namespace.clone(), key.name.clone()), Arc::new(obj));
    }

    pub fn get(&self, key: &ClusterKey) -> Option<Arc<T>> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&key.cluster)?.get(&(key.namespace.clone(), key.name.clone())).cloned()
    }

    pub fn remove(&self, key: &ClusterKey) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = map.get_mut(&key.cluster) {
            bucket.remove(&(key.namespace.clone(), key.name.clone()));
            if bucket.is_empty() {
                map.remove(&key.cluster);
            }
        }
    }

    /// Drops every object whose key is not in `keep` (after a relist); returns how many.
    pub fn retain(&self, keep: &HashSet<ClusterKey>) -> usize {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut dropped = 0;
        for (cluster, bucket) in map.iter_mut() {
            bucket.retain(|(ns, name), _| {
                let kept = keep.contains(&ClusterKey::new(cluster.clone(), ns.clone(), name.clone()));
                dropped += usize::from(!kept);
                kept
            });
        }
        map.retain(|_, bucket| !bucket.is_empty());
        dropped
    }

    /// Under one write lock: drops the objects for which `in_scope` holds and that `fresh` lacks,
    /// then inserts `fresh` (a relist swapped in). Returns the keys dropped.
    pub fn replace_all(&self, fresh: Vec<(ClusterKey, T)>, in_scope: impl Fn(&ClusterKey) -> bool) -> Vec<ClusterKey> {
        let listed: HashSet<&ClusterKey> = fresh.iter().map(|(k, _)| k).collect();
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut vanished = Vec::new();
        for (cluster, bucket) in map.iter_mut() {
            bucket.retain(|(ns, name), _| {
                let key = ClusterKey::new(cluster.clone(), ns.clone(), name.clone());
                let keep = listed.contains(&key) || !in_scope(&key);
                if !keep {
                    vanished.push(key);
                }
                keep
            });
        }
        drop(listed);
        for (key, obj) in fresh {
            map.entry(key.cluster).or_default().insert((key.namespace, key.name), Arc::new(obj));
        }
        map.retain(|_, bucket| !bucket.is_empty());
        vanished
    }

    /// The keys of the objects in one logical cluster for which `pred` holds.
    pub fn keys_in(&self, cluster: &LogicalClusterName, pred: impl Fn(&T) -> bool) -> Vec<ClusterKey> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let Some(bucket) = map.get(cluster) else {
            return vec![];
        };
        bucket
            .iter()
            .filter(|(_, obj)| pred(obj))
            .map(|((ns, name), _)| ClusterKey::new(cluster.clone(), ns.clone(), name.clone()))
            .collect()
    }

    /// The keys of the objects in every logical cluster for which `pred` holds.
    pub fn all_keys(&self, pred: impl Fn(&T) -> bool) -> Vec<ClusterKey> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .flat_map(|(cluster, bucket)| {
                bucket
                    .iter()
                    .filter(|(_, obj)| pred(obj))
                    .map(|((ns, name), _)| ClusterKey::new(cluster.clone(), ns.clone(), name.clone()))
            })
            .collect()
    }

    /// Whether any object of `cluster` is cached.
    pub fn has_cluster(&self, cluster: &LogicalClusterName) -> bool {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).contains_key(cluster)
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cluster: &str, ns: Option<&str>, name: &str) -> ClusterKey {
        ClusterKey::new(LogicalClusterName::new(cluster).unwrap(), ns.map(Into::into), name)
    }

    #[test]
    fn same_name_in_two_clusters_are_two_entries() {
        let cache = ClusterCache::default();
        cache.insert(&key("a", None, "east"), "from a");
        cache.insert(&key("b", None, "east"), "from b");
        assert_eq!(cache.len(), 2);
        assert_eq!(*cache.get(&key("a", None, "east")).unwrap(), "from a");
        assert_eq!(*cache.get(&key("b", None, "east")).unwrap(), "from b");
        cache.remove(&key("a", None, "east"));
        assert!(cache.get(&key("a", None, "east")).is_none());
        assert_eq!(*cache.get(&key("b", None, "east")).unwrap(), "from b");
    }

    #[test]
    fn namespaces_are_part_of_the_key() {
        let cache = ClusterCache::default();
        cache.insert(&key("a", Some("n1"), "x"), 1);
        cache.insert(&key("a", Some("n2"), "x"), 2);
        cache.insert(&key("a", None, "x"), 3);
        assert_eq!(cache.len(), 3);
        assert_eq!(*cache.get(&key("a", Some("n2"), "x")).unwrap(), 2);
    }

    #[test]
    fn retain_after_relist() {
        let cache = ClusterCache::default();
        for (c, n) in [("a", "x"), ("a", "y"), ("b", "x")] {
            cache.insert(&key(c, None, n), ());
        }
        let keep: HashSet<_> = [key("a", None, "y")].into_iter().collect();
        assert_eq!(cache.retain(&keep), 2);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&key("b", None, "x")).is_none());
    }

    #[test]
    fn keys_in_one_cluster_only() {
        let cache = ClusterCache::default();
        cache.insert(&key("a", None, "x"), 1);
        cache.insert(&key("a", None, "y"), 2);
        cache.insert(&key("b", None, "x"), 1);
        let mut got = cache.keys_in(&LogicalClusterName::new("a").unwrap(), |v| *v == 1);
        got.sort();
        assert_eq!(got, vec![key("a", None, "x")]);
        assert!(cache.keys_in(&LogicalClusterName::new("c").unwrap(), |_| true).is_empty());
        assert!(cache.has_cluster(&LogicalClusterName::new("b").unwrap()));
        assert!(!cache.has_cluster(&LogicalClusterName::new("c").unwrap()));
        let mut all = cache.all_keys(|v| *v == 1);
        all.sort();
        assert_eq!(all, vec![key("a", None, "x"), key("b", None, "x")]);
        assert!(!cache.is_empty());
        cache.remove(&key("b", None, "x"));
        assert!(!cache.has_cluster(&LogicalClusterName::new("b").unwrap()), "an emptied cluster is gone");
    }
}
