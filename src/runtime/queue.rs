//! A work queue keyed by cluster-aware keys, in the spirit of client-go's workqueue.
//!
//! kube-runtime's `Controller` keys objects by (name, namespace), which merges same-named
//! objects from different workspaces; this queue takes any key, and kcp-tmc always uses
//! [`crate::kcp::ClusterKey`]. It guarantees:
//! - a key waiting in the queue is queued once however often it is added (dedupe);
//! - a key is handed to one worker at a time; adds while it is processed re-queue it after;
//! - delayed adds keep only the earliest deadline per key;
//! - failures back off per key, exponentially with jitter, until [`WorkQueue::forget`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::server::metrics::QueueMetrics;

/// The longest a delayed add waits. Requeue times derive from tenant-written times (an
/// `evictAfter` in year 9999 is thousands of years away, and `Instant + Duration` panics on
/// overflow); a level-triggered reconcile an hour early costs nothing.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Per-key retry delays: `base * 2^failures`, capped, with up to 10% jitter.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(500), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The delay before retry number `failures` (1-based), without jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }
}

struct State<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
    scheduled: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
    /// When each key of `ready` was queued (only with metrics): its wait is recorded when a
    /// worker takes it.
    since: HashMap<K, Instant>,
    shut_down: bool,
}

/// See the module docs.
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
    backoff: Backoff,
    /// Where depth and retries are recorded, if anywhere.
    metrics: Option<QueueMetrics>,
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    pub fn new(backoff: Backoff) -> Arc<Self> {
        Self::build(backoff, None)
    }

    /// A queue that records its depth and retries into `metrics`.
    pub fn with_metrics(backoff: Backoff, metrics: QueueMetrics) -> Arc<Self> {
        Self::build(backoff, Some(metrics))
    }

    fn build(backoff: Backoff, metrics: Option<QueueMetrics>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                scheduled: HashMap::new(),
                failures: HashMap::new(),
                since: HashMap::new(),
                shut_down: false,
            }),
            notify: Notify::new(),
            backoff,
            metrics,
        })
    }

    /// Records the depth; called with the lock held, so reports cannot overtake each other.
    fn report_depth(&self, s: &State<K>) {
        if let Some(m) = &self.metrics {
            m.set_depth(s.ready.len());
        }
    }

    /// Records how many keys wait for a retry; called with the lock held, like the depth.
    fn report_failing(&self, s: &State<K>) {
        if let Some(m) = &self.metrics {
            m.set_failing(s.failures.len());
        }
    }

    /// The state survives a panic while it was locked: every operation leaves it consistent
    /// before anything can panic, and the workers must go on (see [`super::guard`]).
    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `key` now.
    pub fn add(&self, key: K) {
        let mut s = self.lock();
        if s.shut_down {
            return;
        }
        if s.processing.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            if self.metrics.is_some() {
                s.since.insert(key.clone(), Instant::now());
            }
            s.ready.push_back(key);
            self.report_depth(&s);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay` (at most [`MAX_DELAY`]), unless it is already due earlier.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay.min(MAX_DELAY);
        {
            let mut s = self.lock();
            if s.shut_down || s.scheduled.get(&key).is_some_and(|t| *t <= at) {
                return;
            }
            s.scheduled.insert(key.clone(), at);
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let Some(queue) = queue.upgrade() else { return };
            let due = {
                let mut s = queue.lock();
                // A later reschedule to an earlier time owns the key now; only the timer
                // whose deadline is still recorded fires.
                let mine = s.scheduled.get(&key) == Some(&at);
                if mine {
                    s.scheduled.remove(&key);
                }
                mine
            };
            if due {
                queue.add(key);
            }
        });
    }

    /// Re-queues `key` after its next backoff delay; returns that delay.
    pub fn add_rate_limited(self: &Arc<Self>, key: K) -> Duration {
        let failures = {
            let mut s = self.lock();
            let f = s.failures.entry(key.clone()).or_insert(0);
            *f += 1;
            let failures = *f;
            self.report_failing(&s);
            failures
        };
        if let Some(m) = &self.metrics {
            m.retry();
        }
        let delay = self.backoff.delay(failures);
        let jitter = delay.mul_f64(rand::random::<f64>() * 0.1);
        self.add_after(key, delay + jitter);
        delay
    }

    /// Records the outcome of processing `key` and marks it done: a success clears its backoff
    /// and schedules the requeue it asked for; a failure re-queues it after its next backoff
    /// delay, which is returned so the caller can log it.
    pub fn complete<E>(self: &Arc<Self>, key: &K, outcome: &Result<Option<Duration>, E>) -> Option<Duration> {
        let retry = match outcome {
            Ok(requeue) => {
                self.forget(key);
                if let Some(after) = requeue {
                    self.add_after(key.clone(), *after);
                }
                None
            }
            Err(_) => Some(self.add_rate_limited(key.clone())),
        };
        self.done(key);
        retry
    }

    /// Clears the failure count of `key` (after a successful reconcile).
    pub fn forget(&self, key: &K) {
        let mut s = self.lock();
        if s.failures.remove(key).is_some() {
            self.report_failing(&s);
        }
    }

    /// How often `key` has failed since it was last forgotten.
    pub fn failures(&self, key: &K) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for the next key; `None` once the queue is shut down.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if s.shut_down {
                    return None;
                }
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.processing.insert(key.clone());
                    self.report_depth(&s);
                    if let (Some(m), Some(at)) = (&self.metrics, s.since.remove(&key)) {
                        m.waited(at.elapsed());
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` as processed; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &K) {
        let again = {
            let mut s = self.lock();
            s.processing.remove(key);
            s.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }

    /// Keys waiting to be processed.
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys; workers waiting in [`Self::next`] return `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedupes_waiting_keys() {
        let q = WorkQueue::new(Backoff::default());
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(q.next().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn key_added_while_processing_is_requeued_after_done() {
        let q = WorkQueue::new(Backoff::default());
        q.add("a");
        let k = q.next().await.unwrap();
        q.add("a");
        assert!(q.is_empty(), "not handed out twice at once");
        q.done(&k);
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_add_keeps_earliest_deadline() {
        let q = WorkQueue::new(Backoff::default());
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(2));
        q.add_after("a", Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(q.len(), 1);
        let k = q.next().await.unwrap();
        q.done(&k);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(q.is_empty(), "the superseded timers must not fire");
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(10) };
        let got: Vec<u64> = (1..=6).map(|f| b.delay(f).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(1000), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_requeue_and_forget() {
        let q = WorkQueue::new(Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) });
        assert_eq!(q.add_rate_limited("a"), Duration::from_secs(1));
        assert_eq!(q.add_rate_limited("a"), Duration::from_secs(2));
        assert_eq!(q.failures(&"a"), 2);
        q.forget(&"a");
        assert_eq!(q.failures(&"a"), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(q.next().await, Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn complete_handles_both_outcomes() {
        let q = WorkQueue::new(Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) });
        q.add("a");
        let k = q.next().await.unwrap();
        assert_eq!(q.complete(&k, &Err::<Option<Duration>, ()>(())), Some(Duration::from_secs(1)));
        assert_eq!(q.failures(&"a"), 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let k = q.next().await.unwrap();
        assert_eq!(q.complete::<()>(&k, &Ok(Some(Duration::from_secs(5)))), None);
        assert_eq!(q.failures(&"a"), 0, "success forgets the failures");
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(q.len(), 1, "the requested requeue fired");
    }

    #[tokio::test(start_paused = true)]
    async fn records_depth_and_retries() {
        let metrics = crate::server::Metrics::new();
        let q = WorkQueue::with_metrics(Backoff::default(), metrics.queue("test"));
        let has = |want: &str| metrics.encode().lines().any(|l| l == want);
        q.add("a");
        q.add("b");
        q.add("a");
        assert!(has(r#"tmc_workqueue_depth{queue="test"} 2"#));
        let k = q.next().await.unwrap();
        assert!(has(r#"tmc_workqueue_depth{queue="test"} 1"#));
        assert!(has(r#"tmc_workqueue_failing_keys{queue="test"} 0"#));
        q.complete(&k, &Err::<Option<Duration>, ()>(()));
        assert!(has(r#"tmc_workqueue_retries_total{queue="test"} 1"#));
        assert!(has(r#"tmc_workqueue_failing_keys{queue="test"} 1"#), "a failed key waits for its retry");
        let b = q.next().await.unwrap();
        q.complete::<()>(&b, &Ok(None));
        assert!(has(r#"tmc_workqueue_failing_keys{queue="test"} 1"#), "another key's success leaves it");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let k = q.next().await.unwrap();
        q.complete::<()>(&k, &Ok(None));
        assert!(has(r#"tmc_workqueue_failing_keys{queue="test"} 0"#), "its own success clears it");
        // How long each key waited for a worker: four takes so far (the retry of "a" waited
        // ~0.5 s, from its backoff's end to the next take), the last 3 s.
        q.add("c");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let c = q.next().await.unwrap();
        q.complete::<()>(&c, &Ok(None));
        assert!(has(r#"tmc_workqueue_wait_seconds_count{queue="test"} 4"#));
        assert!(has(r#"tmc_workqueue_wait_seconds_bucket{queue="test",le="0.25"} 2"#));
        assert!(has(r#"tmc_workqueue_wait_seconds_bucket{queue="test",le="2.5"} 3"#));
        q.add("a");
        let k = q.next().await.unwrap();
        q.complete(&k, &Err::<Option<Duration>, ()>(()));
        drop(q);
        assert!(has(r#"tmc_workqueue_depth{queue="test"} 0"#), "a dropped queue's share goes");
        assert!(has(r#"tmc_workqueue_failing_keys{queue="test"} 0"#), "and its failing keys");
    }

    #[tokio::test]
    async fn shut_down_releases_workers() {
        let q = WorkQueue::<&str>::new(Backoff::default());
        let q2 = q.clone();
        let worker = tokio::spawn(async move { q2.next().await });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(worker.await.unwrap(), None);
        q.add("x");
        assert!(q.is_empty());
    }
}
