//! The reflector fed `watcher::Event`s by hand: no server needed.

use super::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use kube::runtime::watcher::Event;

use crate::kcp::LogicalClusterName;
use crate::kcp::cluster::CLUSTER_ANNOTATION;

fn cm(cluster: &str, name: &str, data: &str) -> ConfigMap {
    let mut annotations = std::collections::BTreeMap::from([(CLUSTER_ANNOTATION.to_string(), cluster.to_string())]);
    annotations.insert("kubectl.kubernetes.io/last-applied-configuration".into(), "{big}".into());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            annotations: Some(annotations),
            managed_fields: Some(vec![Default::default()]),
            ..Default::default()
        },
        data: Some([("v".to_string(), data.to_string())].into()),
        ..Default::default()
    }
}

fn key(cluster: &str, name: &str) -> ClusterKey {
    ClusterKey::new(LogicalClusterName::new(cluster).unwrap(), Some("ns".into()), name)
}

fn reflector(cache: &ClusterCache<ConfigMap>) -> Reflector<ConfigMap, ClusterCache<ConfigMap>> {
    Reflector::new(cache.clone(), cluster_key, |_, o| o)
}

/// The store as (cluster, name, data), sorted.
fn contents(cache: &ClusterCache<ConfigMap>) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = cache
        .all_keys(|_| true)
        .into_iter()
        .map(|k| {
            let obj = cache.get(&k).unwrap();
            (k.cluster.to_string(), k.name.clone(), obj.data.as_ref().unwrap()["v"].clone())
        })
        .collect();
    out.sort();
    out
}

fn owned(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter().map(|(c, n, d)| (c.to_string(), n.to_string(), d.to_string())).collect()
}

#[test]
fn relists_swap_at_the_end_and_report_what_vanished() {
    struct Case {
        name: &'static str,
        /// Events applied before the step checked.
        before: Vec<Event<ConfigMap>>,
        /// The step whose changes are checked.
        step: Vec<Event<ConfigMap>>,
        changes: Vec<Change<ClusterKey>>,
        /// The store after `step`.
        after: Vec<(&'static str, &'static str, &'static str)>,
    }
    let initial =
        || vec![Event::Init, Event::InitApply(cm("a", "x", "1")), Event::InitApply(cm("a", "y", "1")), Event::InitDone];
    let cases = vec![
        Case {
            name: "first list: nothing visible before InitDone",
            before: vec![],
            step: vec![Event::Init, Event::InitApply(cm("a", "x", "1"))],
            changes: vec![],
            after: vec![],
        },
        Case {
            name: "first list done: everything applied",
            before: vec![],
            step: initial(),
            changes: vec![Change::Applied(key("a", "x")), Change::Applied(key("a", "y"))],
            after: vec![("a", "x", "1"), ("a", "y", "1")],
        },
        Case {
            name: "relist in progress: the old state serves",
            before: initial(),
            step: vec![Event::Init, Event::InitApply(cm("a", "x", "2"))],
            changes: vec![],
            after: vec![("a", "x", "1"), ("a", "y", "1")],
        },
        Case {
            name: "relist done: swapped, the missed delete reported as vanished",
            before: initial(),
            step: vec![Event::Init, Event::InitApply(cm("a", "x", "2")), Event::InitDone],
            changes: vec![Change::Applied(key("a", "x")), Change::Vanished(key("a", "y"))],
            after: vec![("a", "x", "2")],
        },
        Case {
            name: "same name in two logical clusters: two entries",
            before: vec![],
            step: vec![
                Event::Init,
                Event::InitApply(cm("a", "x", "1")),
                Event::InitApply(cm("b", "x", "2")),
                Event::InitDone,
            ],
            changes: vec![Change::Applied(key("a", "x")), Change::Applied(key("b", "x"))],
            after: vec![("a", "x", "1"), ("b", "x", "2")],
        },
        Case {
            name: "apply and delete in place",
            before: initial(),
            step: vec![Event::Apply(cm("b", "x", "3")), Event::Delete(cm("a", "x", "1"))],
            changes: vec![Change::Applied(key("b", "x")), Change::Deleted(key("a", "x"))],
            after: vec![("a", "y", "1"), ("b", "x", "3")],
        },
        Case {
            name: "objects without a logical cluster are skipped",
            before: vec![],
            step: vec![Event::Apply(ConfigMap {
                metadata: ObjectMeta { name: Some("z".into()), ..Default::default() },
                ..Default::default()
            })],
            changes: vec![],
            after: vec![],
        },
    ];
    for case in cases {
        let cache = ClusterCache::default();
        let mut r = reflector(&cache);
        case.before.into_iter().for_each(|e| {
            r.apply(e);
        });
        let changes: Vec<_> = case.step.into_iter().flat_map(|e| r.apply(e)).collect();
        assert_eq!(changes, case.changes, "{}", case.name);
        assert_eq!(contents(&cache), owned(&case.after), "{}", case.name);
    }
}

#[test]
fn synced_flips_once_at_the_first_list_and_stays() {
    let cache = ClusterCache::default();
    let r = reflector(&cache);
    let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = lists.clone();
    let mut r = r.on_listed(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let synced = r.synced();
    let steps: Vec<(Event<ConfigMap>, bool)> = vec![
        (Event::Init, false),
        (Event::InitApply(cm("a", "x", "1")), false),
        (Event::InitDone, true),
        (Event::Apply(cm("a", "x", "2")), true),
        // A relist after the watch broke: the old state still serves, so still synced.
        (Event::Init, true),
        (Event::InitApply(cm("a", "x", "3")), true),
        (Event::InitDone, true),
    ];
    let mut rx = synced.0.subscribe();
    let mut flips = 0;
    for (i, (event, want)) in steps.into_iter().enumerate() {
        r.apply(event);
        assert_eq!(synced.is_synced(), want, "step {i}");
        if rx.has_changed().unwrap() {
            rx.mark_unchanged();
            flips += 1;
        }
    }
    assert_eq!(flips, 1, "the signal is sent once");
    assert_eq!(lists.load(std::sync::atomic::Ordering::SeqCst), 2, "on_listed runs after every relist");
}

#[tokio::test]
async fn wait_synced_returns_after_the_first_list() {
    let cache = ClusterCache::default();
    let mut r = reflector(&cache);
    let synced = r.synced();
    let waiter = tokio::spawn({
        let synced = synced.clone();
        async move { synced.wait_synced().await }
    });
    r.apply(Event::Init);
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    r.apply(Event::InitDone);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
}

#[test]
fn managed_fields_and_last_applied_are_stripped_before_storing() {
    let streams = [
        vec![Event::Apply(cm("a", "x", "1"))],
        vec![Event::Init, Event::InitApply(cm("a", "x", "1")), Event::InitDone],
    ];
    for events in streams {
        let cache = ClusterCache::default();
        let mut r = reflector(&cache);
        events.into_iter().for_each(|e| {
            r.apply(e);
        });
        let stored = cache.get(&key("a", "x")).unwrap();
        assert_eq!(stored.metadata.managed_fields, None);
        let annotations = stored.metadata.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(annotations.contains_key(CLUSTER_ANNOTATION), "other annotations stay");
    }
}

#[test]
fn the_transform_decides_what_is_kept() {
    let cache: ClusterCache<usize> = ClusterCache::default();
    let mut r: Reflector<ConfigMap, _> =
        Reflector::new(cache.clone(), cluster_key, |_, o: ConfigMap| o.data.map_or(0, |d| d["v"].len()));
    r.apply(Event::Apply(cm("a", "x", "four")));
    assert_eq!(*cache.get(&key("a", "x")).unwrap(), 4);
}

#[test]
fn keys_are_deduplicated_in_order() {
    let changes = vec![Change::Applied(key("a", "x")), Change::Vanished(key("a", "y")), Change::Deleted(key("a", "x"))];
    assert_eq!(keys(&changes), vec![key("a", "x"), key("a", "y")]);
    assert!(changes[1].gone() && !changes[0].gone());
}
