//! Reconcilers run by `tmc manager`, one module per resource (kcp's own layout:
//! `pkg/reconciler/<group>/<resource>`), and the work queue they share.

pub mod cache;
pub mod placement;
pub mod queue;
pub mod synctarget;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

/// The next item of a watch stream, or `None` when the stream ends or `cancel` fires.
pub async fn next_or_cancelled<S: Stream + Unpin>(events: &mut S, cancel: &CancellationToken) -> Option<S::Item> {
    tokio::select! {
        _ = cancel.cancelled() => None,
        e = events.next() => e,
    }
}
