//! Which workspaces' objects one syncer looks after, when a SyncTarget serves tenants on several
//! kcp shards.
//!
//! A syncer reads kcp through one endpoint's view ([`Upstream`]), and an endpoint serves only the
//! workspaces of its shard. A SyncTarget's *host* syncer runs over the view of its own shard; a
//! workspace it allows (`spec.allowedWorkspaces`) may be on another shard, so for every other
//! endpoint the manager follows, the host's supervisor starts a *guest* syncer over that
//! endpoint's view with the same cluster credentials (see
//! [`crate::reconciler::synctarget::syncers`]). Host and guests share one cluster and one target
//! label, and every downstream object maps back to a workspace: each is looked after by exactly
//! one of them, the one whose view serves that workspace ([`route`]). A syncer that is not sure
//! waits: "not in my view" is never taken for "gone from kcp".

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::syncer::upstream::Upstream;

/// What a syncer does with a key of one workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// This syncer syncs it (copies, deletes, cleans up).
    Mine,
    /// Another syncer of the same target does; this one leaves it alone.
    Others,
    /// Not known yet (a view has not listed, a guest has not started): asked again later.
    Unknown,
}

/// The host's route for a workspace: its own target's workspace, one it does not consent to
/// (consent withdrawn: the copies go, whichever shard they came from), and one its view serves
/// are its own. Any other consented workspace is on another shard (or gone): a guest's, if a
/// guest's view serves it; the host's to clean up only when every endpoint is followed and
/// every guest's view has listed and none serves it (the workspace is gone or unbound).
/// `complete` is false when the manager leaves some shards to others (`--shards`): then no
/// workspace outside the host's view is ever taken for gone.
///
/// The views are asked lazily (`own_view`, then `others`: the peers' answers and `complete`):
/// this runs on every sync, and most keys are of the target's own workspace.
pub fn host_route(
    own_workspace: bool,
    consented: impl FnOnce() -> bool,
    own_view: impl FnOnce() -> Option<bool>,
    others: impl FnOnce() -> (Vec<Option<bool>>, bool),
) -> Route {
    if own_workspace || !consented() {
        return Route::Mine;
    }
    let own_view = own_view();
    if own_view == Some(true) {
        return Route::Mine;
    }
    let (peers, complete) = others();
    if own_view.is_none() || peers.iter().any(Option::is_none) {
        return Route::Unknown;
    }
    if !complete || peers.contains(&Some(true)) { Route::Others } else { Route::Mine }
}

/// A guest's route: only workspaces its own view serves.
pub fn guest_route(own_view: Option<bool>) -> Route {
    match own_view {
        Some(true) => Route::Mine,
        Some(false) => Route::Others,
        None => Route::Unknown,
    }
}

/// The views of every virtual-workspace endpoint this manager follows, by URL, and whether it
/// follows every endpoint the APIExport's slice lists.
#[derive(Clone, Default)]
pub struct Followed {
    pub views: BTreeMap<String, Upstream>,
    pub complete: bool,
}

/// The manager-wide registry of [`Followed`] views, which the supervisors' guests follow.
#[derive(Clone)]
pub struct Views(Arc<watch::Sender<Followed>>);

impl Default for Views {
    fn default() -> Self {
        Self(Arc::new(watch::channel(Followed::default()).0))
    }
}

impl Views {
    /// Records the endpoints followed now (replacing what was there) and whether that is all.
    pub fn set(&self, views: BTreeMap<String, Upstream>, complete: bool) {
        self.0.send_replace(Followed { views, complete });
    }

    pub fn subscribe(&self) -> watch::Receiver<Followed> {
        self.0.subscribe()
    }
}

/// Whose keys a syncer looks after (see the module docs).
#[derive(Clone, Default)]
pub enum Scope {
    /// Everything in its view: pull mode, and a manager that runs no guests.
    #[default]
    Sole,
    /// A target's syncer over the view of its own shard's endpoint `url`; the other followed
    /// endpoints' views tell it which workspaces are its guests'.
    Host { url: String, views: watch::Receiver<Followed> },
    /// A syncer of another shard's target over this view.
    Guest,
}

impl Scope {
    pub fn is_guest(&self) -> bool {
        matches!(self, Scope::Guest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Route::*;

    #[test]
    fn host_route_table() {
        let (t, f) = (Some(true), Some(false));
        // (own workspace, consented, own view, peers, complete) → route
        type Case<'a> = (bool, bool, Option<bool>, &'a [Option<bool>], bool, Route);
        let cases: [Case; 12] = [
            (true, true, None, &[None], false, Mine),
            (false, false, f, &[t], true, Mine),
            (false, true, t, &[None], false, Mine),
            (false, true, None, &[], true, Unknown),
            (false, true, f, &[None], true, Unknown),
            (false, true, f, &[f, None], true, Unknown),
            (false, true, f, &[t], true, Others),
            (false, true, f, &[f, t], true, Others),
            (false, true, f, &[f], true, Mine),
            (false, true, f, &[], true, Mine),
            (false, true, f, &[f], false, Others),
            (false, true, f, &[], false, Others),
        ];
        for (own, consented, view, peers, complete, want) in cases {
            assert_eq!(
                host_route(own, || consented, || view, || (peers.to_vec(), complete)),
                want,
                "own={own} consented={consented} view={view:?} peers={peers:?} complete={complete}"
            );
        }
    }

    #[test]
    fn guest_route_table() {
        assert_eq!(guest_route(Some(true)), Mine);
        assert_eq!(guest_route(Some(false)), Others);
        assert_eq!(guest_route(None), Unknown);
    }
}
