//! Generic controller machinery shared by the reconcilers and the syncer: the cluster-aware
//! cache and work queue, panic guards, and draining workers on shutdown. It sits below both
//! [`crate::reconciler`] and [`crate::syncer`] and imports neither.

pub mod cache;
pub mod guard;
pub mod queue;
pub mod reflector;
pub mod rewatch;
pub mod worker;

use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long workers may take to finish the item in hand once their queue is shut down. Bounded
/// so that a write hanging on an unreachable cluster cannot hold up a shutdown (or a leader's
/// hand-over) for minutes; an interrupted write is redone by the next run.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for `workers` (whose queue is shut down) to finish their current items, for up to
/// [`DRAIN_TIMEOUT`]; the ones still running then are aborted.
pub async fn drain(mut workers: JoinSet<()>, what: &str) {
    let all = async { while workers.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, all).await.is_err() {
        tracing::warn!(workers = what, timeout = ?DRAIN_TIMEOUT, "workers did not finish in time; aborting them");
    }
}

/// The next item of a watch stream, or `None` when the stream ends or `cancel` fires.
pub async fn next_or_cancelled<S: Stream + Unpin>(events: &mut S, cancel: &CancellationToken) -> Option<S::Item> {
    tokio::select! {
        _ = cancel.cancelled() => None,
        e = events.next() => e,
    }
}
