//! The SyncTargets of every endpoint this manager follows, for the Placements of all of them.
//!
//! Each endpoint (kcp shard) serves only its own workspaces, so a Placement whose location
//! workspace is on another shard finds that workspace's SyncTargets in the other endpoint's
//! Placement controller. A workspace is looked up where it is served (its namespaces are listed
//! there); a workspace no endpoint serves has no SyncTargets only once every endpoint's caches
//! have listed and every endpoint the slice lists is followed. Otherwise the answer is
//! [`Unknown`], and the reconcile is retried: never "no targets" on a partial view, which would
//! unassign namespaces.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;

use crate::apis::sync::v1alpha1::SyncTarget;
use crate::kcp::{ClusterKey, LogicalClusterName};
use crate::runtime::cache::ClusterCache;
use crate::runtime::reflector::Synced;

/// A workspace's SyncTargets cannot be known yet (see the module docs).
#[derive(Debug, thiserror::Error)]
#[error(
    "the SyncTargets of workspace {0} are not known yet: it is served by no endpoint whose caches have listed \
     (its shard's endpoint is not listed yet, or is left to another manager by --shards)"
)]
pub struct Unknown(pub LogicalClusterName);

/// One endpoint's caches, as its Placement controller fills them.
#[derive(Clone)]
pub(super) struct Member {
    pub targets: ClusterCache<SyncTarget>,
    pub namespaces: ClusterCache<PartialObjectMeta<Namespace>>,
    pub synced: [Synced; 3],
    /// Queues the endpoint's Placements again (a target they may use changed).
    pub poke: Arc<dyn Fn() + Send + Sync>,
}

impl Member {
    fn listed(&self) -> bool {
        self.synced.iter().all(Synced::is_synced)
    }
}

/// See the module docs. Cheap to clone.
#[derive(Clone, Default)]
pub struct Directory {
    members: Arc<RwLock<BTreeMap<String, Member>>>,
    /// Whether every endpoint the slice lists is followed.
    complete: Arc<AtomicBool>,
}

impl Directory {
    pub(super) fn insert(&self, url: &str, member: Member) {
        self.members.write().expect("directory poisoned").insert(url.to_string(), member);
    }

    /// Forgets the endpoint `url` (its controllers stopped).
    pub fn remove(&self, url: &str) {
        self.members.write().expect("directory poisoned").remove(url);
    }

    /// Whether the manager follows every endpoint the slice lists.
    pub fn set_complete(&self, complete: bool) {
        self.complete.store(complete, Ordering::Release);
    }

    /// Queues every endpoint's Placements again.
    pub(super) fn poke_all(&self) {
        let pokes: Vec<_> = self.members.read().expect("directory poisoned").values().map(|m| m.poke.clone()).collect();
        pokes.iter().for_each(|poke| poke());
    }

    /// The SyncTargets of `cluster`, from the endpoint that serves it.
    pub(super) fn targets_in(&self, cluster: &LogicalClusterName) -> Result<Vec<Arc<SyncTarget>>, Unknown> {
        let found = self.serving(cluster, |m| {
            m.targets.keys_in(cluster, |_| true).iter().filter_map(|k| m.targets.get(k)).collect()
        });
        found.map(Option::unwrap_or_default)
    }

    /// The SyncTarget `key`, if it exists, from the endpoint that serves its workspace.
    pub(super) fn target(&self, key: &ClusterKey) -> Result<Option<Arc<SyncTarget>>, Unknown> {
        self.serving(&key.cluster, |m| m.targets.get(key)).map(Option::flatten)
    }

    /// Every SyncTarget of every endpoint, with its key.
    pub(super) fn all_targets(&self) -> Vec<(Arc<SyncTarget>, ClusterKey)> {
        let members = self.members.read().expect("directory poisoned");
        members
            .values()
            .flat_map(|m| m.targets.all_keys(|_| true).into_iter().filter_map(|k| Some((m.targets.get(&k)?, k))))
            .collect()
    }

    /// `read` from the member serving `cluster`; `Ok(None)` when provably none does.
    fn serving<T>(&self, cluster: &LogicalClusterName, read: impl Fn(&Member) -> T) -> Result<Option<T>, Unknown> {
        let members = self.members.read().expect("directory poisoned");
        // A workspace's own targets are there even before any namespace is: the targets cache
        // is looked at first.
        if let Some(m) = members.values().find(|m| m.targets.has_cluster(cluster) || m.namespaces.has_cluster(cluster))
        {
            return Ok(Some(read(m)));
        }
        let listed = members.values().all(Member::listed);
        match judge(listed, self.complete.load(Ordering::Acquire)) {
            true => Ok(None),
            false => Err(Unknown(cluster.clone())),
        }
    }
}

/// Whether "served by no endpoint" may be taken as "has no SyncTargets".
fn judge(every_member_listed: bool, complete: bool) -> bool {
    every_member_listed && complete
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(s: &str) -> LogicalClusterName {
        LogicalClusterName::new(s).unwrap()
    }

    fn member(targets: &[(&str, &str)], namespaces: &[(&str, &str)], listed: bool) -> Member {
        let m = Member {
            targets: Default::default(),
            namespaces: Default::default(),
            synced: Default::default(),
            poke: Arc::new(|| {}),
        };
        for (c, n) in targets {
            m.targets.insert(&ClusterKey::new(lc(c), None, *n), SyncTarget::new(n, Default::default()));
        }
        for (c, n) in namespaces {
            m.namespaces.insert(&ClusterKey::new(lc(c), None, *n), PartialObjectMeta::default());
        }
        if listed {
            m.synced.iter().for_each(Synced::mark_synced);
        }
        m
    }

    #[test]
    fn a_workspace_is_read_where_it_is_served() {
        let d = Directory::default();
        d.insert("https://a", member(&[("ws-a", "east")], &[("ws-a", "default")], true));
        d.insert("https://b", member(&[], &[("ws-b", "default")], false));
        d.set_complete(true);
        let names = |r: Result<Vec<Arc<SyncTarget>>, Unknown>| {
            r.map(|ts| ts.iter().map(|t| t.metadata.name.clone().unwrap()).collect::<Vec<_>>())
        };
        assert_eq!(names(d.targets_in(&lc("ws-a"))).unwrap(), ["east"]);
        // b has not listed, but it serves ws-b: its (empty) answer stands.
        assert!(names(d.targets_in(&lc("ws-b"))).unwrap().is_empty());
        // Served nowhere while b has not listed: unknown, not empty.
        assert!(d.targets_in(&lc("ws-c")).is_err());
        assert!(d.target(&ClusterKey::new(lc("ws-c"), None, "x")).is_err());
        assert!(d.target(&ClusterKey::new(lc("ws-a"), None, "east")).unwrap().is_some());
        assert!(d.target(&ClusterKey::new(lc("ws-a"), None, "west")).unwrap().is_none());
        d.insert("https://b", member(&[], &[("ws-b", "default")], true));
        assert!(names(d.targets_in(&lc("ws-c"))).unwrap().is_empty(), "every endpoint listed: served nowhere");
        d.set_complete(false);
        assert!(d.targets_in(&lc("ws-c")).is_err(), "an endpoint left to another manager may serve it");
        assert_eq!(d.all_targets().len(), 1);
        d.remove("https://a");
        assert!(d.targets_in(&lc("ws-a")).is_err());
    }

    #[test]
    fn judge_table() {
        assert!(judge(true, true));
        assert!(!judge(false, true));
        assert!(!judge(true, false));
        assert!(!judge(false, false));
    }
}
