use super::*;

const THRESHOLD: Duration = Duration::from_secs(40);

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    ts("2026-11-22T10:00:00Z")
}

fn status_with_heartbeat(at: Option<&str>) -> SyncTargetStatus {
    SyncTargetStatus { last_sync_time: at.map(|a| Time(ts(a))), ..Default::default() }
}

fn get<'a>(d: &'a Desired, type_: &str) -> &'a Condition {
    d.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

fn run(spec: &SyncTargetSpec, status: Option<&SyncTargetStatus>, credentials: Credentials) -> Desired {
    desired(&Observed { spec, status, generation: Some(3), credentials, now: now(), heartbeat_threshold: THRESHOLD })
}

#[test]
fn heartbeat_table() {
    // (lastSyncTime, HeartbeatHealthy, reason, requeue after)
    let cases: &[(Option<&str>, &str, &str, Option<u64>)] = &[
        (None, "False", "HeartbeatMissing", None),
        (Some("2026-11-22T09:59:50Z"), "True", "HeartbeatFresh", Some(30_100)),
        (Some("2026-11-22T09:59:20Z"), "True", "HeartbeatFresh", Some(100)),
        (Some("2026-11-22T09:59:19Z"), "False", "HeartbeatStale", None),
        (Some("2026-11-22T10:00:30Z"), "True", "HeartbeatFresh", Some(40_100)),
        // Beyond the clock-skew allowance: not fresh, looked at again once it is believable.
        (Some("2026-11-22T10:00:31Z"), "False", "HeartbeatInFuture", Some(1_000)),
        (Some("2026-11-22T10:05:30Z"), "False", "HeartbeatInFuture", Some(300_000)),
    ];
    for (last, want_status, want_reason, want_requeue) in cases {
        let status = status_with_heartbeat(*last);
        let d = run(&SyncTargetSpec::default(), Some(&status), Credentials::PullMode);
        let c = get(&d, CONDITION_HEARTBEAT_HEALTHY);
        assert_eq!((c.status.as_str(), c.reason.as_str()), (*want_status, *want_reason), "{last:?}");
        assert_eq!(d.requeue_after.map(|d| d.as_millis() as u64), *want_requeue, "{last:?}");
    }
}

#[test]
fn ready_summarises_with_the_failing_reason() {
    let fresh = status_with_heartbeat(Some("2026-11-22T09:59:50Z"));
    let stale = status_with_heartbeat(Some("2026-11-22T09:50:00Z"));
    let missing_secret =
        Credentials::Problem { reason: "KubeconfigSecretNotFound", message: "secret tmc/kc not found".into() };
    let loaded = Credentials::Loaded { server: "https://127.0.0.1:1".into(), warning: None };
    // (status, credentials, Ready, Ready reason, SyncerReady)
    let cases: Vec<(Option<&SyncTargetStatus>, Credentials, &str, &str, &str)> = vec![
        (None, Credentials::PullMode, "False", "WaitingForSyncer", "False"),
        (Some(&fresh), Credentials::PullMode, "True", "Ready", "True"),
        (Some(&stale), Credentials::PullMode, "False", "HeartbeatStale", "True"),
        (Some(&fresh), missing_secret.clone(), "False", "KubeconfigSecretNotFound", "False"),
        (None, missing_secret, "False", "KubeconfigSecretNotFound", "False"),
        (None, loaded.clone(), "False", "HeartbeatMissing", "True"),
        (Some(&fresh), loaded, "True", "Ready", "True"),
    ];
    for (status, creds, ready, reason, syncer) in cases {
        let d = run(&SyncTargetSpec::default(), status, creds.clone());
        let r = get(&d, CONDITION_READY);
        assert_eq!((r.status.as_str(), r.reason.as_str()), (ready, reason), "{creds:?} {status:?}");
        assert_eq!(get(&d, CONDITION_SYNCER_READY).status, syncer, "{creds:?}");
        assert!(d.conditions.iter().all(|c| c.observed_generation == Some(3)));
        assert_eq!(d.observed_generation, Some(3));
    }
}

#[test]
#[allow(clippy::type_complexity)]
fn schedulable_table() {
    // (unschedulable, evictAfter, Schedulable, reason, requeue after seconds)
    let cases: &[(bool, Option<&str>, &str, &str, Option<u64>)] = &[
        (false, None, "True", "Schedulable", None),
        (true, None, "False", "Unschedulable", None),
        (false, Some("2026-11-22T09:00:00Z"), "False", "Evicting", None),
        (true, Some("2026-11-22T09:00:00Z"), "False", "Evicting", None),
        (false, Some("2026-11-22T10:05:00Z"), "True", "EvictionScheduled", Some(300)),
        (true, Some("2026-11-22T10:05:00Z"), "False", "Unschedulable", Some(300)),
    ];
    for (unschedulable, evict, want, reason, requeue) in cases {
        let spec = SyncTargetSpec {
            unschedulable: *unschedulable,
            evict_after: evict.map(|e| Time(ts(e))),
            ..Default::default()
        };
        let d = run(&spec, None, Credentials::PullMode);
        let c = get(&d, CONDITION_SCHEDULABLE);
        assert_eq!((c.status.as_str(), c.reason.as_str()), (*want, *reason), "{unschedulable} {evict:?}");
        assert_eq!(d.requeue_after.map(|d| d.as_secs()), *requeue, "{unschedulable} {evict:?}");
    }
}

#[test]
fn unchanged_world_means_no_write_and_transition_times_are_kept() {
    let fresh = status_with_heartbeat(Some("2026-11-22T09:59:50Z"));
    let first = run(&SyncTargetSpec::default(), Some(&fresh), Credentials::PullMode);
    let stored = SyncTargetStatus {
        conditions: first.conditions.clone(),
        observed_generation: first.observed_generation,
        ..fresh.clone()
    };
    assert!(first.differs_from(Some(&fresh)));
    // Ten seconds later nothing but the clock moved: same status, no write.
    let later = desired(&Observed {
        spec: &SyncTargetSpec::default(),
        status: Some(&stored),
        generation: Some(3),
        credentials: Credentials::PullMode,
        now: ts("2026-11-22T10:00:10Z"),
        heartbeat_threshold: THRESHOLD,
    });
    assert!(!later.differs_from(Some(&stored)));
    assert_eq!(later.conditions, first.conditions, "transition times carried over");
    // After the threshold the heartbeat flips; its transition time moves, Schedulable's does not.
    let expired = desired(&Observed {
        now: ts("2026-11-22T10:01:00Z"),
        ..Observed {
            spec: &SyncTargetSpec::default(),
            status: Some(&stored),
            generation: Some(3),
            credentials: Credentials::PullMode,
            now: now(),
            heartbeat_threshold: THRESHOLD,
        }
    });
    assert!(expired.differs_from(Some(&stored)));
    let hb = get(&expired, CONDITION_HEARTBEAT_HEALTHY);
    assert_eq!(hb.last_transition_time, Time(ts("2026-11-22T10:01:00Z")));
    assert_eq!(get(&expired, CONDITION_SCHEDULABLE).last_transition_time, Time(now()));
}

#[test]
fn generation_change_is_a_difference() {
    let d = run(&SyncTargetSpec::default(), None, Credentials::PullMode);
    let stored =
        SyncTargetStatus { conditions: d.conditions.clone(), observed_generation: Some(2), ..Default::default() };
    assert!(d.differs_from(Some(&stored)));
}

#[test]
fn malformed_objects_get_invalid_spec() {
    let d = malformed(&[], Some(1), "unknown field", now());
    let r = get(&d, CONDITION_READY);
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "InvalidSpec"));
    assert!(r.message.contains("unknown field"));
}

#[test]
fn condition_order_does_not_matter() {
    let d = run(&SyncTargetSpec::default(), None, Credentials::PullMode);
    let mut reversed = d.conditions.clone();
    reversed.reverse();
    assert!(same_conditions(&d.conditions, &reversed));
}

#[test]
fn apis_available_from_the_syncers_report() {
    let entry =
        |kind: &str, group: &str, state, message: Option<&str>| crate::apis::sync::v1alpha1::SyncedResourceStatus {
            group: group.into(),
            kind: kind.into(),
            state,
            message: message.map(str::to_string),
            ..Default::default()
        };
    use SyncedResourceState::*;
    // (reported, status, reason, message)
    let cases = vec![
        (vec![], "False", "NotReported", "the syncer has not reported its APIs yet (status.syncedResources)"),
        (
            vec![entry("Deployment", "apps", Syncing, None), entry("ConfigMap", "", Syncing, None)],
            "True",
            "AllAvailable",
            "syncing Deployment.apps, ConfigMap",
        ),
        (
            vec![entry("Deployment", "apps", Syncing, None), entry("Widget", "example.dev", MissingOnCluster, None)],
            "False",
            "APIMissingOnCluster",
            "not synced: Widget.example.dev: MissingOnCluster",
        ),
        (
            vec![entry("Gadget", "example.dev", NotServedByKcp, Some("add it to the APIExport"))],
            "False",
            "APIUnavailable",
            "not synced: Gadget.example.dev: NotServedByKcp (add it to the APIExport)",
        ),
    ];
    for (reported, want_status, want_reason, want_message) in cases {
        let status =
            SyncTargetStatus { synced_resources: reported, ..status_with_heartbeat(Some("2026-11-22T09:59:50Z")) };
        let d = run(&SyncTargetSpec::default(), Some(&status), Credentials::PullMode);
        let c = get(&d, CONDITION_APIS_AVAILABLE);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            (want_status, want_reason, want_message)
        );
        // A missing API never takes the whole target out of service.
        assert_eq!(get(&d, CONDITION_READY).status, "True");
    }
}

#[test]
fn an_allowed_insecure_kubeconfig_is_warned_in_syncer_ready() {
    let warning = "WARNING: insecure-skip-tls-verify is set (allowed by --allow-insecure-cluster-tls)";
    let loaded = Credentials::Loaded { server: "https://10.0.0.1".into(), warning: Some(warning.into()) };
    let d = run(&SyncTargetSpec::default(), None, loaded);
    let syncer = get(&d, CONDITION_SYNCER_READY);
    assert_eq!((syncer.status.as_str(), syncer.reason.as_str()), ("True", "KubeconfigLoaded"));
    assert!(syncer.message.ends_with(warning), "{}", syncer.message);
}

/// A tenant can write any time into its SyncTarget's status and spec. Year 9999 (the end of
/// jiff's range) must neither panic nor count as fresh, and transition times from the future
/// are replaced by now and rewritten.
#[test]
fn times_from_the_future_are_refused_or_replaced() {
    // jiff's last representable second (Go and kcp accept up to 9999-12-31).
    let end = "9999-12-30T21:59:59Z";
    let ahead = |type_: &str, status: &str| Condition {
        type_: type_.into(),
        status: status.into(),
        reason: "Forged".into(),
        message: String::new(),
        observed_generation: Some(3),
        last_transition_time: Time(ts(end)),
    };
    let forged = SyncTargetStatus {
        last_sync_time: Some(Time(ts(end))),
        conditions: vec![
            ahead(CONDITION_READY, "False"),
            ahead(CONDITION_HEARTBEAT_HEALTHY, "False"),
            ahead(CONDITION_SYNCER_READY, "True"),
            ahead(CONDITION_SCHEDULABLE, "True"),
        ],
        ..Default::default()
    };
    let spec = SyncTargetSpec { evict_after: Some(Time(ts(end))), ..Default::default() };
    let d = run(&spec, Some(&forged), Credentials::PullMode);
    let hb = get(&d, CONDITION_HEARTBEAT_HEALTHY);
    assert_eq!((hb.status.as_str(), hb.reason.as_str()), ("False", "HeartbeatInFuture"));
    assert!(hb.message.contains(end) && !hb.message.contains("Forged"), "{}", hb.message);
    let ready = get(&d, CONDITION_READY);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "HeartbeatInFuture"));
    assert_eq!(get(&d, CONDITION_SCHEDULABLE).reason, "EvictionScheduled");
    for c in &d.conditions {
        assert_eq!(c.last_transition_time, Time(now()), "{} kept a time from the future", c.type_);
    }
    // The same statuses with corrected times: that is a difference to write.
    let rewritten = SyncTargetStatus { conditions: d.conditions.clone(), observed_generation: Some(3), ..forged };
    assert!(!d.differs_from(Some(&rewritten)), "once corrected, nothing to write");
    let mut with_future = rewritten.clone();
    with_future.conditions[0].last_transition_time = Time(ts(end));
    assert!(d.differs_from(Some(&with_future)), "a stored time from the future is corrected");
    // Within the skew allowance a time is kept as written.
    let soon = Time(now().checked_add(MAX_CLOCK_SKEW).unwrap());
    assert_eq!(transition_time(Some(&soon), now()), soon);
    assert_eq!(transition_time(Some(&Time(ts(end))), now()), Time(now()));
}

/// A status no timestamp type can hold is still read for the conditions the manager wrote, so
/// the next reconcile finds nothing to change (no write that triggers the next reconcile).
#[test]
fn an_unreadable_status_keeps_the_managers_conditions() {
    let written = malformed(&[], Some(3), "lastSyncTime out of range", now());
    let raw = serde_json::json!({
        "lastSyncTime": "9999-12-31T23:59:59Z",
        "conditions": written.conditions,
        "observedGeneration": 3,
    });
    let stored = stored(&raw).expect("something stored");
    assert!(stored.last_sync_time.is_none());
    let again = malformed(&stored.conditions, Some(3), "lastSyncTime out of range", ts("2026-11-22T10:05:00Z"));
    assert!(!again.differs_from(Some(&stored)), "an unchanged unreadable status is not rewritten");
    assert_eq!(stored.observed_generation, Some(3));
    assert!(super::stored(&serde_json::Value::Null).is_none());
    assert!(super::stored(&serde_json::json!("garbage")).is_some_and(|s| s.conditions.is_empty()));
}
