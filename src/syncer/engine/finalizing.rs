//! The finalizer of a new object, written off the worker.
//!
//! A new object needs this target's finalizer in kcp and its copy in the cluster. The copy does
//! not wait for the finalizer (see `sync_object`), and neither does the worker: the finalizer
//! write goes through kcp's virtual workspace, where the syncers of an object's other targets
//! patch the same list at the same moment, and while kcp is slow such writes took hundreds of
//! milliseconds. A worker held for each of them left the next keys queued behind them (the
//! bench's two-cluster tail: its keys waited for a worker while every worker waited for kcp).
//! Now the worker is free once the copy is written; a failed write re-queues the key with
//! backoff, as a failed sync would. One write per key is in flight at a time, so a sync the
//! object's own events bring meanwhile does not race it.
//!
//! The writes in flight are not bounded, on purpose. Bounded to the workers (a semaphore taken in
//! the task), the finalizers fell behind the copies in a 10,000-object burst: 7,174 were still
//! unwritten when the bench restarted the manager (written by the new one), and VmHWM rose from
//! 71.8 to 136.5 MB (each waiting task holds the object it read). Unbounded, the same burst held
//! ~290 more connections to kcp at its peak (kube's client speaks HTTP/1.1: one per request).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use kube::api::DynamicObject;
use kube::core::ApiResource;
use tokio::sync::Notify;
use tracing::Instrument;

use super::Engine;
use crate::syncer::upstream::SyncKey;

/// Keys whose finalizer write is in flight.
#[derive(Clone, Default)]
pub(super) struct InFlight {
    keys: Arc<Mutex<HashSet<SyncKey>>>,
    idle: Arc<Notify>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<SyncKey>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `key`; `false` when a write for it is in flight already.
    fn start(&self, key: &SyncKey) -> bool {
        self.lock().insert(key.clone())
    }

    fn finish(&self, key: &SyncKey) {
        let mut keys = self.lock();
        keys.remove(key);
        if keys.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no write is in flight.
    pub(super) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            notified.await;
        }
    }
}

impl Engine {
    /// Adds this target's finalizer to `obj` (of `key`) in a task of its own, unless a write for
    /// `key` is in flight already. A failure re-queues the key after its backoff delay.
    pub(super) fn add_finalizer_off_worker(&self, key: SyncKey, resource: ApiResource, obj: Arc<DynamicObject>) {
        if !self.finalizing.start(&key) {
            return;
        }
        let this = self.clone();
        let write = async move {
            let added = this.set_finalizer(&resource, &key.key, &obj, true).await;
            this.finalizing.finish(&key);
            if let Err(e) = added {
                let delay = this.queue.add_rate_limited(key);
                tracing::warn!(error = %e, retry_in = ?delay, "finalizer not added; synced again after the delay");
            }
        };
        tokio::spawn(write.instrument(tracing::Span::current()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kcp::{ClusterKey, LogicalClusterName};

    /// One write per key at a time; `idle` returns once every claim is finished.
    #[tokio::test]
    async fn one_write_per_key_in_flight() {
        let key = |name: &str| SyncKey {
            resource: Some(0),
            key: ClusterKey::new(LogicalClusterName::new("ws").unwrap(), Some("ns".into()), name),
        };
        let inflight = InFlight::default();
        assert!(inflight.start(&key("a")));
        assert!(!inflight.start(&key("a")), "a second sync of the key does not write again");
        assert!(inflight.start(&key("b")));
        let waiting = tokio::spawn({
            let inflight = inflight.clone();
            async move { inflight.idle().await }
        });
        inflight.finish(&key("a"));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "b is still in flight");
        assert!(inflight.start(&key("a")), "a finished write frees its key");
        inflight.finish(&key("a"));
        inflight.finish(&key("b"));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }
}
