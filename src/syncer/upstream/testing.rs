//! Filling the view by hand, for unit tests of the engine's I/O.

use std::sync::{Arc, Mutex};

use kube::api::DynamicObject;

use super::{Slot, Upstream};
use crate::kcp::ClusterKey;
use crate::runtime::cache::ClusterCache;
use crate::runtime::reflector::{Synced, cluster_key};
use crate::syncer::kept::{self, Held};
use crate::syncer::resources::{Assignment, SyncedResource};

impl Upstream {
    /// A slot for `resource` whose cache is filled by hand, no watch started (unit tests of the
    /// engine's I/O). `namespaces` (kcp Namespace JSON) and `objects` go in as the reflectors
    /// would put them; `listed` says whether the view is authoritative (both "watches" listed).
    #[cfg(test)]
    pub(crate) fn fill_for_test(
        &self,
        resource: &SyncedResource,
        namespaces: &[serde_json::Value],
        objects: Vec<DynamicObject>,
        listed: bool,
    ) -> usize {
        for ns in namespaces {
            let obj: DynamicObject = serde_json::from_value(ns.clone()).expect("a namespace");
            let key = cluster_key(&obj).expect("a namespace with kcp.io/cluster");
            self.present.insert(&key, ());
            self.namespace_changed(&key, Assignment::of(ns));
        }
        let slot = Arc::new(Slot {
            resource: Arc::new(resource.clone()),
            cache: ClusterCache::default(),
            writing: Mutex::new(()),
            synced: Synced::default(),
        });
        for obj in objects {
            let key = cluster_key(&obj).expect("an object with kcp.io/cluster");
            let fits = kept::fits(&obj, self.whole_object_limit);
            slot.cache.insert(&key, Held::new(obj, self.placed(&key), fits));
        }
        if listed {
            self.namespaces_listed.mark_synced();
            slot.synced.mark_synced();
        }
        let mut slots = self.slots.write().expect("slots poisoned");
        slots.push(slot);
        slots.len() - 1
    }

    /// Keeps only the metadata of the cached `key` (as for an object that did not fit).
    #[cfg(test)]
    pub(crate) fn slim_for_test(&self, index: usize, key: &ClusterKey) {
        let slot = self.slot(index).expect("a slot");
        let held = slot.cache.get(key).expect("a cached object");
        slot.cache.insert(key, held.slimmed());
    }
}
