//! The `sync.kcp.io` API group: physical clusters registered as sync targets.

pub mod v1alpha1;
