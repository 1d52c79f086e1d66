//! One reflector for every watch: kube's `watcher` events applied to a consumer's store with
//! kube-runtime's relist semantics (`reflector::store::Writer::apply_watcher_event`).
//!
//! - `Init` starts a buffer, `InitApply` fills it, `InitDone` swaps it in under the store's one
//!   write lock: readers see the old state until the new one is complete, never a half list.
//! - Keys the store held before a relist and the list did not return are **vanished**: deletes
//!   the watch missed while it was down. They are removed and reported, so the consumer
//!   re-queues them (a downstream copy deleted behind the syncer's back is restored; an upstream
//!   object deleted while the watch was down gets its copies cleaned).
//! - `Apply`/`Delete` update in place.
//! - The *synced* signal turns true at the first `InitDone` and stays true across relists (the
//!   old state serves until the swap): before it, a missing key means "unknown", not "absent".
//!
//! The store is the consumer's ([`Store`]), because what is kept differs (the kcp view keeps
//! whole-or-metadata objects, the cluster side keeps verdicts) and several watches may share one
//! map (each owns the slice [`Store::keys`] reports). Keys are the consumer's too: objects from
//! kcp are keyed by [`ClusterKey`] (logical cluster, namespace, name; see [`cluster_key`]), so
//! the same name in two workspaces is two entries.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cache::ClusterCache;
use super::next_or_cancelled;
use crate::kcp::ClusterKey;

/// Annotations nothing reads from a watched object and that can be as large as the object.
const DROPPED_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

/// Drops managedFields and the last-applied-configuration annotation: the one place watched
/// objects are slimmed before anyone stores them.
pub fn strip<K: Resource>(mut obj: K) -> K {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| !DROPPED_ANNOTATIONS.contains(&k.as_str()));
    }
    obj
}

/// The key of an object read from kcp (see [`ClusterKey::of`]).
pub fn cluster_key<K: Resource>(obj: &K) -> Option<ClusterKey> {
    ClusterKey::of(obj)
}

/// Where a reflector keeps what it saw. Every method takes the store's lock once.
pub trait Store: Send + Sync {
    type Key: Eq + Hash + Clone + Send;
    type Item: Send;
    fn upsert(&self, key: &Self::Key, item: Self::Item);
    fn remove(&self, key: &Self::Key);
    /// Replaces this watch's slice by `fresh` atomically; returns the keys it held that `fresh`
    /// lacks (removed).
    fn replace(&self, fresh: Vec<(Self::Key, Self::Item)>) -> Vec<Self::Key>;
}

/// A [`ClusterCache`] wholly owned by one watch.
impl<T: Send + Sync> Store for ClusterCache<T> {
    type Key = ClusterKey;
    type Item = T;
    fn upsert(&self, key: &ClusterKey, item: T) {
        self.insert(key, item);
    }
    fn remove(&self, key: &ClusterKey) {
        ClusterCache::remove(self, key);
    }
    fn replace(&self, fresh: Vec<(ClusterKey, T)>) -> Vec<ClusterKey> {
        self.replace_all(fresh, |_| true)
    }
}

/// What one event changed, for the consumer to route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change<K> {
    /// Added or modified (also every object of a relist).
    Applied(K),
    /// Deleted, as the watch reported.
    Deleted(K),
    /// Held before a relist and absent from it: a delete the watch missed.
    Vanished(K),
}

impl<K> Change<K> {
    pub fn key(&self) -> &K {
        match self {
            Change::Applied(k) | Change::Deleted(k) | Change::Vanished(k) => k,
        }
    }

    /// Whether the object is gone (deleted or vanished).
    pub fn gone(&self) -> bool {
        !matches!(self, Change::Applied(_))
    }
}

/// Whether a watch has listed once. Cheap to clone.
#[derive(Clone)]
pub struct Synced(Arc<watch::Sender<bool>>);

impl Default for Synced {
    fn default() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }
}

impl Synced {
    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once the watch has listed (at once if it has).
    pub async fn wait_synced(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|s| *s).await;
    }

    fn set(&self) {
        self.0.send_if_modified(|s| !std::mem::replace(s, true));
    }

    /// Marks the watch listed without one running (unit tests fill caches by hand).
    #[cfg(test)]
    pub fn mark_synced(&self) {
        self.set()
    }
}

type KeyFn<O, K> = Box<dyn Fn(&O) -> Option<K> + Send + Sync>;
type ListedFn = Box<dyn FnMut() + Send>;
type TransformFn<O, K, T> = Box<dyn FnMut(&K, O) -> T + Send>;

/// See the module docs. `O` is the watched object type, `S` the consumer's store.
pub struct Reflector<O, S: Store> {
    store: S,
    key: KeyFn<O, S::Key>,
    transform: TransformFn<O, S::Key, S::Item>,
    buffer: Option<Vec<(S::Key, S::Item)>>,
    synced: Synced,
    listed: Option<ListedFn>,
}

impl<O: Resource + Send + 'static, S: Store> Reflector<O, S> {
    /// `key` names an object (objects it returns `None` for are skipped); `transform` turns the
    /// stripped object into what the store keeps.
    pub fn new(
        store: S,
        key: impl Fn(&O) -> Option<S::Key> + Send + Sync + 'static,
        transform: impl FnMut(&S::Key, O) -> S::Item + Send + 'static,
    ) -> Self {
        Self {
            store,
            key: Box::new(key),
            transform: Box::new(transform),
            buffer: None,
            synced: Synced::default(),
            listed: None,
        }
    }

    /// Shares `synced` (e.g. one signal created before the watch starts).
    pub fn with_synced(mut self, synced: Synced) -> Self {
        self.synced = synced;
        self
    }

    /// Calls `listed` after every relist is swapped in (e.g. to log what the store holds).
    pub fn on_listed(mut self, listed: impl FnMut() + Send + 'static) -> Self {
        self.listed = Some(Box::new(listed));
        self
    }

    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }

    /// Applies one event; returns what changed (nothing while a relist is buffered).
    pub fn apply(&mut self, event: watcher::Event<O>) -> Vec<Change<S::Key>> {
        match event {
            watcher::Event::Init => {
                self.buffer = Some(Vec::new());
                vec![]
            }
            watcher::Event::InitApply(obj) => {
                if let Some(key) = (self.key)(&obj) {
                    let item = (self.transform)(&key, strip(obj));
                    self.buffer.get_or_insert_default().push((key, item));
                }
                vec![]
            }
            watcher::Event::InitDone => {
                let fresh = self.buffer.take().unwrap_or_default();
                let listed: Vec<S::Key> = fresh.iter().map(|(k, _)| k.clone()).collect();
                let vanished = self.store.replace(fresh);
                self.synced.set();
                if let Some(listed) = self.listed.as_mut() {
                    listed();
                }
                let applied = listed.into_iter().map(Change::Applied);
                applied.chain(vanished.into_iter().map(Change::Vanished)).collect()
            }
            watcher::Event::Apply(obj) => {
                let Some(key) = (self.key)(&obj) else { return vec![] };
                let item = (self.transform)(&key, strip(obj));
                self.store.upsert(&key, item);
                vec![Change::Applied(key)]
            }
            watcher::Event::Delete(obj) => {
                let Some(key) = (self.key)(&obj) else { return vec![] };
                self.store.remove(&key);
                vec![Change::Deleted(key)]
            }
        }
    }

    /// Runs `events` (a `watcher` stream with backoff) into the store until it ends or `cancel`
    /// fires, handing every event's changes to `changed`. Errors are logged, bounded, as `what`
    /// failing; the watcher's backoff retries.
    pub async fn run<E>(
        mut self,
        mut events: impl Stream<Item = Result<watcher::Event<O>, watcher::Error>> + Unpin,
        cancel: CancellationToken,
        what: &str,
        mut changed: E,
    ) where
        E: FnMut(Vec<Change<S::Key>>),
    {
        while let Some(event) = next_or_cancelled(&mut events, &cancel).await {
            match event {
                Ok(event) => {
                    let relisted = matches!(event, watcher::Event::InitDone);
                    let changes = self.apply(event);
                    if relisted {
                        let vanished = changes.iter().filter(|c| matches!(c, Change::Vanished(_))).count();
                        tracing::info!(watch = what, objects = changes.len() - vanished, vanished, "listed");
                    }
                    if !changes.is_empty() {
                        changed(changes);
                    }
                }
                Err(e) => {
                    tracing::warn!(watch = what, error = %crate::kcp::watch_error_message(&e), "watch failed; retrying")
                }
            }
        }
    }
}

/// A stream of `watcher` events, retried as [`super::rewatch`] says, ready for [`Reflector::run`].
pub fn watch<O>(
    api: kube::Api<O>,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<O>, watcher::Error>> + Unpin + Send
where
    O: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    super::rewatch::retried(watcher(api, config).boxed())
}

/// Keys of `changes`, deduplicated, in order.
pub fn keys<K: Eq + Hash + Clone>(changes: &[Change<K>]) -> Vec<K> {
    let mut seen = HashSet::new();
    changes.iter().map(Change::key).filter(|k| seen.insert((*k).clone())).cloned().collect()
}

#[cfg(test)]
#[path = "reflector_tests.rs"]
mod tests;
