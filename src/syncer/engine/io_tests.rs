//! The engine's I/O paths in process, against two mock API servers (tower-test): kcp behind a
//! `ClusterClients`, and the physical cluster. No watch runs: the kcp view is filled by hand
//! (`Upstream::fill_for_test`), and one key is synced through `Engine::sync`. Each test asserts
//! the exact sequence of requests (method and path) each server received. Anything unscripted
//! is answered 500, so it shows up both as an error and in the sequence; every test runs under
//! a hard timeout, so a request nobody answers fails the test instead of hanging it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::api::DynamicObject;
use kube::client::Body;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Engine, EngineSettings, Probe, plan};
use crate::apis::names::{AWAITING_EVIDENCE_ANNOTATION, TARGET_LABEL, assignment_label, syncer_finalizer};
use crate::kcp::{ClusterClients, ClusterKey, LogicalClusterName};
use crate::runtime::queue::Backoff;
use crate::server::Metrics;
use crate::syncer::naming::{Locator, TargetRef, target_key};
use crate::syncer::resources::default_resources;
use crate::syncer::upstream::{SyncKey, Upstream};

const WS: &str = "tenantws";
const TARGET: &str = "target";
const NS: &str = "app";
const NAME: &str = "cm";
/// The whole of one test, requests included: far above what an in-process sync takes.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
/// Answers a request given its method, path and query ("" when none).
type Answer = Box<dyn Fn(&str, &str, &str) -> Reply + Send>;

/// What a mock API server answers.
enum Reply {
    Json(u16, Value),
    /// A watch: newline-delimited events.
    Events(Vec<Value>),
    /// Never answered, like a watch with nothing to report.
    Hold,
}

impl From<(u16, Value)> for Reply {
    fn from((status, body): (u16, Value)) -> Self {
        Reply::Json(status, body)
    }
}

/// Requests as "METHOD path" (no query), in the order they arrived.
type Log = Arc<Mutex<Vec<String>>>;

/// Runs a test body under [`TEST_TIMEOUT`].
async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("the test finishes within its timeout");
}

fn not_found() -> Reply {
    Reply::Json(
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    )
}

fn ok(body: Value) -> Reply {
    Reply::Json(200, body)
}

fn reply(status: u16, body: &Value) -> Response<Body> {
    Response::builder().status(status).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()
}

/// Serves `handle`: every request is recorded in the returned log and answered by `answer`.
fn serve(mut handle: Handle, answer: Answer) -> Log {
    let log: Log = Default::default();
    let seen = log.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().to_string(), req.uri().path().to_string());
            seen.lock().unwrap().push(format!("{method} {path}"));
            match answer(&method, &path, req.uri().query().unwrap_or_default()) {
                Reply::Json(status, body) => send.send_response(reply(status, &body)),
                Reply::Events(events) => {
                    let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
                    send.send_response(Response::builder().status(200).body(Body::from(lines.into_bytes())).unwrap())
                }
                Reply::Hold => held.push(send),
            }
        }
    });
    log
}

struct Fixture {
    engine: Engine,
    kcp: Log,
    cluster: Log,
    index: usize,
    key: ClusterKey,
}

fn cluster_name() -> LogicalClusterName {
    LogicalClusterName::new(WS).unwrap()
}

fn key_of_target() -> String {
    target_key(&cluster_name(), TARGET)
}

fn downstream_namespace() -> String {
    let target = TargetRef { cluster: WS.into(), name: TARGET.into() };
    Locator::new(target, &cluster_name(), NS).downstream_namespace()
}

/// The kcp namespace, assigned to the target or not.
fn kcp_namespace(assigned: bool) -> Value {
    kcp_namespace_of(if assigned { &[TARGET][..] } else { &[] })
}

/// The kcp namespace, assigned to the targets named (in the workspace of this one).
fn kcp_namespace_of(targets: &[&str]) -> Value {
    kcp_namespace_moving(targets, &[])
}

/// A kcp namespace assigned to `targets`, a move of which waits on the evidence of `awaiting`.
fn kcp_namespace_moving(targets: &[&str], awaiting: &[&str]) -> Value {
    let key = |t: &&str| target_key(&cluster_name(), t);
    let labels: serde_json::Map<String, Value> =
        targets.iter().map(|t| (assignment_label(&key(t)), json!("Sync"))).collect();
    let awaiting = awaiting.iter().map(key).collect::<Vec<_>>().join(",");
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "resourceVersion": "3",
        "uid": "ns-uid", "labels": labels,
        "annotations": {"kcp.io/cluster": WS, AWAITING_EVIDENCE_ANNOTATION: awaiting}}})
}

/// A cluster that has neither the downstream namespace nor the copy: it creates the namespace
/// and takes the apply.
fn cluster_taking_a_new_copy() -> Answer {
    Box::new(|method, path, _| match method {
        "GET" => not_found(),
        "POST" if path.ends_with("/selfsubjectreviews") => not_found(),
        "POST" if path == "/api/v1/namespaces" => Reply::Json(
            201,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": downstream_namespace(), "uid": "dns-uid"}}),
        ),
        "PATCH" => ok(cluster_configmap(true)),
        _ => unexpected(),
    })
}

/// The kcp ConfigMap, with this target's finalizer or not.
fn kcp_configmap(finalizer: bool) -> Value {
    let finalizers = if finalizer { json!([syncer_finalizer(&key_of_target())]) } else { json!([]) };
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, "namespace": NS,
        "resourceVersion": "7", "uid": "cm-uid", "finalizers": finalizers,
        "annotations": {"kcp.io/cluster": WS}}, "data": {"a": "b"}})
}

/// A ConfigMap in the cluster, labelled for this target or someone else's.
fn cluster_configmap(ours: bool) -> Value {
    let labels = if ours { json!({ TARGET_LABEL: key_of_target() }) } else { json!({"app": "theirs"}) };
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME, "namespace": downstream_namespace(),
        "resourceVersion": "1", "uid": "copy-uid", "labels": labels}, "data": {"a": "b"}})
}

/// An engine syncing ConfigMaps; `listed`: the kcp view has listed the namespace and ConfigMap
/// given (else it has not listed yet, as just after a restart with a long list in flight).
fn fixture(listed: Option<(Value, Value)>, kcp_answer: Answer, cluster_answer: Answer) -> Fixture {
    let (kcp_service, kcp_handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (cluster_service, cluster_handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let kcp = serve(kcp_handle, kcp_answer);
    let cluster = serve(cluster_handle, cluster_answer);
    let clients = ClusterClients::from_client(kube::Client::new(kcp_service, "default"), "https://kcp.test");
    let upstream = Upstream::new(clients, CancellationToken::new());
    let configmaps = default_resources().into_iter().find(|r| r.api.kind == "ConfigMap").unwrap();
    let index = match &listed {
        Some((ns, obj)) => {
            let obj: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
            upstream.fill_for_test(&configmaps, std::slice::from_ref(ns), vec![obj], true)
        }
        None => upstream.fill_for_test(&configmaps, &[], vec![], false),
    };
    let settings = EngineSettings {
        workers: 1,
        heartbeat_interval: Duration::from_secs(10),
        deletion_timeout: Duration::from_secs(600),
        backoff: Backoff::default(),
        cluster_qps: 1000,
        metrics: Metrics::new(),
    };
    let (probe, _) = tokio::sync::watch::channel(Probe::Pending);
    let (_, wanted) = tokio::sync::watch::channel(vec![]);
    let cluster_client = kube::Client::new(cluster_service, "default");
    let engine = Engine::new(cluster_name(), TARGET, upstream, cluster_client, settings, probe, wanted);
    engine.started.lock().unwrap().insert(index);
    engine.active.write().unwrap().insert(index);
    let key = ClusterKey::new(cluster_name(), Some(NS.into()), NAME);
    Fixture { engine, kcp, cluster, index, key }
}

impl Fixture {
    /// One sync, and the finalizer write it started off the worker, if any.
    async fn sync(&self) -> Result<Option<Duration>, super::SyncError> {
        let synced = self.engine.sync(&SyncKey { resource: Some(self.index), key: self.key.clone() }).await;
        self.engine.finalizing.idle().await;
        synced
    }

    fn requests(&self) -> (Vec<String>, Vec<String>) {
        (std::mem::take(&mut *self.kcp.lock().unwrap()), std::mem::take(&mut *self.cluster.lock().unwrap()))
    }
}

fn unexpected() -> Reply {
    Reply::Json(
        500,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "unscripted", "code": 500}),
    )
}

#[tokio::test]
async fn restart_before_the_kcp_view_lists_sends_no_delete() {
    bounded(async {
        // The cluster holds our copy; kcp's list is still in flight.
        let f = fixture(
            None,
            Box::new(|_, _, _| unexpected()),
            Box::new(|method, _, _| if method == "GET" { ok(cluster_configmap(true)) } else { unexpected() }),
        );
        assert!(!f.engine.upstream.synced(f.index));
        assert_eq!(f.sync().await.unwrap(), Some(plan::WAIT_FOR_VIEW), "waits for the kcp view");
        assert_eq!(f.requests(), (vec![], vec![]), "nothing is read, deleted or released");
    })
    .await;
}

#[tokio::test]
async fn unassigned_object_copy_deleted_then_finalizer_released() {
    bounded(async {
        let copy = format!("/api/v1/namespaces/{}/configmaps/{NAME}", downstream_namespace());
        let deleted = Arc::new(Mutex::new(false));
        let gone = deleted.clone();
        let f = fixture(
            Some((kcp_namespace(false), kcp_configmap(true))),
            Box::new(|method, _, _| if method == "PATCH" { ok(kcp_configmap(false)) } else { unexpected() }),
            Box::new(move |method, _, _| {
                // Read before the match: a guard in the scrutinee would live through the arms,
                // and the DELETE arm locks it again.
                let was_deleted = *gone.lock().unwrap();
                match (method, was_deleted) {
                    ("GET", false) => ok(cluster_configmap(true)),
                    ("DELETE", _) => {
                        *gone.lock().unwrap() = true;
                        ok(cluster_configmap(true))
                    }
                    ("GET", true) => not_found(),
                    _ => unexpected(),
                }
            }),
        );
        assert_eq!(f.sync().await.unwrap(), None);
        assert_eq!(f.requests(), (vec![], vec![format!("GET {copy}"), format!("DELETE {copy}")]), "copy deleted first");
        assert!(*deleted.lock().unwrap());
        // The delete event queues the key again: now the finalizer goes.
        assert_eq!(f.sync().await.unwrap(), None);
        let kcp_object = format!("/clusters/{WS}/api/v1/namespaces/{NS}/configmaps/{NAME}");
        assert_eq!(f.requests(), (vec![format!("PATCH {kcp_object}")], vec![format!("GET {copy}")]), "then released");
    })
    .await;
}

#[tokio::test]
async fn foreign_object_is_not_ours_and_nothing_is_written() {
    bounded(async {
        let dns = downstream_namespace();
        // The namespace is proven ours already (as after an earlier sync in this process).
        let f = fixture(
            Some((kcp_namespace(true), kcp_configmap(true))),
            Box::new(|_, _, _| unexpected()),
            Box::new(|method, path, _| match method {
                "GET" if path.ends_with(&format!("/configmaps/{NAME}")) => ok(cluster_configmap(false)),
                "POST" if path.ends_with("/selfsubjectreviews") => not_found(),
                _ => unexpected(),
            }),
        );
        let target = TargetRef { cluster: WS.into(), name: TARGET.into() };
        f.engine.downstream.remember_namespace(&dns, Locator::new(target, &cluster_name(), NS), "dns-uid");
        let err = f.sync().await.unwrap_err();
        assert!(matches!(err, super::SyncError::NotOurs { .. }), "{err}");
        let (kcp, cluster) = f.requests();
        // The refusal is told to the tenant with an Event in kcp; nothing else is written anywhere.
        assert!(kcp.iter().all(|r| r.starts_with("POST ") && r.contains("/events")), "kcp got {kcp:?}");
        assert_eq!(
            cluster,
            [
                "POST /apis/authentication.k8s.io/v1/selfsubjectreviews".to_string(),
                format!("GET /api/v1/namespaces/{dns}/configmaps/{NAME}"),
            ]
        );
    })
    .await;
}

/// A new object: finalizer beside namespace and apply; and the evidence of the apply only when a move of
/// the namespace waits on this target (not for a namespace that merely runs on two).
#[tokio::test]
async fn new_object_finalizer_namespace_then_apply() {
    // (assigned, awaiting evidence, evidence written)
    let cases: [(&'static [&'static str], &'static [&'static str], bool); 4] = [
        (&[TARGET], &[], false),
        (&[TARGET, "elsewhere"], &[], false),
        (&[TARGET, "elsewhere"], &[TARGET], true),
        (&[TARGET, "elsewhere"], &["elsewhere"], false),
    ];
    for (assigned, awaiting, evidence) in cases {
        new_object(assigned, awaiting, evidence).await;
    }
}

async fn new_object(assigned: &'static [&'static str], awaiting: &'static [&'static str], evidence: bool) {
    bounded(async move {
        let dns = downstream_namespace();
        let kcp_ns = format!("/clusters/{WS}/api/v1/namespaces/{NS}");
        let kcp_object = format!("{kcp_ns}/configmaps/{NAME}");
        let f = fixture(
            Some((kcp_namespace_moving(assigned, awaiting), kcp_configmap(false))),
            Box::new(move |method, path, _| match method {
                "PATCH" if path.ends_with("/configmaps/cm") => ok(kcp_configmap(true)),
                "GET" | "PATCH" if path.ends_with(&format!("/namespaces/{NS}")) => {
                    ok(kcp_namespace_moving(assigned, awaiting))
                }
                _ => unexpected(),
            }),
            cluster_taking_a_new_copy(),
        );
        assert_eq!(f.sync().await.unwrap(), None);
        let (kcp, cluster) = f.requests();
        // The finalizer is written beside the copy, not before it (see `sync_object`): the
        // object's and the namespace's requests interleave, each in its own order; the namespace
        // is claimed then recorded with its UID, and last comes the evidence of the apply if a
        // move may wait for it.
        let of = |path: &str| kcp.iter().filter(|r| r.ends_with(path)).cloned().collect::<Vec<_>>();
        let mut object = vec![format!("PATCH {kcp_object}")];
        if evidence {
            object.push(format!("PATCH {kcp_object}"));
            assert_eq!(kcp.last(), Some(&format!("PATCH {kcp_object}")), "evidence after the apply: {kcp:?}");
        }
        assert_eq!(of(&kcp_object), object, "assigned to {assigned:?}, awaiting {awaiting:?}");
        assert_eq!(of(&kcp_ns), [format!("GET {kcp_ns}"), format!("PATCH {kcp_ns}"), format!("PATCH {kcp_ns}")]);
        assert_eq!(kcp.len(), object.len() + 3, "nothing else written to kcp: {kcp:?}");
        assert_eq!(
            cluster,
            [
                format!("GET /api/v1/namespaces/{dns}"),
                "POST /apis/authentication.k8s.io/v1/selfsubjectreviews".to_string(),
                "POST /api/v1/namespaces".to_string(),
                format!("GET /api/v1/namespaces/{dns}/configmaps/{NAME}"),
                format!("PATCH /api/v1/namespaces/{dns}/configmaps/{NAME}"),
            ]
        );
    })
    .await;
}

/// The relist path: the cluster view held our copy; the copy was deleted while the watch was
/// down (the resumed watch answers 410 Gone, the relist lacks it). The reflector reports the key,
/// the engine finds the copy absent and applies it again.
#[tokio::test]
async fn copy_missing_from_a_relist_is_applied_again() {
    bounded(async {
        let dns = downstream_namespace();
        let copy = format!("/api/v1/namespaces/{dns}/configmaps/{NAME}");
        let lists = Arc::new(Mutex::new(0));
        let listed = lists.clone();
        let served = copy.clone();
        let f = fixture(
            Some((kcp_namespace(true), kcp_configmap(true))),
            // A namespace on one target: the apply needs no evidence, kcp sees no write.
            Box::new(|_, _, _| unexpected()),
            Box::new(move |method, path, query| {
                let watch = query.contains("watch=true");
                match (method, path) {
                    ("GET", "/api/v1/configmaps") if !watch => {
                        let mut n = listed.lock().unwrap();
                        *n += 1;
                        // The first list holds the copy; the relist after the 410 does not.
                        let items = if *n == 1 { vec![cluster_configmap(true)] } else { vec![] };
                        ok(json!({"apiVersion": "v1", "kind": "ConfigMapList",
                            "metadata": {"resourceVersion": format!("{}", 10 * *n)}, "items": items}))
                    }
                    ("GET", "/api/v1/configmaps") if *listed.lock().unwrap() == 1 => Reply::Events(vec![json!({
                        "type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "Expired", "message": "too old resource version", "code": 410}})]),
                    ("GET", "/api/v1/configmaps") => Reply::Hold,
                    ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews") => not_found(),
                    ("GET", p) if p == served => not_found(),
                    ("PATCH", p) if p == served => ok(cluster_configmap(true)),
                    _ => unexpected(),
                }
            }),
        );
        let target = TargetRef { cluster: WS.into(), name: TARGET.into() };
        f.engine.downstream.remember_namespace(&dns, Locator::new(target, &cluster_name(), NS), "dns-uid");
        let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel();
        let resource = f.engine.upstream.resource(f.index).unwrap();
        let cancel = CancellationToken::new();
        let watch = f.engine.downstream.clone().watch_resource(
            f.index,
            resource,
            move |key| {
                let _ = queue.send(key);
            },
            cancel.clone(),
        );
        tokio::spawn(watch);
        // Queued once by the first list (the copy seen), once by the relist (the copy vanished).
        let want = SyncKey { resource: Some(f.index), key: f.key.clone() };
        for _ in 0..2 {
            assert_eq!(queued.recv().await, Some(want.clone()));
        }
        assert!(f.engine.downstream.object(f.index, &dns, NAME).is_none(), "the vanished copy left the view");
        assert!(f.engine.downstream.synced(f.index, &dns), "the view stays synced across the relist");
        let (_, cluster) = f.requests();
        assert_eq!(cluster.iter().filter(|r| *r == "GET /api/v1/configmaps").count(), 4, "list, watch, relist, watch");

        assert_eq!(f.sync().await.unwrap(), None);
        let (kcp, cluster) = f.requests();
        let review = "POST /apis/authentication.k8s.io/v1/selfsubjectreviews".to_string();
        assert_eq!(cluster, [review, format!("GET {copy}"), format!("PATCH {copy}")], "absent: checked once, applied");
        assert!(kcp.is_empty(), "no kcp write for a namespace on one target: {kcp:?}");
        cancel.cancel();
    })
    .await;
}

/// Answers kcp's namespace requests as [`new_object`] does, and the object's with `object`.
fn kcp_with_namespace(object: impl Fn(&str) -> Reply + Send + 'static) -> Answer {
    Box::new(move |method, path, _| match method {
        "GET" | "PATCH" if path.ends_with(&format!("/namespaces/{NS}")) => ok(kcp_namespace(true)),
        _ if path.ends_with(&format!("/configmaps/{NAME}")) => object(method),
        _ => unexpected(),
    })
}

/// The copy is written beside the finalizer, so it reaches the cluster even when the
/// finalizer does not land; the deletion's own event brings the key back, and the plan deletes
/// a copy of an object being deleted (`plan` tests).
fn copy_written(cluster: &[String]) {
    let copy = format!("PATCH /api/v1/namespaces/{}/configmaps/{NAME}", downstream_namespace());
    assert_eq!(cluster.last(), Some(&copy), "the copy was applied beside the finalizer: {cluster:?}");
}

/// The kcp view shows a live object, but kcp has started deleting it: the finalizer is refused
/// (422). The object is read again, no finalizer is added, and the sync is not an error.
#[tokio::test]
async fn object_deleted_under_the_finalizer_write_gets_no_finalizer() {
    bounded(async {
        let kcp_object = format!("/clusters/{WS}/api/v1/namespaces/{NS}/configmaps/{NAME}");
        let f = fixture(
            Some((kcp_namespace(true), kcp_configmap(false))),
            kcp_with_namespace(|method| match method {
                "PATCH" => Reply::Json(
                    422,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                        "message": "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"}),
                ),
                "GET" => {
                    let mut deleting = kcp_configmap(false);
                    deleting["metadata"]["deletionTimestamp"] = json!("2026-12-04T00:00:00Z");
                    ok(deleting)
                }
                _ => unexpected(),
            }),
            cluster_taking_a_new_copy(),
        );
        assert_eq!(f.sync().await.unwrap(), None);
        // The refused creation of the list is taken for the other target's list first, so the
        // append is tried before the read finds the deletion.
        let (kcp, cluster) = f.requests();
        let object: Vec<_> = kcp.iter().filter(|r| r.ends_with(&kcp_object)).cloned().collect();
        let (patch, get) = (format!("PATCH {kcp_object}"), format!("GET {kcp_object}"));
        assert_eq!(object, [patch.clone(), patch, get]);
        copy_written(&cluster);
    })
    .await;
}

/// The race the soak found: the first finalizer's compare-and-swap loses to the other target's
/// syncer (409), and the append that follows at once meets the tenant's delete (422). The read
/// then sees the deletion: no finalizer, no error.
#[tokio::test]
async fn lost_finalizer_race_then_deletion_is_not_an_error() {
    bounded(async {
        let kcp_object = format!("/clusters/{WS}/api/v1/namespaces/{NS}/configmaps/{NAME}");
        let patches = Arc::new(Mutex::new(0));
        let f = fixture(
            Some((kcp_namespace(true), kcp_configmap(false))),
            kcp_with_namespace(move |method| match method {
                "PATCH" => {
                    let mut n = patches.lock().unwrap();
                    *n += 1;
                    let (code, reason) = if *n == 1 { (409, "Conflict") } else { (422, "Invalid") };
                    Reply::Json(code, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}))
                }
                "GET" => {
                    let mut object = kcp_configmap(false);
                    object["metadata"]["finalizers"] = json!(["tmc.kcp.io/syncer-other"]);
                    object["metadata"]["deletionTimestamp"] = json!("2026-12-04T00:00:00Z");
                    ok(object)
                }
                _ => unexpected(),
            }),
            cluster_taking_a_new_copy(),
        );
        assert_eq!(f.sync().await.unwrap(), None);
        let (kcp, cluster) = f.requests();
        let object: Vec<_> = kcp.iter().filter(|r| r.ends_with(&kcp_object)).cloned().collect();
        let (patch, get) = (format!("PATCH {kcp_object}"), format!("GET {kcp_object}"));
        assert_eq!(object, [patch.clone(), patch, get]);
        copy_written(&cluster);
    })
    .await;
}

/// Two targets' syncers add the first finalizer at once: the one whose creation of the list
/// fails appends its own at once, without reading the object again (one virtual-workspace round trip fewer on
/// every object of a namespace on two clusters), then applies.
#[tokio::test]
async fn lost_first_finalizer_race_appends_without_a_read() {
    // 422: the test that the list is absent failed (what kcp answers); 409: the virtual
    // workspace gave up under other writers.
    for (code, reason) in [(422, "Invalid"), (409, "Conflict")] {
        lost_first_finalizer_race(code, reason).await;
    }
}

async fn lost_first_finalizer_race(code: u16, reason: &'static str) {
    bounded(async move {
        let kcp_object = format!("/clusters/{WS}/api/v1/namespaces/{NS}/configmaps/{NAME}");
        let patches = Arc::new(Mutex::new(0));
        let f = fixture(
            Some((kcp_namespace(true), kcp_configmap(false))),
            Box::new(move |method, path, _| match method {
                "PATCH" if path.ends_with("/configmaps/cm") => {
                    let mut n = patches.lock().unwrap();
                    *n += 1;
                    if *n == 1 {
                        Reply::Json(code, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}))
                    } else {
                        ok(kcp_configmap(true))
                    }
                }
                "GET" | "PATCH" if path.ends_with(&format!("/namespaces/{NS}")) => ok(kcp_namespace(true)),
                _ => unexpected(),
            }),
            cluster_taking_a_new_copy(),
        );
        assert_eq!(f.sync().await.unwrap(), None);
        let (kcp, cluster) = f.requests();
        let patch = format!("PATCH {kcp_object}");
        assert_eq!(kcp.iter().filter(|r| **r == patch).count(), 2, "kcp got {kcp:?}");
        assert!(!kcp.contains(&format!("GET {kcp_object}")), "the object was read again: {kcp:?}");
        assert!(cluster.iter().any(|r| r.starts_with("PATCH ") && r.ends_with(NAME)), "not applied: {cluster:?}");
    })
    .await;
}

/// The view holds the object's metadata only, in a version older than kcp's (kcp restarted while
/// the finalizer write was in flight: the write landed, its watch event never came). The sync
/// reads it, takes kcp's version into the view and asks to run again at once; the next sync
/// finds the finalizer in place and applies, instead of waiting for an event that never comes.
#[tokio::test]
async fn newer_version_in_kcp_is_taken_into_the_view() {
    bounded(async {
        let kcp_object = format!("/clusters/{WS}/api/v1/namespaces/{NS}/configmaps/{NAME}");
        let mut newer = kcp_configmap(true);
        newer["metadata"]["resourceVersion"] = json!("9");
        let served = newer.clone();
        let f = fixture(
            Some((kcp_namespace(true), kcp_configmap(false))),
            Box::new(move |method, path, _| match method {
                "GET" if path.ends_with(&format!("/configmaps/{NAME}")) => ok(served.clone()),
                _ => unexpected(),
            }),
            Box::new(|method, path, _| match method {
                "GET" => not_found(),
                "POST" if path.ends_with("/selfsubjectreviews") => not_found(),
                "PATCH" => ok(cluster_configmap(true)),
                _ => unexpected(),
            }),
        );
        let dns = downstream_namespace();
        let target = TargetRef { cluster: WS.into(), name: TARGET.into() };
        f.engine.downstream.remember_namespace(&dns, Locator::new(target, &cluster_name(), NS), "dns-uid");
        f.engine.upstream.slim_for_test(f.index, &f.key);
        assert_eq!(f.sync().await.unwrap(), Some(Duration::ZERO), "synced again at once");
        let (kcp, _) = f.requests();
        assert_eq!(kcp, [format!("GET {kcp_object}")], "read, nothing written");
        assert_eq!(f.sync().await.unwrap(), None);
        let (kcp, cluster) = f.requests();
        assert!(kcp.is_empty(), "the finalizer is in place already: {kcp:?}");
        assert_eq!(
            cluster.last().map(String::as_str),
            Some(format!("PATCH /api/v1/namespaces/{dns}/configmaps/{NAME}").as_str())
        );
    })
    .await;
}

/// kcp's virtual workspace answers "404 page not found" (plain text, no Status) while it starts
/// after a restart. That is not "the object is gone": the finalizer write fails and the key is
/// retried with backoff, instead of being dropped as done (the chaos suite lost objects to that
/// after kill -9 of kcp). The copy, written beside it, lands.
#[tokio::test]
async fn a_404_that_is_not_not_found_is_retried() {
    bounded(async {
        let f = fixture(
            Some((kcp_namespace(true), kcp_configmap(false))),
            Box::new(|method, path, _| match method {
                "PATCH" if path.ends_with(&format!("/configmaps/{NAME}")) => {
                    Reply::Json(404, json!("404 page not found"))
                }
                "GET" | "PATCH" if path.ends_with(&format!("/namespaces/{NS}")) => ok(kcp_namespace(true)),
                _ => unexpected(),
            }),
            cluster_taking_a_new_copy(),
        );
        assert_eq!(f.sync().await.unwrap(), None, "the worker is free once the copy is written");
        let key = SyncKey { resource: Some(f.index), key: f.key.clone() };
        assert_eq!(f.engine.queue.failures(&key), 1, "the finalizer's failure re-queues the key with backoff");
        let (kcp, cluster) = f.requests();
        let finalizer = format!("PATCH /clusters/{WS}/api/v1/namespaces/{NS}/configmaps/{NAME}");
        assert_eq!(kcp.iter().filter(|r| **r == finalizer).count(), 1, "{kcp:?}");
        copy_written(&cluster);
    })
    .await;
}

/// Sharded kcp (see `scope`): a key of a workspace on another shard is left alone by a guest
/// whose view does not serve it, and by the host while a guest's view has not listed (then
/// "not in my view" would be taken for "deleted") or once a guest's view serves it. Nothing is
/// read or written in either server meanwhile.
#[tokio::test]
async fn syncers_of_one_target_leave_other_shards_workspaces_alone() {
    use super::scope::{Scope, Views};
    bounded(async {
        let cluster_of_copy = Box::new(
            |method: &str, _: &str, _: &str| {
                if method == "GET" { ok(cluster_configmap(true)) } else { unexpected() }
            },
        );
        let f = fixture(
            Some((kcp_namespace(true), kcp_configmap(true))),
            Box::new(|_, _, _| unexpected()),
            cluster_of_copy,
        );
        let remote = LogicalClusterName::new("remotews").unwrap();
        let key = SyncKey { resource: Some(f.index), key: ClusterKey::new(remote.clone(), Some(NS.into()), NAME) };

        let guest = f.engine.clone().with_scope(Scope::Guest);
        assert_eq!(guest.sync(&key).await.unwrap(), None, "a guest leaves workspaces its view does not list");

        // The host allows the remote workspace, which the other endpoint's view serves.
        let other_view = Upstream::new(f.engine.upstream.clients.clone(), CancellationToken::new());
        let views = Views::default();
        let followed =
            [("https://a".to_string(), f.engine.upstream.clone()), ("https://b".to_string(), other_view.clone())];
        views.set(followed.into_iter().collect(), true);
        let (_allowed, allowed_rx) = tokio::sync::watch::channel([remote.clone()].into_iter().collect());
        let host = f
            .engine
            .clone()
            .with_allowed_clusters(allowed_rx)
            .with_scope(Scope::Host { url: "https://a".into(), views: views.subscribe() });
        assert_eq!(host.sync(&key).await.unwrap(), Some(plan::WAIT_FOR_VIEW), "the other view has not listed");
        let remote_namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NS, "annotations": {"kcp.io/cluster": "remotews"}}});
        let configmaps = default_resources().into_iter().find(|r| r.api.kind == "ConfigMap").unwrap();
        other_view.fill_for_test(&configmaps, &[remote_namespace], vec![], true);
        assert_eq!(host.sync(&key).await.unwrap(), None, "the other shard's guest looks after it");
        assert_eq!(f.requests(), (vec![], vec![]), "nothing read or written for another shard's workspace");
    })
    .await;
}

#[tokio::test]
async fn a_stopping_syncer_leaves_its_replacements_subscription() {
    let f = fixture(None, Box::new(|_, _, _| Reply::Hold), Box::new(|_, _, _| Reply::Hold));
    let (upstream, key) = (&f.engine.upstream, key_of_target());
    let old = upstream.subscribe(&key);
    let mut new = upstream.subscribe(&key);
    // The old syncer stops after its replacement subscribed.
    drop(old);
    upstream.unsubscribe(&key);
    upstream.fill_for_test(&default_resources()[0], &[kcp_namespace(true)], vec![], true);
    assert!(new.try_recv().is_ok(), "the replacement still hears of changes");
    // Its own stop removes it: nothing is sent to a syncer that is gone.
    drop(new);
    upstream.unsubscribe(&key);
    assert!(upstream.subscribe(&key).try_recv().is_ok(), "a new subscriber is sent what is assigned");
}
