//! The sync engine: spec down from kcp to a physical cluster, status back up.
//!
//! - [`credentials`]: which kubeconfigs push mode accepts from tenants, and their client config;
//! - [`naming`]: target keys, downstream namespace names and locators (pure);
//! - [`transform`]: the object applied downstream, built from the upstream one (pure);
//! - [`resources`]: which APIs are synced and how namespaces are assigned;
//! - [`status`]: the upstream status from one or several targets (pure);
//! - [`upstream`]: the shared, cluster-keyed view of kcp, fanned out to syncers;
//! - [`kept`]: what that view keeps of each object (whole, or metadata only) (pure);
//! - [`downstream`]: one syncer's view of its cluster (label-selected watches);
//! - [`access`]: the syncer's rights in the namespaces it creates (least privilege);
//! - [`engine`]: one syncer — spec down, drift, deletion, status up, upsync, heartbeat;
//! - [`upsync`]: what is copied back from a cluster, and when a copy is deleted (pure);
//! - [`events`]: Warnings on upstream objects that did not sync, and why;
//! - [`client`]: the push-mode cluster client, built on [`crate::net`]'s dialer and answer bounds.

pub mod access;
pub mod aggregate;
pub mod client;
pub mod credentials;
pub mod discovery;
pub mod downstream;
pub mod engine;
pub mod events;
pub mod kept;
pub mod naming;
pub mod redact;
pub mod resources;
pub mod status;
pub mod transform;
pub mod upstream;
pub mod upsync;
