//! How push-mode syncers reach clusters a tenant names: which addresses they may dial
//! ([`address`], pure), the connector that enforces it at connect time ([`dial`]), and what is
//! kept of a cluster's answers ([`response`]). Below [`crate::kcp`] (whose error messages bound
//! these errors) and [`crate::syncer`].

pub mod address;
pub mod deadline;
pub mod dial;
pub mod response;
