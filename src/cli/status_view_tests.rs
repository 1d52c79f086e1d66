use super::*;
use serde_json::json;

fn now() -> jiff::Timestamp {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

fn target(status: serde_json::Value) -> SyncTarget {
    serde_json::from_value(json!({
        "apiVersion": "sync.kcp.io/v1alpha1", "kind": "SyncTarget",
        "metadata": {"name": "east"}, "spec": {}, "status": status,
    }))
    .unwrap()
}

fn cond(type_: &str, status: &str, reason: &str) -> serde_json::Value {
    json!({"type": type_, "status": status, "reason": reason, "message": "", "lastTransitionTime": "2026-11-22T09:00:00Z"})
}

#[test]
fn target_rows() {
    // (status, ready, reason, heartbeat age, synced)
    let cases = [
        (json!({}), "Unknown", "NotReconciled", None, vec![]),
        (
            json!({"conditions": [cond("Ready", "False", "WaitingForSyncer")]}),
            "False",
            "WaitingForSyncer",
            None,
            vec![],
        ),
        (
            json!({
                "conditions": [cond("HeartbeatHealthy", "True", "HeartbeatFresh"), cond("Ready", "True", "Ready")],
                "lastSyncTime": "2026-11-22T09:59:18Z",
                "syncedResources": [
                    {"group": "apps", "kind": "Deployment", "state": "Syncing", "syncedObjects": 3},
                    {"group": "example.dev", "kind": "Widget", "state": "MissingOnCluster", "syncedObjects": 0},
                ],
            }),
            "True",
            "Ready",
            Some(42),
            vec![("Deployment", "Syncing", 3), ("Widget", "MissingOnCluster", 0)],
        ),
    ];
    for (status, ready, reason, age, synced) in cases {
        let row = target_row(now(), &target(status.clone()));
        let got: Vec<(&str, &str, i64)> =
            row.synced.iter().map(|s| (s.kind.as_str(), s.state.as_str(), s.synced_objects)).collect();
        assert_eq!(
            (row.ready.as_str(), row.reason.as_str(), row.heartbeat_age_seconds, got),
            (ready, reason, age, synced),
            "{status}"
        );
    }
}

#[test]
fn placement_rows_name_foreign_targets_with_their_workspace() {
    let p: Placement = serde_json::from_value(json!({
        "apiVersion": "placement.kcp.io/v1alpha1", "kind": "Placement", "metadata": {"name": "web"},
        "spec": {"namespaceSelector": {}, "locationSelector": {}},
        "status": {
            "phase": "Bound", "placedNamespaces": 2,
            "selectedTargets": [{"workspace": "root:team", "name": "east"}, {"workspace": "root:infra", "name": "west"}],
            "conditions": [cond("Ready", "True", "Ready"), cond("Scheduled", "True", "Scheduled")],
        },
    }))
    .unwrap();
    let row = placement_row("root:team", &p);
    assert_eq!(row.targets, ["east", "root:infra:west"]);
    assert_eq!(
        (row.phase.as_str(), row.ready.as_str(), row.reason.as_str(), row.namespaces),
        ("Bound", "True", "Scheduled", 2)
    );
    let pending: Placement = serde_json::from_value(json!({
        "metadata": {"name": "p"}, "spec": {"namespaceSelector": {}, "locationSelector": {}},
    }))
    .unwrap();
    let row = placement_row("root:team", &pending);
    assert_eq!((row.phase.as_str(), row.ready.as_str(), row.namespaces), ("Pending", "Unknown", 0));
}

#[test]
fn only_problem_events_become_rows() {
    let event = |reason: &str, series: serde_json::Value| -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "e", "namespace": "demo"},
            "eventTime": "2026-11-22T09:59:00.000000Z",
            "reason": reason, "note": "east rejected it (422): bad\nsecond line",
            "regarding": {"kind": "Deployment", "name": "web", "namespace": "demo"},
            "series": series,
        }))
        .unwrap()
    };
    // (reason, series, row expected, count, last seen)
    let cases = [
        ("SyncRejected", serde_json::Value::Null, true, 1, Some(60)),
        ("SyncFailed", json!({"count": 4, "lastObservedTime": "2026-11-22T09:59:50.000000Z"}), true, 4, Some(10)),
        ("TakeOverRefused", serde_json::Value::Null, true, 1, Some(60)),
        ("DownstreamNamespaceConflict", serde_json::Value::Null, true, 1, Some(60)),
        ("TargetsChanged", serde_json::Value::Null, false, 0, None),
        ("Scheduled", serde_json::Value::Null, false, 0, None),
    ];
    for (reason, series, expected, count, seen) in cases {
        let row = problem_row(now(), &event(reason, series));
        assert_eq!(row.is_some(), expected, "{reason}");
        if let Some(row) = row {
            assert_eq!((row.object.as_str(), row.count, row.last_seen_seconds), ("Deployment/web", count, seen));
        }
    }
}

#[test]
fn ages() {
    let cases = [(0, "0s"), (59, "59s"), (61, "1m1s"), (3600, "1h0m"), (3725, "1h2m"), (90000, "1d1h")];
    for (secs, want) in cases {
        assert_eq!(human_age(secs), want);
    }
}

fn sample() -> WorkspaceStatus {
    WorkspaceStatus {
        workspace: "root:team".into(),
        placements: vec![],
        sync_targets: vec![TargetRow {
            name: "east".into(),
            ready: "True".into(),
            reason: "Ready".into(),
            unschedulable: true,
            heartbeat_age_seconds: Some(5),
            synced: vec![
                SyncedRow { kind: "Deployment".into(), state: "Syncing".into(), synced_objects: 3 },
                SyncedRow { kind: "Widget".into(), state: "MissingOnCluster".into(), synced_objects: 0 },
            ],
        }],
        problems: vec![ProblemRow {
            namespace: "demo".into(),
            object: "Deployment/web".into(),
            reason: "SyncRejected".into(),
            count: 2,
            last_seen_seconds: None,
            message: "first\nsecond".into(),
        }],
    }
}

#[test]
fn table_rendering() {
    let text = render_table(&[sample()]);
    let want = "\
WORKSPACE root:team

Placements:
  none

SyncTargets:
NAME  READY          REASON  HEARTBEAT  SYNCED OBJECTS
east  True,Cordoned  Ready   5s         Deployment=3 Widget(MissingOnCluster)

Objects in error:
NAMESPACE  OBJECT          REASON        COUNT  LAST SEEN  MESSAGE
demo       Deployment/web  SyncRejected  2      -          first
";
    assert_eq!(text, want);
    let two = render_table(&[sample(), WorkspaceStatus { workspace: "root:other".into(), ..Default::default() }]);
    assert!(two.contains("\nWORKSPACE root:other\n\nPlacements:\n  none\n\nSyncTargets:\n  none\n"), "{two}");
}

#[test]
fn json_rendering() {
    let v: serde_json::Value = serde_json::from_str(&render_json(&[sample()])).unwrap();
    assert_eq!(v[0]["workspace"], "root:team");
    assert_eq!(v[0]["syncTargets"][0]["synced"][0]["syncedObjects"], 3);
    assert_eq!(v[0]["syncTargets"][0]["heartbeatAgeSeconds"], 5);
    assert_eq!(v[0]["problems"][0]["lastSeenSeconds"], serde_json::Value::Null);
}
