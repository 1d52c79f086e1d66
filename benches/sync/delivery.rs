//! Where an object's time goes before the manager sees it: kcp's watch of the export's virtual
//! workspace (the watch the syncer reads) delivering each kcp-tmc write, seen by a watch of the
//! bench's own on the same URL. Per object, the end-to-end figure splits into "written → delivered"
//! (kcp) and "delivered → in every cluster" (the manager and the cluster's watch); the slowest
//! objects say which of the two the tail is made of.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kcp_tmc::kcp::ClusterClients;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};

use crate::report::{Results, percentile};
use crate::setup::Bench;

/// When something first happened to each object name (the names of one run share a prefix no
/// other run uses).
pub type Moments = Arc<Mutex<HashMap<String, Instant>>>;

/// Records the first moment the virtual workspace's wildcard watch delivers each bench ConfigMap.
pub fn watch(virtual_workspace: &ClusterClients) -> Moments {
    let delivered: Moments = Default::default();
    let api = Api::<DynamicObject>::all_with(virtual_workspace.wildcard(), &ApiResource::erase::<ConfigMap>(&()));
    let seen = delivered.clone();
    tokio::spawn(async move {
        let mut events =
            watcher(api, watcher::Config::default().labels("bench=yes")).default_backoff().applied_objects().boxed();
        while let Some(Ok(obj)) = events.next().await {
            seen.lock().unwrap().entry(obj.metadata.name.unwrap_or_default()).or_insert_with(Instant::now);
        }
    });
    delivered
}

/// One run's objects, each split into its two parts; milliseconds.
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    pub delivery: Vec<f64>,
    pub after: Vec<f64>,
}

impl Split {
    /// Of the slowest 1% of objects (at least one) by their whole time, the share spent before
    /// the virtual workspace delivered them.
    pub fn tail_delivery_share(&self) -> f64 {
        let mut whole: Vec<(f64, f64)> = self.delivery.iter().zip(&self.after).map(|(d, a)| (d + a, *d)).collect();
        whole.sort_by(|a, b| b.0.total_cmp(&a.0));
        let tail = &whole[..(whole.len() / 100).max(1).min(whole.len())];
        let (sum, before) = tail.iter().fold((0.0, 0.0), |(s, b), (w, d)| (s + w, b + d));
        if sum > 0.0 { before / sum } else { f64::NAN }
    }
}

impl Bench {
    /// The split of run `prefix`'s `count` objects, each along `clusters(n)`; objects never
    /// delivered (none expected) are left out.
    pub fn split(&self, prefix: &str, count: usize, clusters: impl Fn(usize) -> Vec<usize>) -> Split {
        let written = self.written.lock().unwrap();
        let delivered = self.delivered.lock().unwrap();
        let mut split = Split::default();
        for n in 0..count {
            let name = format!("{prefix}-{n}");
            let (Some(w), Some(d), Some(a)) =
                (written.get(&name), delivered.get(&name), self.arrived(&name, &clusters(n)))
            else {
                continue;
            };
            split.delivery.push(d.saturating_duration_since(*w).as_secs_f64() * 1000.0);
            split.after.push(a.saturating_duration_since(*d).as_secs_f64() * 1000.0);
        }
        split
    }
}

/// Records the split of run `run` (see `profile::RUNS`).
pub fn record(r: &mut Results, run: &str, split: &Split) {
    if split.delivery.is_empty() {
        return;
    }
    r.add_extra(&format!("delivery_{run}_p50_ms"), percentile(&split.delivery, 0.5));
    r.add_extra(&format!("delivery_{run}_p99_ms"), percentile(&split.delivery, 0.99));
    r.add_extra(&format!("after_delivery_{run}_p50_ms"), percentile(&split.after, 0.5));
    r.add_extra(&format!("after_delivery_{run}_p99_ms"), percentile(&split.after, 0.99));
    r.add_extra(&format!("delivery_{run}_tail_share_pct"), 100.0 * split.tail_delivery_share());
}
