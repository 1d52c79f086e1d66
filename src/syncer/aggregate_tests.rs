use serde_json::json;

use super::*;

fn deploy_status(replicas: i64, available: i64, available_cond: &str, observed: Option<i64>) -> Value {
    let mut s = json!({
        "replicas": replicas, "availableReplicas": available, "readyReplicas": available,
        "conditions": [
            {"type": "Available", "status": available_cond, "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    });
    if let Some(o) = observed {
        s["observedGeneration"] = json!(o);
    }
    s
}

#[test]
fn deployments_sum_and_require_availability_everywhere() {
    let per: BTreeMap<String, Value> = [
        ("a".to_string(), deploy_status(2, 2, "True", Some(4))),
        ("b".to_string(), deploy_status(2, 1, "False", Some(4))),
    ]
    .into();
    let got = aggregate("Deployment", &per);
    assert_eq!((got["replicas"].clone(), got["availableReplicas"].clone()), (json!(4), json!(3)));
    assert_eq!(got["observedGeneration"], 4);
    let available = &got["conditions"][0];
    assert_eq!((available["status"].as_str(), available["reason"].as_str()), (Some("False"), Some("NotOnAllTargets")));
    assert!(available["message"].as_str().unwrap().contains('b'));
    assert_eq!(got["conditions"][1]["status"], "True", "Progressing is True everywhere");

    let all_up: BTreeMap<String, Value> =
        [("a".to_string(), deploy_status(2, 2, "True", Some(4))), ("b".to_string(), deploy_status(2, 2, "True", None))]
            .into();
    let got = aggregate("Deployment", &all_up);
    assert_eq!(got["conditions"][0]["status"], "True");
    assert!(got.get("observedGeneration").is_none(), "not observed everywhere yet");
}

#[test]
fn forged_huge_counts_saturate() {
    let per: BTreeMap<String, Value> = [
        ("a".to_string(), json!({"replicas": i64::MAX, "availableReplicas": i64::MAX})),
        ("b".to_string(), json!({"replicas": i64::MAX, "availableReplicas": -5})),
    ]
    .into();
    let got = aggregate("Deployment", &per);
    assert_eq!(got["replicas"], i64::MAX);
    assert_eq!(got["availableReplicas"], i64::MAX - 5);
}

#[test]
fn single_targets_pass_through_and_load_balancers_merge() {
    let one: BTreeMap<String, Value> = [("a".to_string(), deploy_status(2, 1, "False", Some(1)))].into();
    assert_eq!(aggregate("Deployment", &one), deploy_status(2, 1, "False", Some(1)));
    let svc: BTreeMap<String, Value> = [
        ("b".to_string(), json!({"loadBalancer": {"ingress": [{"ip": "2.2.2.2"}]}})),
        ("a".to_string(), json!({"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}})),
    ]
    .into();
    assert_eq!(aggregate("Service", &svc)["loadBalancer"]["ingress"], json!([{"ip": "1.1.1.1"}, {"ip": "2.2.2.2"}]));
    assert_eq!(aggregate("Service", &BTreeMap::new()), Value::Null);
}

fn two(a: Value, b: Value) -> BTreeMap<String, Value> {
    [("a".to_string(), a), ("b".to_string(), b)].into()
}

/// Each kind's counts add up; a kind without a rule shows the first target's status.
#[test]
fn counts_add_up_by_kind() {
    // (kind, one target's status, field, sum over two)
    let cases = [
        ("StatefulSet", json!({"replicas": 2, "readyReplicas": 1, "currentRevision": "r1"}), "readyReplicas", json!(2)),
        ("ReplicaSet", json!({"replicas": 3, "fullyLabeledReplicas": 3}), "fullyLabeledReplicas", json!(6)),
        ("DaemonSet", json!({"desiredNumberScheduled": 4, "numberReady": 3}), "desiredNumberScheduled", json!(8)),
        ("DaemonSet", json!({"desiredNumberScheduled": 4, "numberReady": 3}), "numberReady", json!(6)),
        ("Job", json!({"active": 1, "succeeded": 2}), "succeeded", json!(4)),
        ("Widget", json!({"replicas": 3, "phase": "Running"}), "replicas", json!(3)),
        ("Widget", json!({"replicas": 3, "phase": "Running"}), "phase", json!("Running")),
    ];
    for (kind, status, field, want) in cases {
        let got = aggregate(kind, &two(status.clone(), status));
        assert_eq!(got[field], want, "{kind}.{field}");
    }
    // The first target's status for a custom kind, observedGeneration once both observed.
    let got =
        aggregate("Widget", &two(json!({"x": 1, "observedGeneration": 3}), json!({"x": 2, "observedGeneration": 2})));
    assert_eq!((got["x"].clone(), got["observedGeneration"].clone()), (json!(1), json!(2)));
    let got = aggregate("Widget", &two(json!({"x": 1, "observedGeneration": 3}), Value::Null));
    assert!(got.get("observedGeneration").is_none(), "b has not reported: {got}");
}

/// A Job on two clusters: complete only when complete on both, failed when failed on either.
#[test]
fn jobs_complete_everywhere_and_fail_anywhere() {
    let complete = |end: &str| {
        json!({"succeeded": 1, "startTime": "2026-01-01T00:00:05Z", "completionTime": end,
               "conditions": [{"type": "Complete", "status": "True"}]})
    };
    let running = json!({"active": 1, "startTime": "2026-01-01T00:00:01Z"});
    let failed = json!({"failed": 4, "startTime": "2026-01-01T00:00:09Z",
                        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]});

    let got = aggregate("Job", &two(complete("2026-01-01T00:01:00Z"), complete("2026-01-01T00:02:00Z")));
    assert_eq!(got["conditions"][0]["status"], "True");
    assert_eq!((got["succeeded"].clone(), got["completionTime"].clone()), (json!(2), json!("2026-01-01T00:02:00Z")));

    let got = aggregate("Job", &two(complete("2026-01-01T00:01:00Z"), running.clone()));
    assert_eq!(
        (got["conditions"][0]["status"].as_str(), got["conditions"][0]["reason"].as_str()),
        (Some("False"), Some("NotOnAllTargets"))
    );
    assert!(got.get("completionTime").is_none(), "not complete everywhere: {got}");
    assert_eq!(got["startTime"], "2026-01-01T00:00:01Z", "started with its first copy");
    assert_eq!(got["active"], 1);

    let got = aggregate("Job", &two(running, failed));
    let failed = got["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").unwrap();
    assert_eq!((failed["status"].as_str(), failed["reason"].as_str()), (Some("True"), Some("OnSomeTargets")));
    assert!(failed["message"].as_str().unwrap().ends_with("targets b"), "{failed}");
}

/// Load balancers: every cluster's ingress points, without repeats, in target-key order.
#[test]
fn load_balancer_ingress_from_every_cluster() {
    let lb =
        |ips: &[&str]| json!({"loadBalancer": {"ingress": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()}});
    let got = aggregate("Service", &two(lb(&["10.0.0.1", "10.0.0.2"]), lb(&["10.0.0.2", "10.1.0.1"])));
    let ips: Vec<&str> =
        got["loadBalancer"]["ingress"].as_array().unwrap().iter().filter_map(|i| i["ip"].as_str()).collect();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2", "10.1.0.1"]);
    let got = aggregate("Service", &two(json!({"loadBalancer": {}}), lb(&["10.1.0.1"])));
    assert_eq!(got["loadBalancer"]["ingress"][0]["ip"], "10.1.0.1", "one cluster without an address yet");
}
