//! Reconcilers run by `tmc manager`, one module per resource (kcp's own layout:
//! `pkg/reconciler/<group>/<resource>`). The machinery they share with the syncer (queue, cache,
//! reflector, worker loop) lives below both, in [`crate::runtime`].

pub mod placement;
pub mod synctarget;
