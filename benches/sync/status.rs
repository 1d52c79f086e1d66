//! Status up: a Deployment available in its cluster → the same status in kcp, beside the floor
//! of the same status write made by a bare client, to the workspace and through the export's
//! virtual workspace (the only path the syncer has).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::env;
use crate::setup::Bench;

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

impl Bench {
    /// Downstream Deployment available → upstream status shows it, per Deployment, both moments
    /// taken from watch events. The floor is the same upstream status write by a bare client,
    /// timed the same way: until kcp's watch delivers it.
    pub async fn status_latency(&self, prefix: &str, samples: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (down_seen, up_seen, floor_seen): (Seen, Seen, Seen) = Default::default();
        let available = |d: &Deployment| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1);
        let record = move |api: Api<Deployment>, seen: Seen| {
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
                while let Some(Ok(d)) = events.next().await {
                    if available(&d) {
                        seen.lock().unwrap().entry(d.metadata.name.unwrap_or_default()).or_insert_with(Instant::now);
                    }
                }
            })
        };
        let mut tasks = vec![];
        for c in &self.downstream {
            tasks.push(record(Api::all(c.clone()), down_seen.clone()));
        }
        for ws in &self.workspaces {
            tasks.push(record(Api::namespaced(self.clients.path(&ws.parse().unwrap()), "load"), up_seen.clone()));
            tasks.push(record(Api::namespaced(self.clients.path(&ws.parse().unwrap()), "floor"), floor_seen.clone()));
        }
        let (mut lat, mut floor, mut floor_vw) = (vec![], vec![], vec![]);
        for n in 0..samples {
            let i = n % self.workspaces.len();
            let name = format!("{prefix}-{n}");
            let up: Api<Deployment> = Api::namespaced(self.clients.path(&self.workspaces[i].parse().unwrap()), "load");
            let d: Deployment = serde_json::from_value(json!({
                "metadata": {"name": name}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
            .unwrap();
            up.create(&PostParams::default(), &d).await.unwrap();
            let both = || {
                let (d, u) =
                    (down_seen.lock().unwrap().get(&name).copied(), up_seen.lock().unwrap().get(&name).copied());
                d.zip(u)
            };
            let (down_at, up_at) =
                env::eventually("available on both sides", Duration::from_secs(60), || async { Ok(both()) })
                    .await
                    .unwrap();
            lat.push(up_at.saturating_duration_since(down_at).as_secs_f64() * 1000.0);
            // The floor: the status the syncer wrote, written by a bare client onto a copy of the
            // Deployment in the unassigned namespace `floor`.
            let floor_api: Api<Deployment> =
                Api::namespaced(self.clients.path(&self.workspaces[i].parse().unwrap()), "floor");
            let status = json!({ "status": up.get_status(&name).await.unwrap().status });
            floor.push(
                floor_status_write(&floor_api, &floor_api, &d, &format!("floor-{name}"), &status, &floor_seen).await,
            );
            // The same write through the export's virtual workspace, as the syncer makes it.
            let vw_api: Api<Deployment> = Api::namespaced(self.virtual_workspace.cluster(&self.logical[i]), "floor");
            let vw_name = format!("floor-vw-{name}");
            floor_vw.push(floor_status_write(&floor_api, &vw_api, &d, &vw_name, &status, &floor_seen).await);
        }
        tasks.iter().for_each(|t| t.abort());
        (lat, floor, floor_vw)
    }
}

/// Creates a copy of `template` named `name` through `create`, then times writing `status` to it
/// through `write` until the floor watch (`seen`) delivers it; milliseconds.
async fn floor_status_write(
    create: &Api<Deployment>,
    write: &Api<Deployment>,
    template: &Deployment,
    name: &str,
    status: &serde_json::Value,
    seen: &Seen,
) -> f64 {
    let mut copy = template.clone();
    copy.metadata.name = Some(name.to_string());
    create.create(&PostParams::default(), &copy).await.unwrap();
    let t = Instant::now();
    write.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    let at = env::eventually("the floor's status in kcp", Duration::from_secs(60), || async {
        Ok(seen.lock().unwrap().get(name).copied())
    })
    .await
    .unwrap();
    at.saturating_duration_since(t).as_secs_f64() * 1000.0
}
