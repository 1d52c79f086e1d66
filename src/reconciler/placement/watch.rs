//! The three wildcard watches of the Placement reconciler and what each change queues.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Controller, Key};
use crate::apis::placement::v1alpha1::Placement;
use crate::apis::sync::v1alpha1::SyncTarget;
use crate::kcp::ClusterKey;
use crate::runtime::cache::ClusterCache;
use crate::runtime::reflector::{self, Change, Reflector, Store, cluster_key};

/// A cache of parsed objects. An object that does not parse is logged and keeps its last
/// parsed version (one bad write never drops a Placement or SyncTarget from the view).
struct Parsed<T>(ClusterCache<T>);

impl<T: Send + Sync> Store for Parsed<T> {
    type Key = ClusterKey;
    type Item = Option<T>;
    fn upsert(&self, key: &ClusterKey, item: Option<T>) {
        if let Some(t) = item {
            self.0.insert(key, t);
        }
    }
    fn remove(&self, key: &ClusterKey) {
        self.0.remove(key);
    }
    fn replace(&self, fresh: Vec<(ClusterKey, Option<T>)>) -> Vec<ClusterKey> {
        let unparsed: HashSet<ClusterKey> = fresh.iter().filter(|(_, t)| t.is_none()).map(|(k, _)| k.clone()).collect();
        let parsed = fresh.into_iter().filter_map(|(k, t)| Some((k, t?))).collect();
        self.0.replace_all(parsed, |k| !unparsed.contains(k))
    }
}

/// Parses a watched object, logging (not failing) when it does not parse.
fn parse<T: serde::de::DeserializeOwned>(what: &'static str) -> impl Fn(&ClusterKey, DynamicObject) -> Option<T> {
    move |key, obj| {
        let parsed = serde_json::to_value(obj).ok().and_then(|v| serde_json::from_value(v).ok());
        if parsed.is_none() {
            tracing::warn!(%key, "{what} does not parse; ignored");
        }
        parsed
    }
}

impl Controller {
    pub(super) async fn watch_placements(self, cancel: CancellationToken) {
        let api: Api<DynamicObject> = Api::all_with(self.clients.wildcard(), &ApiResource::erase::<Placement>(&()));
        let store = Parsed(self.placements.clone());
        let reflector =
            Reflector::new(store, cluster_key, parse::<Placement>("Placement")).with_synced(self.synced[0].clone());
        reflector
            .run(reflector::watch(api, watcher::Config::default()), cancel, "Placements", |changes| {
                for change in changes {
                    match change {
                        Change::Applied(key) => self.queue.add(Key::Placement(key)),
                        // Its namespaces recompute without it: labels it justified go.
                        Change::Deleted(key) | Change::Vanished(key) => self.enqueue_namespaces_of(&key.cluster),
                    }
                }
            })
            .await
    }

    pub(super) async fn watch_synctargets(self, cancel: CancellationToken) {
        let api: Api<DynamicObject> = Api::all_with(self.clients.wildcard(), &ApiResource::erase::<SyncTarget>(&()));
        let store = Parsed(self.targets.clone());
        let reflector =
            Reflector::new(store, cluster_key, parse::<SyncTarget>("SyncTarget")).with_synced(self.synced[1].clone());
        reflector
            .run(reflector::watch(api, watcher::Config::default()), cancel, "SyncTargets", |changes| {
                let mut changed = false;
                for change in changes {
                    let key = change.key();
                    let print = self.targets.get(key).filter(|_| !change.gone()).map(|t| fingerprint(&t));
                    let mut prints = self.fingerprints.lock().expect("poisoned");
                    // Heartbeats change a target every few seconds; only what scheduling reads
                    // re-evaluates the Placements (any workspace may use any target).
                    changed |= match print {
                        Some(print) => prints.insert(key.clone(), print.clone()) != Some(print),
                        None => prints.remove(key).is_some() || change.gone(),
                    };
                }
                // Placements on every shard may use this endpoint's targets.
                if changed {
                    self.directory.poke_all();
                }
            })
            .await
    }

    pub(super) async fn watch_namespaces(self, cancel: CancellationToken) {
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(self.clients.wildcard());
        let reflector =
            Reflector::new(self.namespaces.clone(), cluster_key, |_, ns| ns).with_synced(self.synced[2].clone());
        reflector
            .run(reflector::watch(api, watcher::Config::default()), cancel, "namespaces", |changes| {
                for change in changes {
                    if !change.gone() {
                        self.queue.add(Key::Namespace(change.key().clone()));
                    }
                    // The count of placed namespaces may change.
                    self.enqueue_placements_of(&change.key().cluster);
                }
            })
            .await
    }
}

/// What of a SyncTarget the scheduler reads: labels, spec, and the Ready and APIsAvailable
/// conditions (status and transition time) — not the heartbeat.
fn fingerprint(t: &SyncTarget) -> String {
    let conditions: Vec<_> = t
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .filter(|c| c.type_ == "Ready" || c.type_ == "APIsAvailable")
        .map(|c| json!([c.type_, c.status, c.last_transition_time]))
        .collect();
    let apis: Vec<_> = t
        .status
        .iter()
        .flat_map(|s| s.synced_resources.iter())
        .map(|r| json!([r.group, r.kind, r.state.as_str()]))
        .collect();
    json!([t.metadata.labels, t.spec, conditions, apis]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn target(last_sync: &str, ready_since: &str) -> SyncTarget {
        let mut t = SyncTarget::new("east", Default::default());
        t.status = Some(crate::apis::sync::v1alpha1::SyncTargetStatus {
            last_sync_time: Some(Time(last_sync.parse().unwrap())),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Ready".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(ready_since.parse().unwrap()),
            }],
            ..Default::default()
        });
        t
    }

    #[test]
    fn heartbeats_do_not_change_the_fingerprint() {
        let a = target("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        let heartbeat = target("2026-01-01T00:00:20Z", "2026-01-01T00:00:00Z");
        assert_eq!(fingerprint(&a), fingerprint(&heartbeat));
        let flipped = target("2026-01-01T00:00:20Z", "2026-01-01T00:00:10Z");
        assert_ne!(fingerprint(&a), fingerprint(&flipped), "a Ready transition matters");
        let mut cordoned = a.clone();
        cordoned.spec.unschedulable = true;
        assert_ne!(fingerprint(&a), fingerprint(&cordoned));
    }
}
