//! Discovery of the APIExport's virtual-workspace URLs from its APIExportEndpointSlice.
//!
//! kcp lists one URL per shard in the slice's `status.endpoints`, and a shard's URL appears only
//! once that shard holds at least one APIBinding to the export. The manager therefore watches
//! the slice and starts or stops its per-URL controllers as the set changes.

use std::collections::BTreeSet;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::ClusterClients;
use super::cluster::LogicalClusterName;

pub fn endpoint_slice_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apis.kcp.io", "v1alpha1", "APIExportEndpointSlice"),
        "apiexportendpointslices",
    )
}

/// The virtual-workspace URLs listed in an endpoint slice.
pub fn endpoint_urls(slice: &Value) -> BTreeSet<String> {
    slice["status"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["url"].as_str())
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_string())
        .collect()
}

/// Watches the endpoint slice `name` in `cluster` and publishes its URL set on `tx` whenever it
/// changes, until `cancel` fires; `listed` is set once the slice has been read (so an empty set
/// means "no endpoints", not "not read yet"). Watch errors are retried with backoff and logged.
pub async fn watch_endpoints(
    clients: ClusterClients,
    cluster: LogicalClusterName,
    name: String,
    tx: watch::Sender<BTreeSet<String>>,
    listed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cancel: CancellationToken,
) {
    let api: Api<DynamicObject> = Api::all_with(clients.cluster(&cluster), &endpoint_slice_resource());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = crate::runtime::rewatch::retried(watcher(api, config).boxed());
    let mut seen_in_relist = false;
    loop {
        // Not `runtime::next_or_cancelled`: `kcp` sits below `runtime` and imports nothing of it.
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = events.next() => match e { Some(e) => e, None => return },
        };
        let urls = match event {
            Err(e) => {
                tracing::warn!(slice = %name, workspace = %cluster, error = %e, "watching APIExportEndpointSlice failed; retrying");
                continue;
            }
            Ok(watcher::Event::Init) => {
                seen_in_relist = false;
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                seen_in_relist = true;
                endpoint_urls(&serde_json::to_value(&obj).unwrap_or_default())
            }
            Ok(watcher::Event::InitDone) if seen_in_relist => continue,
            Ok(watcher::Event::InitDone) | Ok(watcher::Event::Delete(_)) => BTreeSet::new(),
            Ok(watcher::Event::Apply(obj)) => endpoint_urls(&serde_json::to_value(&obj).unwrap_or_default()),
        };
        listed.store(true, std::sync::atomic::Ordering::Release);
        tx.send_if_modified(|current| {
            if *current == urls {
                return false;
            }
            tracing::info!(slice = %name, endpoints = ?urls, "APIExport virtual-workspace endpoints changed");
            *current = urls;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_from_slices() {
        let cases = [
            (json!({}), vec![]),
            (json!({"status": {}}), vec![]),
            (json!({"status": {"endpoints": []}}), vec![]),
            (
                json!({"status": {"endpoints": [{"url": "https://a/services/apiexport/x/e/"}, {"url": "https://b/s"}, {"url": ""}]}}),
                vec!["https://a/services/apiexport/x/e", "https://b/s"],
            ),
        ];
        for (slice, want) in cases {
            let got: Vec<String> = endpoint_urls(&slice).into_iter().collect();
            assert_eq!(got, want, "{slice}");
        }
    }
}
