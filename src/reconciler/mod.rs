//! Reconcilers run by `tmc manager`, one module per resource (kcp's own layout:
//! `pkg/reconciler/<group>/<resource>`), and the work queue they share.

pub mod cache;
pub mod queue;
pub mod synctarget;
