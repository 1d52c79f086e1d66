//! The three wildcard watches of the Placement reconciler and what each change queues.

use std::collections::HashSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Controller, Key};
use crate::apis::placement::v1alpha1::Placement;
use crate::apis::sync::v1alpha1::SyncTarget;
use crate::kcp::ClusterKey;
use crate::runtime::next_or_cancelled;

/// One change seen by a watch: the object (parsed), or its removal.
enum Change<T> {
    Upsert(ClusterKey, T),
    Remove(ClusterKey),
    /// A relist finished; these keys are all that exist now.
    Relisted(HashSet<ClusterKey>),
}

/// Follows a wildcard watch, parsing each object with `parse` (objects that do not parse are
/// logged and skipped, so one bad object never stops the watch), and hands changes to `apply`.
async fn follow<K, T>(
    api: Api<K>,
    what: &'static str,
    cancel: CancellationToken,
    parse: impl Fn(K) -> Option<T>,
    mut apply: impl FnMut(Change<T>),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut relisted = HashSet::new();
    loop {
        let Some(event) = next_or_cancelled(&mut events, &cancel).await else { return };
        match event {
            Err(e) => tracing::warn!(error = %e, "watching {what} failed; retrying"),
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitDone) => apply(Change::Relisted(std::mem::take(&mut relisted))),
            Ok(watcher::Event::InitApply(obj)) | Ok(watcher::Event::Apply(obj)) => {
                let Some(key) = ClusterKey::of(&obj) else { continue };
                relisted.insert(key.clone());
                match parse(obj) {
                    Some(t) => apply(Change::Upsert(key, t)),
                    None => tracing::warn!(%key, "{what} does not parse; ignored"),
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                if let Some(key) = ClusterKey::of(&obj) {
                    apply(Change::Remove(key));
                }
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(obj: DynamicObject) -> Option<T> {
    serde_json::to_value(obj).ok().and_then(|v| serde_json::from_value(v).ok())
}

impl Controller {
    fn mark_synced(&self, first: &mut bool) {
        if std::mem::take(first) {
            self.synced.send_modify(|n| *n += 1);
        }
    }

    pub(super) async fn watch_placements(self, cancel: CancellationToken) {
        let api: Api<DynamicObject> = Api::all_with(self.clients.wildcard(), &ApiResource::erase::<Placement>(&()));
        let mut first = true;
        follow(api, "Placements", cancel, parse::<Placement>, |change| match change {
            Change::Upsert(key, p) => {
                self.placements.insert(&key, p);
                self.queue.add(Key::Placement(key));
            }
            Change::Remove(key) => {
                self.placements.remove(&key);
                // Its namespaces recompute without it: labels it justified go.
                self.enqueue_namespaces_of(&key.cluster);
            }
            Change::Relisted(keys) => {
                self.placements.retain(&keys);
                self.mark_synced(&mut first);
                keys.into_iter().for_each(|k| self.queue.add(Key::Placement(k)));
            }
        })
        .await
    }

    pub(super) async fn watch_synctargets(self, cancel: CancellationToken) {
        let api: Api<DynamicObject> = Api::all_with(self.clients.wildcard(), &ApiResource::erase::<SyncTarget>(&()));
        let mut first = true;
        follow(api, "SyncTargets", cancel, parse::<SyncTarget>, |change| match change {
            Change::Upsert(key, t) => {
                let print = fingerprint(&t);
                self.targets.insert(&key, t);
                let changed = self.fingerprints.lock().expect("poisoned").insert(key, print.clone()) != Some(print);
                // Heartbeats change a target every few seconds; only what scheduling reads
                // re-evaluates the Placements (any workspace may use any target).
                if changed {
                    self.placements.all_keys(|_| true).into_iter().for_each(|k| self.queue.add(Key::Placement(k)));
                }
            }
            Change::Remove(key) => {
                self.targets.remove(&key);
                self.fingerprints.lock().expect("poisoned").remove(&key);
                self.placements.all_keys(|_| true).into_iter().for_each(|k| self.queue.add(Key::Placement(k)));
            }
            Change::Relisted(keys) => {
                self.targets.retain(&keys);
                self.fingerprints.lock().expect("poisoned").retain(|k, _| keys.contains(k));
                self.mark_synced(&mut first);
            }
        })
        .await
    }

    pub(super) async fn watch_namespaces(self, cancel: CancellationToken) {
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(self.clients.wildcard());
        let mut first = true;
        let events = async move {
            let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
            let mut relisted = HashSet::new();
            loop {
                let Some(event) = next_or_cancelled(&mut stream, &cancel).await else { return };
                let (key, obj) = match event {
                    Err(e) => {
                        tracing::warn!(error = %e, "watching namespaces failed; retrying");
                        continue;
                    }
                    Ok(watcher::Event::Init) => {
                        relisted.clear();
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        self.namespaces.retain(&relisted);
                        self.mark_synced(&mut first);
                        continue;
                    }
                    Ok(watcher::Event::InitApply(o)) | Ok(watcher::Event::Apply(o)) => (ClusterKey::of(&o), Some(o)),
                    Ok(watcher::Event::Delete(o)) => (ClusterKey::of(&o), None),
                };
                let Some(key) = key else { continue };
                match obj {
                    Some(mut o) => {
                        o.metadata.managed_fields = None;
                        relisted.insert(key.clone());
                        self.namespaces.insert(&key, o);
                        self.queue.add(Key::Namespace(key.clone()));
                    }
                    None => self.namespaces.remove(&key),
                }
                // The count of placed namespaces may change.
                self.enqueue_placements_of(&key.cluster);
            }
        };
        events.await
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
