//! The one worker loop: N workers pull keys from a [`WorkQueue`], reconcile each inside a
//! tracing span and a panic guard ([`guard::reconcile`]), and hand the outcome back to the queue
//! (success clears the key's backoff and schedules the requeue it asked for; failure retries it
//! with backoff). Stopping shuts the queue down and gives the items in hand [`DRAIN_TIMEOUT`].
//!
//! [`DRAIN_TIMEOUT`]: super::DRAIN_TIMEOUT

use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::Instrument;

use super::guard::{self, Panicked};
use super::queue::WorkQueue;

/// What one reconcile returns: `Ok(Some(after))` asks to be run again after `after`.
pub type Outcome<E> = Result<Option<Duration>, E>;

/// Called after every reconcile with the key, whether it succeeded and when it started (the
/// controllers' metrics and telemetry).
pub type Observe<K> = Arc<dyn Fn(&K, bool, Instant) + Send + Sync>;
/// Makes the span of one key's reconcile.
pub type SpanOf<K> = Arc<dyn Fn(&K) -> tracing::Span + Send + Sync>;

/// Running workers of one queue; [`Workers::stop`] ends them.
pub struct Workers<K: Clone + Eq + Hash + Send + 'static> {
    queue: Arc<WorkQueue<K>>,
    set: JoinSet<()>,
    what: &'static str,
}

/// How the workers of one controller name and observe their work.
pub struct Loop<K> {
    /// Names the controller in logs (`workers = …`).
    pub what: &'static str,
    pub span: SpanOf<K>,
    pub observe: Observe<K>,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Loop<K> {
    pub fn new(what: &'static str, span: impl Fn(&K) -> tracing::Span + Send + Sync + 'static) -> Self {
        Self { what, span: Arc::new(span), observe: Arc::new(|_, _, _| {}) }
    }

    pub fn observe(mut self, observe: impl Fn(&K, bool, Instant) + Send + Sync + 'static) -> Self {
        self.observe = Arc::new(observe);
        self
    }

    /// Starts `count` (at least one) workers running `reconcile` on the keys of `queue`.
    pub fn spawn<R, Fut, E>(self, queue: &Arc<WorkQueue<K>>, count: usize, reconcile: R) -> Workers<K>
    where
        R: Fn(K) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Outcome<E>> + Send + 'static,
        E: From<Panicked> + Display + Send + 'static,
    {
        let mut set = JoinSet::new();
        for _ in 0..count.max(1) {
            let (queue, reconcile, observe) = (queue.clone(), reconcile.clone(), self.observe.clone());
            let span = self.span.clone();
            set.spawn(async move {
                while let Some(key) = queue.next().await {
                    let span = span(&key);
                    let started = Instant::now();
                    let outcome = guard::reconcile(reconcile(key.clone())).instrument(span.clone()).await;
                    observe(&key, outcome.is_ok(), started);
                    if let (Err(e), Some(delay)) = (&outcome, queue.complete(&key, &outcome)) {
                        span.in_scope(|| tracing::warn!(error = %e, retry_in = ?delay, "reconcile failed"));
                    }
                }
            });
        }
        Workers { queue: queue.clone(), set, what: self.what }
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> Workers<K> {
    /// Shuts the queue down and waits (bounded) for the items in hand.
    pub async fn stop(self) {
        self.queue.shut_down();
        super::drain(self.set, self.what).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::queue::Backoff;
    use std::sync::Mutex;

    #[derive(Debug)]
    struct Failed(String);
    impl From<Panicked> for Failed {
        fn from(p: Panicked) -> Self {
            Failed(p.0)
        }
    }
    impl Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    fn backoff() -> Backoff {
        Backoff { base: Duration::from_millis(10), max: Duration::from_millis(20) }
    }

    /// Each key's reconciles: "panic" panics on its first run, "fail" fails on its first run,
    /// "ok" succeeds. Every key must end up succeeding, each observed once per run.
    #[tokio::test]
    async fn panics_and_failures_are_retried_per_key_and_observed() {
        let queue = WorkQueue::new(backoff());
        let runs: Arc<Mutex<Vec<(&'static str, bool)>>> = Default::default();
        let observed = runs.clone();
        let attempts: Arc<Mutex<std::collections::HashMap<&'static str, u32>>> = Default::default();
        let workers = Loop::new("test", |k: &&'static str| tracing::info_span!("t", key = *k))
            .observe(move |k, ok, _| observed.lock().unwrap().push((*k, ok)))
            .spawn(&queue, 2, move |key: &'static str| {
                let attempts = attempts.clone();
                async move {
                    let n = {
                        let mut a = attempts.lock().unwrap();
                        *a.entry(key).or_default() += 1;
                        a[key]
                    };
                    match (key, n) {
                        ("panic", 1) => panic!("boom"),
                        ("fail", 1) => Err(Failed("no".into())),
                        _ => Ok::<_, Failed>(None),
                    }
                }
            });
        for k in ["ok", "panic", "fail"] {
            queue.add(k);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.lock().unwrap().iter().filter(|(_, ok)| *ok).count() < 3 {
            assert!(Instant::now() < deadline, "not all keys succeeded: {:?}", runs.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        workers.stop().await;
        let mut got = runs.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec![("fail", false), ("fail", true), ("ok", true), ("panic", false), ("panic", true)]);
        assert_eq!(queue.failures(&"panic"), 0, "success clears the backoff");
    }

    #[tokio::test]
    async fn stop_drains_the_item_in_hand() {
        let queue = WorkQueue::new(backoff());
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let done = finished.clone();
        let workers = Loop::new("test", |_: &u32| tracing::Span::none()).spawn(&queue, 1, move |_| {
            let (done, started_tx) = (done.clone(), started_tx.clone());
            async move {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, Failed>(None)
            }
        });
        queue.add(1);
        started_rx.await.unwrap();
        workers.stop().await;
        assert!(finished.load(std::sync::atomic::Ordering::SeqCst), "the reconcile in hand finished");
        assert!(queue.next().await.is_none(), "the queue is shut down");
    }
}
