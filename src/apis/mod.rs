//! API types served by kcp-tmc. Types only: no I/O and no reconciliation logic lives here.
//!
//! Each group has its own module so the generated schemas stay small and focused. The doc
//! comments on these types are what `kubectl explain` shows, so they are written for users.

// kube's `printcolumn(...)` arguments repeat `type_ = ...` per column, which clippy misreads as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod applied;
pub mod condition;
pub mod names;
pub mod placement;
pub mod sync;

pub use condition::{ConditionStatus, condition_status};
