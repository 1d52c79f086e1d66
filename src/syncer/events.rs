//! Kubernetes Events on upstream objects: how a syncer tells a tenant, in their own workspace
//! and with plain `kubectl describe` / `kubectl get events`, why an object did not sync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::kcp::{ClusterClients, LogicalClusterName};

/// One event recorder per logical cluster (a recorder is bound to a client, and kcp-tmc's
/// clients are per cluster); each aggregates repeats of the same event into a series.
#[derive(Clone)]
pub struct Events {
    clients: ClusterClients,
    reporter: Reporter,
    recorders: Arc<Mutex<HashMap<LogicalClusterName, Recorder>>>,
}

impl Events {
    pub fn new(clients: ClusterClients, controller: &str, instance: &str) -> Self {
        let reporter = Reporter { controller: controller.into(), instance: Some(instance.into()) };
        Self { clients, reporter, recorders: Default::default() }
    }

    /// Publishes a Warning on `obj`. Failing to publish is logged, never an error of the sync.
    pub async fn warn(
        &self,
        cluster: &LogicalClusterName,
        api: &ApiResource,
        obj: &DynamicObject,
        reason: &str,
        note: String,
    ) {
        self.publish(cluster, api, obj, (EventType::Warning, "Sync"), reason, note).await
    }

    /// Publishes an event of `kind` (type and action) on `obj`; failing to publish is logged.
    pub async fn publish(
        &self,
        cluster: &LogicalClusterName,
        api: &ApiResource,
        obj: &DynamicObject,
        kind: (EventType, &str),
        reason: &str,
        note: String,
    ) {
        let recorder = {
            let mut map = self.recorders.lock().expect("recorders poisoned");
            map.entry(cluster.clone())
                .or_insert_with(|| Recorder::new(self.clients.cluster(cluster), self.reporter.clone()))
                .clone()
        };
        let reference = ObjectReference {
            api_version: Some(api.api_version.clone()),
            kind: Some(api.kind.clone()),
            name: obj.metadata.name.clone(),
            namespace: obj.metadata.namespace.clone(),
            uid: obj.metadata.uid.clone(),
            ..Default::default()
        };
        let note: String = note.chars().take(1000).collect();
        let event =
            Event { type_: kind.0, reason: reason.into(), note: Some(note), action: kind.1.into(), secondary: None };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(reason, error = %crate::kcp::error_message(&e), "cannot record event");
        }
    }
}
