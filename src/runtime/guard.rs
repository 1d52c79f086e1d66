//! Panics stay with the key or task that raised them.
//!
//! One manager serves every tenant, and a tokio task that panics ends silently: a worker that
//! died on one tenant's object would stop reconciling everyone's, and the key it held would stay
//! "processing" in its queue forever. So every worker runs each key's work through [`unwind`]:
//! a panic becomes an error of that key, which the queue releases and retries with backoff
//! while the worker goes on with the next key. Long-running tasks (watch loops, heartbeats)
//! run under [`supervise`], which logs a panic and restarts the task after a pause.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

/// A panic caught in one key's work; the key is retried with backoff like any failure.
#[derive(Debug, thiserror::Error)]
#[error("the work panicked (a bug in kcp-tmc; the key is retried with backoff): {0}")]
pub struct Panicked(pub String);

impl Panicked {
    fn from_payload(payload: Box<dyn Any + Send>) -> Self {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic payload".into());
        Self(text)
    }
}

/// Runs `work`, turning a panic into [`Panicked`] (logged at error, in the caller's span).
///
/// Unwind safety: what a panicking reconcile leaves behind is its own half-built values and
/// possibly a poisoned lock; the caches and the queue recover from poisoning (they hold
/// snapshots of the API, which the next event or relist corrects), so asserting unwind safety
/// here does not let a broken invariant escape.
pub async fn unwind<T>(work: impl Future<Output = T>) -> Result<T, Panicked> {
    AssertUnwindSafe(work).catch_unwind().await.map_err(|payload| {
        let caught = Panicked::from_payload(payload);
        tracing::error!(panic = %caught.0, "caught a panic; the key is released and retried with backoff");
        caught
    })
}

/// Runs one key's reconcile; a panic is an error of that key (`E: From<Panicked>`).
pub async fn reconcile<T, E: From<Panicked>>(work: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    unwind(work).await.unwrap_or_else(|p| Err(p.into()))
}

/// The pause before a panicked task is restarted: doubling from 1 s to 60 s.
const RESTART_BASE: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);

/// Runs the task `start` makes until it returns, restarting it after a pause whenever it
/// panics (a watch loop that relists on restart loses nothing), until `cancel` fires.
pub async fn supervise<F, Fut>(task: &'static str, cancel: CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pause = RESTART_BASE;
    loop {
        let Err(caught) = AssertUnwindSafe(start()).catch_unwind().await.map_err(Panicked::from_payload) else {
            return;
        };
        tracing::error!(task, panic = %caught.0, restart_in = ?pause, "background task panicked; restarting it");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RESTART_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::runtime::queue::{Backoff, WorkQueue};

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct Failed(#[from] Panicked);

    /// A worker loop shaped like the controllers': next key, guarded reconcile, complete.
    async fn worker(queue: Arc<WorkQueue<&'static str>>, attempts: Arc<Mutex<BTreeMap<&'static str, u32>>>) {
        while let Some(key) = queue.next().await {
            let attempts = attempts.clone();
            let outcome = reconcile(async move {
                let n = {
                    let mut a = attempts.lock().unwrap();
                    *a.entry(key).and_modify(|n| *n += 1).or_insert(1)
                };
                if key == "poison" && n <= 2 {
                    panic!("tenant value made reconcile {n} of {key} panic");
                }
                Ok::<_, Failed>(None)
            })
            .await;
            queue.complete(&key, &outcome);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_key_is_retried_with_backoff_and_others_keep_flowing() {
        let queue = WorkQueue::new(Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) });
        let attempts = Arc::new(Mutex::new(BTreeMap::new()));
        // One worker: if the panic killed it, nothing after "poison" would ever run.
        let task = tokio::spawn(worker(queue.clone(), attempts.clone()));
        for key in ["a", "poison", "b", "c"] {
            queue.add(key);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let seen = attempts.lock().unwrap().clone();
        assert_eq!(seen, BTreeMap::from([("a", 1), ("poison", 1), ("b", 1), ("c", 1)]));
        assert_eq!(queue.failures(&"poison"), 1, "the panic counts as a failure of its key");

        // Released and retried after its backoff (1 s, then 2 s), then it succeeds.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(attempts.lock().unwrap()["poison"], 2);
        queue.add("d");
        tokio::time::sleep(Duration::from_millis(2400)).await;
        let seen = attempts.lock().unwrap().clone();
        assert_eq!(seen["poison"], 3);
        assert_eq!(seen["d"], 1, "the worker kept taking new keys");
        assert_eq!(queue.failures(&"poison"), 0, "success forgot the failures");
        assert!(!task.is_finished(), "the worker survived");
        queue.shut_down();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_until_cancelled() {
        let runs = Arc::new(Mutex::new(0u32));
        let cancel = CancellationToken::new();
        let (r, c) = (runs.clone(), cancel.clone());
        let task = tokio::spawn(supervise("test", c, move || {
            let r = r.clone();
            async move {
                let n = {
                    let mut r = r.lock().unwrap();
                    *r += 1;
                    *r
                };
                if n < 3 {
                    panic!("watch loop {n} panicked");
                }
                std::future::pending::<()>().await
            }
        }));
        tokio::time::sleep(Duration::from_millis(3500)).await; // pauses of 1 s and 2 s
        assert_eq!(*runs.lock().unwrap(), 3);
        cancel.cancel();
        // The third run does not end on its own; cancelling stops the supervisor only between
        // runs, so the run itself is the caller's to end (its own `cancel`): here, abort it.
        task.abort();
        let _ = task.await;

        let ran_once = Arc::new(Mutex::new(0u32));
        let r = ran_once.clone();
        supervise("test", CancellationToken::new(), move || {
            let r = r.clone();
            async move { *r.lock().unwrap() += 1 }
        })
        .await;
        assert_eq!(*ran_once.lock().unwrap(), 1, "a task that returns is not restarted");
    }
}
