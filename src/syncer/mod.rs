//! The sync engine: spec down from kcp to a physical cluster, status back up.
//!
//! So far: the naming of downstream namespaces and targets ([`naming`]) and the pure transform
//! from an upstream object to the object applied downstream ([`transform`]).

pub mod naming;
pub mod transform;
