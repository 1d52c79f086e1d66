//! Push mode: the syncers the manager runs itself, one per SyncTarget whose
//! `kubeconfigSecretRef` holds a usable kubeconfig. Started when the credentials load,
//! restarted when the kubeconfig changes, stopped when they break or the target is deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::kcp::ClusterKey;
use crate::syncer::engine::{Engine, EngineSettings};
use crate::syncer::upstream::Upstream;

struct Running {
    kubeconfig_hash: String,
    cancel: CancellationToken,
}

/// See the module docs.
#[derive(Clone)]
pub struct Supervisor {
    upstream: Upstream,
    settings: EngineSettings,
    running: Arc<Mutex<HashMap<ClusterKey, Running>>>,
    parent: CancellationToken,
}

impl Supervisor {
    pub fn new(upstream: Upstream, settings: EngineSettings, parent: CancellationToken) -> Self {
        Self { upstream, settings, running: Default::default(), parent }
    }

    /// Makes sure a syncer for the SyncTarget `key` runs with this kubeconfig. Returns an error
    /// message when the kubeconfig parses but cannot be turned into a client (e.g. bad TLS data).
    pub async fn ensure(&self, key: &ClusterKey, kubeconfig: &str) -> Result<(), String> {
        let hash: String = Sha256::digest(kubeconfig.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
        if self.running.lock().expect("supervisor poisoned").get(key).is_some_and(|r| r.kubeconfig_hash == hash) {
            return Ok(());
        }
        let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| e.to_string())?;
        let config =
            kube::Config::from_custom_kubeconfig(parsed, &Default::default()).await.map_err(|e| e.to_string())?;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        let engine = Engine::new(key.cluster.clone(), &key.name, self.upstream.clone(), client, self.settings.clone());
        let cancel = self.parent.child_token();
        let previous = self
            .running
            .lock()
            .expect("supervisor poisoned")
            .insert(key.clone(), Running { kubeconfig_hash: hash, cancel: cancel.clone() });
        if let Some(old) = previous {
            tracing::info!(target = %key, "kubeconfig changed; restarting the syncer");
            old.cancel.cancel();
        } else {
            tracing::info!(target = %key, target_key = engine.target_key(), "starting syncer");
        }
        tokio::spawn(engine.run(cancel));
        Ok(())
    }

    /// Stops the syncer of `key`, if one runs.
    pub fn stop(&self, key: &ClusterKey) {
        if let Some(r) = self.running.lock().expect("supervisor poisoned").remove(key) {
            tracing::info!(target = %key, "stopping syncer");
            r.cancel.cancel();
        }
    }
}
