//! The churn: per tenant one loop that creates, updates and deletes ConfigMaps, Secrets and
//! Deployments in its namespace at a bounded steady rate (one write per `interval`), until told
//! to stop. The slots and the dice are seeded per tenant, so a run is repeatable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::world::{NAMESPACE, SOAK_LABEL};

/// The kinds the churn writes and how many names (slots) of each a tenant cycles through.
/// Deployments are few: each is up to two kwok pods on each of the two clusters.
pub const SLOTS: [(Kind, usize); 3] = [(Kind::ConfigMap, 6), (Kind::Secret, 4), (Kind::Deployment, 2)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ConfigMap,
    Secret,
    Deployment,
}

impl Kind {
    pub fn resource(self) -> ApiResource {
        match self {
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::Secret => ApiResource::erase::<Secret>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::ConfigMap => "cm",
            Kind::Secret => "secret",
            Kind::Deployment => "deploy",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create,
    Update,
    Delete,
}

/// What to do with a slot: create what is absent; of what exists, update two in three and
/// delete the third, so that about half the slots exist at any time.
fn decide(exists: bool, roll: u32) -> Op {
    match (exists, roll % 3) {
        (false, _) => Op::Create,
        (true, 0) => Op::Delete,
        (true, _) => Op::Update,
    }
}

/// Counts shared by all loops; the sampler reads them.
#[derive(Default)]
pub struct Stats {
    pub writes: AtomicU64,
    /// Writes that failed for another reason than a stale belief (see `conflicts`).
    pub errors: AtomicU64,
    /// A create of a name still terminating (409) or an update/delete of a name already gone
    /// (404): the loop's belief was stale; expected while finalizers are released.
    pub conflicts: AtomicU64,
}

/// The object's content at revision `rev`: what the comparison hashes on both sides.
fn body(kind: Kind, name: &str, rev: u64) -> Value {
    let labels = json!({ SOAK_LABEL: "yes", "rev": rev.to_string(), "app": name });
    let payload = format!("{rev}-{}", "x".repeat(200));
    match kind {
        Kind::ConfigMap => {
            json!({"metadata": {"name": name, "labels": labels}, "data": {"rev": rev.to_string(), "payload": payload}})
        }
        Kind::Secret => {
            json!({"metadata": {"name": name, "labels": labels}, "stringData": {"rev": rev.to_string(), "token": payload}})
        }
        Kind::Deployment => json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1 + rev % 2,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}},
            },
        }),
    }
}

/// One tenant's loop: a write every `interval` until `stop`.
pub async fn run(client: kube::Client, seed: u64, interval: Duration, stop: CancellationToken, stats: Arc<Stats>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let slots: Vec<(Kind, String)> =
        SLOTS.iter().flat_map(|&(kind, n)| (0..n).map(move |i| (kind, format!("{}-{i}", kind.prefix())))).collect();
    let mut exists = vec![false; slots.len()];
    let mut rev = 0u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let slot = rng.random_range(0..slots.len());
        let (kind, name) = &slots[slot];
        rev += 1;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &kind.resource());
        let op = decide(exists[slot], rng.random());
        let result = match op {
            Op::Create => {
                let mut obj: DynamicObject = serde_json::from_value(body(*kind, name, rev)).expect("valid object");
                obj.types =
                    Some(kube::api::TypeMeta { api_version: kind.resource().api_version, kind: kind.resource().kind });
                api.create(&PostParams::default(), &obj).await.map(|_| ())
            }
            Op::Update => {
                let patch = Patch::Merge(body(*kind, name, rev));
                api.patch(name, &PatchParams::default(), &patch).await.map(|_| ())
            }
            Op::Delete => api.delete(name, &DeleteParams::default()).await.map(|_| ()),
        };
        stats.writes.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => exists[slot] = op != Op::Delete,
            Err(kube::Error::Api(e)) if e.code == 409 && op == Op::Create => {
                exists[slot] = true;
                stats.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(kube::Error::Api(e)) if e.code == 404 && op != Op::Create => {
                exists[slot] = false;
                stats.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("churn {op:?} {kind:?} {name}: {e}");
            }
        }
    }
}
