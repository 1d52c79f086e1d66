//! Normal Events on Placements when their choice of targets changes, so `kubectl describe
//! placement` tells the story (recorded through the virtual workspace's `events` claim).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::apis::placement::v1alpha1::Placement;
use crate::kcp::{ClusterClients, LogicalClusterName};

/// One recorder per logical cluster (recorders are bound to a client, clients to a cluster).
#[derive(Clone)]
pub struct Events {
    clients: ClusterClients,
    recorders: Arc<Mutex<HashMap<LogicalClusterName, Recorder>>>,
}

impl Events {
    pub fn new(clients: ClusterClients) -> Self {
        Self { clients, recorders: Default::default() }
    }

    /// Publishes a Normal event; failing to publish is logged, never an error of the reconcile.
    pub async fn normal(&self, cluster: &LogicalClusterName, placement: &Placement, reason: &str, note: String) {
        let recorder = {
            let mut map = self.recorders.lock().expect("recorders poisoned");
            map.entry(cluster.clone())
                .or_insert_with(|| {
                    let reporter = Reporter { controller: "tmc.kcp.io/placement".into(), instance: None };
                    Recorder::new(self.clients.cluster(cluster), reporter)
                })
                .clone()
        };
        let reference = ObjectReference {
            api_version: Some(Placement::api_version(&()).into()),
            kind: Some(Placement::kind(&()).into()),
            name: placement.metadata.name.clone(),
            uid: placement.metadata.uid.clone(),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Schedule".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(reason, error = %crate::kcp::error_message(&e), "cannot record event");
        }
    }
}
