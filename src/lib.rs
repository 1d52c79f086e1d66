//! kcp-tmc: Transparent Multi-Cluster for kcp.
//!
//! Workloads created in kcp workspaces run on real Kubernetes clusters. The crate is laid out
//! like kcp itself: API types in [`apis`], everything about talking to kcp in [`kcp`], one
//! reconciler per resource in [`reconciler`], process wiring in [`manager`], metrics and health
//! endpoints in [`server`], and the `tmc` command line in [`cli`].

pub mod apis;
pub mod cli;
#[cfg(test)]
mod heap_tests;
pub mod json;
pub mod kcp;
pub mod leader;
pub mod manager;
pub mod net;
#[cfg(test)]
mod proptests;
pub mod reconciler;
pub mod runtime;
pub mod server;
pub mod syncer;
