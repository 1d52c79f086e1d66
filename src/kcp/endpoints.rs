//! Discovery of the APIExport's virtual-workspace URLs from its APIExportEndpointSlice.
//!
//! kcp lists one URL per shard in the slice's `status.endpoints`, and a shard's URL appears only
//! once that shard holds at least one APIBinding to the export. The manager therefore watches
//! the slice and starts or stops its per-URL controllers as the set changes.
//!
//! Each shard writes its own URL into the slice's status with server-side apply under its shard
//! name as field manager, so the slice's managedFields say which shard serves which URL; that is
//! what `tmc manager --shards` filters on (no read of `shards.core.kcp.io` needed).

use std::collections::{BTreeMap, BTreeSet};

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

/// The virtual-workspace URLs an endpoint slice lists, each with the name of the shard that
/// serves it when the slice's managedFields tell (`None` when they do not).
pub type EndpointUrls = BTreeMap<String, Option<String>>;

/// The virtual-workspace URLs listed in an endpoint slice, with their shards.
pub fn endpoint_urls(slice: &Value) -> EndpointUrls {
    let shards = url_shards(slice);
    slice["status"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["url"].as_str())
        .filter(|u| !u.is_empty())
        .map(|u| {
            let url = u.trim_end_matches('/').to_string();
            let shard = shards.get(&url).cloned();
            (url, shard)
        })
        .collect()
}

/// URL → shard from the slice's managedFields: the status entry of each field manager that owns
/// `status.endpoints[url=…]`. A URL two managers claim has no shard (nothing to trust).
fn url_shards(slice: &Value) -> BTreeMap<String, String> {
    let mut claims: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in slice["metadata"]["managedFields"].as_array().into_iter().flatten() {
        let Some(manager) = entry["manager"].as_str().filter(|m| !m.is_empty()) else { continue };
        if entry["subresource"].as_str() != Some("status") {
            continue;
        }
        let owned = entry["fieldsV1"]["f:status"]["f:endpoints"].as_object().into_iter().flatten();
        for key in owned.filter_map(|(k, _)| k.strip_prefix("k:")) {
            let Ok(item) = serde_json::from_str::<Value>(key) else { continue };
            if let Some(url) = item["url"].as_str() {
                claims.entry(url.trim_end_matches('/').to_string()).or_default().insert(manager.to_string());
            }
        }
    }
    claims.into_iter().filter(|(_, m)| m.len() == 1).filter_map(|(u, m)| Some((u, m.into_iter().next()?))).collect()
}

/// Which shards' endpoints a manager follows (`--shards`): all, or those named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardFilter(Option<BTreeSet<String>>);

impl ShardFilter {
    /// Follows only `shards`; an empty list follows every shard.
    pub fn only(shards: impl IntoIterator<Item = String>) -> Self {
        let set: BTreeSet<String> = shards.into_iter().filter(|s| !s.is_empty()).collect();
        Self((!set.is_empty()).then_some(set))
    }

    /// The shards named, or `None` for all.
    pub fn shards(&self) -> Option<&BTreeSet<String>> {
        self.0.as_ref()
    }

    /// The URLs of `urls` to follow: all without a filter; with one, those whose shard is
    /// named (a URL whose shard the slice does not tell is not followed: it may be another
    /// manager's).
    pub fn followed(&self, urls: &EndpointUrls) -> BTreeSet<String> {
        urls.iter()
            .filter(|(_, shard)| match (&self.0, shard) {
                (None, _) => true,
                (Some(names), Some(shard)) => names.contains(shard),
                (Some(_), None) => false,
            })
            .map(|(url, _)| url.clone())
            .collect()
    }
}

/// Watches the endpoint slice `name` in `cluster` and publishes its URL set on `tx` whenever it
/// changes, until `cancel` fires; `listed` is set once the slice has been read (so an empty set
/// means "no endpoints", not "not read yet"). Watch errors are retried with backoff and logged.
pub async fn watch_endpoints(
    clients: ClusterClients,
    cluster: LogicalClusterName,
    name: String,
    tx: watch::Sender<EndpointUrls>,
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
            Ok(watcher::Event::InitDone) | Ok(watcher::Event::Delete(_)) => EndpointUrls::new(),
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
            let got: Vec<String> = endpoint_urls(&slice).into_keys().collect();
            assert_eq!(got, want, "{slice}");
        }
    }

    /// A managedFields entry as kcp v0.32.3's endpoint-slice URL controller writes it: an
    /// apply of the status subresource with the shard's name as field manager.
    fn owned(manager: &str, subresource: &str, urls: &[&str]) -> Value {
        let endpoints: serde_json::Map<String, Value> =
            urls.iter().map(|u| (format!("k:{}", json!({"url": u})), json!({".": {}, "f:url": {}}))).collect();
        json!({"manager": manager, "operation": "Apply", "subresource": subresource,
               "fieldsV1": {"f:status": {"f:endpoints": endpoints}}})
    }

    #[test]
    fn shards_from_managed_fields() {
        let (a, b, c) = ("https://127.0.0.1:6444/services/apiexport/x/e", "https://127.0.0.1:6445/s/", "https://c/s");
        let slice = |fields: Vec<Value>| {
            json!({"metadata": {"managedFields": fields},
                   "status": {"endpoints": [{"url": a}, {"url": b}, {"url": c}]}})
        };
        let cases: Vec<(&str, Value, Vec<Option<&str>>)> = vec![
            ("none", slice(vec![]), vec![None, None, None]),
            (
                "one shard each, the trailing slash ignored",
                slice(vec![owned("root", "status", &[a]), owned("shard-1", "status", &[b])]),
                vec![Some("root"), Some("shard-1"), None],
            ),
            ("not the status subresource", slice(vec![owned("root", "", &[a])]), vec![None, None, None]),
            (
                "claimed twice: no shard",
                slice(vec![owned("root", "status", &[a]), owned("shard-1", "status", &[a, c])]),
                vec![None, None, Some("shard-1")],
            ),
            ("no manager name", slice(vec![owned("", "status", &[a])]), vec![None, None, None]),
        ];
        for (name, slice, want) in cases {
            let got: Vec<Option<String>> = endpoint_urls(&slice).into_values().collect();
            let want: Vec<Option<String>> = want.into_iter().map(|s| s.map(str::to_string)).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn shard_filter() {
        let urls: EndpointUrls = [
            ("https://a".to_string(), Some("root".to_string())),
            ("https://b".to_string(), Some("shard-1".to_string())),
            ("https://c".to_string(), None),
        ]
        .into();
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (vec![], vec!["https://a", "https://b", "https://c"]),
            (vec![""], vec!["https://a", "https://b", "https://c"]),
            (vec!["root"], vec!["https://a"]),
            (vec!["shard-1", "root"], vec!["https://a", "https://b"]),
            (vec!["shard-2"], vec![]),
        ];
        for (shards, want) in cases {
            let filter = ShardFilter::only(shards.iter().map(|s| s.to_string()));
            let got: Vec<String> = filter.followed(&urls).into_iter().collect();
            assert_eq!(got, want, "{shards:?}");
        }
    }
}
