//! Which of a target's APIs its cluster serves: discovery on the downstream side, one request
//! per API group, decided by [`resources::classify`].

use std::collections::HashMap;

use kube::discovery::{self, ApiGroup};

use super::resources::{self, SyncedResource, Unavailable};
use crate::apis::sync::v1alpha1::{SupportedApi, SyncedResourceState};
use crate::kcp::error_message;

/// The outcome of discovering one API on the cluster.
pub type Discovered = (SupportedApi, Result<SyncedResource, Unavailable>);

/// Looks every API of `apis` up in the cluster's discovery documents.
pub async fn discover(client: &kube::Client, apis: &[SupportedApi]) -> Vec<Discovered> {
    let mut groups: HashMap<&str, Result<ApiGroup, Unavailable>> = HashMap::new();
    let mut out = Vec::with_capacity(apis.len());
    for api in apis {
        if !groups.contains_key(api.group.as_str()) {
            let found = discovery::group(client, &api.group).await.map_err(|e| group_error(&api.group, e));
            groups.insert(&api.group, found);
        }
        let outcome = match &groups[api.group.as_str()] {
            Ok(group) => resources::classify(api, group.recommended_kind(&api.kind)),
            Err(missing) if missing.state == SyncedResourceState::MissingOnCluster => resources::classify(api, None),
            Err(e) => Err(e.clone()),
        };
        out.push((api.clone(), outcome));
    }
    out
}

fn group_error(group: &str, e: kube::Error) -> Unavailable {
    match e {
        kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_)) => {
            Unavailable::new(SyncedResourceState::MissingOnCluster, format!("the cluster serves no group {group}"))
        }
        e => Unavailable::new(
            SyncedResourceState::DiscoveryFailed,
            format!("reading the cluster's discovery failed: {}", error_message(&e)),
        ),
    }
}
