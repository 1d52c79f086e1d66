//! The `placement.kcp.io` API group: which namespaces run on which sync targets.

pub mod override_schema;
pub mod overrides;
pub mod replicas;
pub mod selector;
pub mod selector_schema;
pub mod v1alpha1;
