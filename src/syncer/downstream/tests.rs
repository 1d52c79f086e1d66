//! The downstream cache alone: no server needed.

use super::*;
use serde_json::json;

use crate::runtime::reflector::Store;

/// A client that is never called: these tests exercise the cache alone.
fn offline_client() -> Client {
    let service = tower::service_fn(|_: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("offline"))
    });
    Client::new(service, "default")
}

fn object(rv: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "c", "namespace": "ns", "resourceVersion": rv },
        "data": { "big": "x".repeat(100) },
    }))
    .unwrap()
}

fn compared(rv: &str) -> Compared {
    Compared { resource_version: Some(rv.into()), desired_hash: "h".into(), status_view: None }
}

impl Downstream {
    fn new_offline() -> Self {
        Downstream::new(offline_client(), "key")
    }
}

fn state(d: &Downstream) -> Option<(&'static str, String)> {
    d.object(0, "ns", "c").map(|c| match &c {
        Cached::Whole(o) => ("whole", o.metadata.resource_version.clone().unwrap_or_default()),
        Cached::Matched(m) => ("matched", m.resource_version.clone().unwrap_or_default()),
    })
}

fn whole(rv: &str) -> Cached {
    Cached::Whole(Arc::new(object(rv)))
}

fn matched(rv: &str) -> Cached {
    Cached::Matched(Arc::new(compared(rv)))
}

#[tokio::test]
async fn objects_are_kept_whole_until_matched_and_newer_versions_win() {
    let d = Downstream::new(offline_client(), "key");
    d.record(0, "ns", "c", whole("5"));
    assert_eq!(state(&d), Some(("whole", "5".into())));
    // A verdict for another version is stale and dropped.
    d.matched(0, "ns", "c", compared("4"));
    assert_eq!(state(&d), Some(("whole", "5".into())));
    d.matched(0, "ns", "c", compared("5"));
    assert_eq!(state(&d), Some(("matched", "5".into())));
    // An older write response never replaces what the watch (or a later write) delivered.
    d.record(0, "ns", "c", whole("3"));
    assert_eq!(state(&d), Some(("matched", "5".into())));
    d.record(0, "ns", "c", whole("7"));
    assert_eq!(state(&d), Some(("whole", "7".into())));
    // A write recorded as its verdict at once.
    d.record(0, "ns", "c", matched("8"));
    assert_eq!(state(&d), Some(("matched", "8".into())));
    assert_eq!(d.counts(), HashMap::from([(0, 1)]));
}

#[tokio::test]
async fn what_a_watch_event_replaces() {
    // (cached, arrived by watch, what the cache then holds)
    let cases: &[(&str, Cached, Cached, (&str, &str))] = &[
        ("a newer version replaces a verdict", matched("5"), whole("6"), ("whole", "6")),
        ("a newer version replaces a whole copy", whole("5"), whole("6"), ("whole", "6")),
        ("the echo of the syncer's own write keeps its verdict", matched("5"), whole("5"), ("matched", "5")),
        ("the same version of an uncompared copy is taken", whole("5"), whole("5"), ("whole", "5")),
        ("an event older than a recorded write is dropped", matched("7"), whole("6"), ("matched", "7")),
        ("an event older than a recorded whole copy is dropped", whole("7"), whole("6"), ("whole", "7")),
    ];
    for (name, cached, arrived, want) in cases {
        let d = Downstream::new_offline();
        d.record(0, "ns", "c", cached.clone());
        let slice = Slice { objects: d.objects.clone(), index: 0, namespace: None };
        slice.upsert(&(0, "ns".into(), "c".into()), arrived.clone());
        assert_eq!(state(&d), Some((want.0, want.1.to_string())), "{name}");
        // A relist decides the same way.
        let d = Downstream::new_offline();
        d.record(0, "ns", "c", cached.clone());
        let slice = Slice { objects: d.objects.clone(), index: 0, namespace: None };
        slice.replace(vec![((0, "ns".into(), "c".into()), arrived.clone())]);
        assert_eq!(state(&d), Some((want.0, want.1.to_string())), "{name} (relist)");
    }
}

#[test]
fn compare_keeps_the_verdict_or_names_the_difference() {
    let desired =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"big": "x".repeat(100)}});
    let (kept, difference) = compare(&object("5"), &desired, "h1", false);
    assert_eq!(difference, None);
    assert_eq!(kept, Compared { resource_version: Some("5".into()), desired_hash: "h1".into(), status_view: None });
    let changed = json!({"metadata": {"name": "c"}, "data": {"big": "y"}});
    let (_, difference) = compare(&object("5"), &changed, "h2", false);
    assert!(difference.is_some_and(|d| d.contains("big")), "names the differing field");
    let (kept, _) = compare(&object("5"), &desired, "h1", true);
    assert!(kept.status_view.is_some(), "status-up's view is kept for resources whose status comes up");
}

#[test]
fn a_relist_replaces_only_its_own_slice_and_keeps_newer_writes() {
    let objects: Arc<RwLock<Objects>> = Default::default();
    let mut cm = object("5");
    let id = |i: usize, ns: &str, n: &str| (i, ns.to_string(), n.to_string());
    {
        let mut map = objects.write().unwrap();
        for key in [id(0, "ns", "c"), id(0, "ns", "gone"), id(0, "other", "x"), id(1, "ns", "c")] {
            map.insert(key, Cached::Whole(Arc::new(cm.clone())));
        }
    }
    // Resource 0 in namespace "ns" relists: "gone" did not come back; "c" came back older
    // than what the syncer recorded meanwhile.
    cm.metadata.resource_version = Some("4".into());
    let slice = Slice { objects: objects.clone(), index: 0, namespace: Some("ns".into()) };
    let vanished = slice.replace(vec![(id(0, "ns", "c"), Cached::Whole(Arc::new(cm)))]);
    assert_eq!(vanished, vec![id(0, "ns", "gone")]);
    let map = objects.read().unwrap();
    let mut keys: Vec<_> = map.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec![id(0, "ns", "c"), id(0, "other", "x"), id(1, "ns", "c")], "other slices untouched");
    assert_eq!(map[&id(0, "ns", "c")].resource_version(), Some("5"), "the newer recorded write stays");
}

#[test]
fn status_view_keeps_what_status_up_reads() {
    let obj = json!({
        "metadata": { "generation": 3, "annotations": { "tmc.kcp.io/spec-hash": "abc", "other": "x" } },
        "spec": { "template": "large" },
        "status": { "replicas": 2 },
    });
    let view = status_view(&obj, "tmc.kcp.io/spec-hash");
    assert_eq!(
        view,
        json!({
            "metadata": { "generation": 3, "annotations": { "tmc.kcp.io/spec-hash": "abc" } },
            "status": { "replicas": 2 },
        })
    );
}
