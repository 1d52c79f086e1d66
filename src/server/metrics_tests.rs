//! Unit tests of `metrics.rs`.

use super::*;

fn recorded() -> Metrics {
    let m = Metrics::new();
    m.init_controller(controller::SYNCTARGET);
    m.reconciled(controller::SYNCTARGET, true, Duration::from_millis(3));
    m.syncer_op("key-a", "deployments", SyncOp::Apply, true, Duration::from_millis(3));
    m.syncer_op("key-a", "configmaps", SyncOp::Delete, false, Duration::from_millis(3));
    m.syncer_op("key-b", "deployments", SyncOp::Status, true, Duration::from_millis(3));
    m.observe_sync_latency("key-a", Duration::from_millis(40));
    m.observe_status_latency("key-a", Duration::from_secs(2));
    m.set_target_ready("key-a", true);
    m.set_target_ready("key-b", false);
    m.set_heartbeat_age("key-a", Duration::from_secs(5));
    m.set_queue_depth("synctarget", 7);
    m.queue_retry("synctarget");
    m.share_queue_gauge("syncer", QueueGauge::Failing, 99, Some(2));
    m.queue("syncer").waited(Duration::from_millis(7));
    m.set_synced_objects("key-a", "deployments", 12);
    m.set_synced_objects("key-b", "deployments", 1);
    m
}

#[test]
fn families_and_labels_are_encoded() {
    let text = recorded().encode();
    let cases = [
        "# TYPE tmc_reconcile_total counter",
        r#"tmc_reconcile_total{controller="synctarget",result="success"} 1"#,
        r#"tmc_reconcile_total{controller="synctarget",result="error"} 0"#,
        "# TYPE tmc_reconcile_duration_seconds histogram",
        r#"tmc_reconcile_duration_seconds_bucket{controller="synctarget",le="0.005"} 1"#,
        r#"tmc_syncer_operations_total{operation="apply",resource="deployments",result="success",sync_target="key-a"} 1"#,
        r#"tmc_syncer_operations_total{operation="delete",resource="configmaps",result="error",sync_target="key-a"} 1"#,
        r#"tmc_syncer_operation_duration_seconds_bucket{operation="apply",sync_target="key-a",le="0.0025"} 0"#,
        r#"tmc_syncer_operation_duration_seconds_bucket{operation="apply",sync_target="key-a",le="0.005"} 1"#,
        r#"tmc_sync_latency_seconds_bucket{sync_target="key-a",le="0.05"} 1"#,
        r#"tmc_sync_latency_seconds_bucket{sync_target="key-a",le="60"} 1"#,
        r#"tmc_status_latency_seconds_count{sync_target="key-a"} 1"#,
        r#"tmc_synctarget_ready{sync_target="key-a"} 1"#,
        r#"tmc_synctarget_ready{sync_target="key-b"} 0"#,
        r#"tmc_heartbeat_age_seconds{sync_target="key-a"} 5"#,
        r#"tmc_workqueue_depth{queue="synctarget"} 7"#,
        r#"tmc_workqueue_retries_total{queue="synctarget"} 1"#,
        r#"tmc_workqueue_failing_keys{queue="syncer"} 2"#,
        r#"tmc_synced_objects{resource="deployments",sync_target="key-a"} 12"#,
    ];
    for want in cases {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn every_family_has_one_help_and_one_type() {
    let text = recorded().encode();
    let families = [
        ("tmc_reconcile_total", "counter"),
        ("tmc_reconcile_duration_seconds", "histogram"),
        ("tmc_syncer_operations_total", "counter"),
        ("tmc_syncer_operation_duration_seconds", "histogram"),
        ("tmc_sync_latency_seconds", "histogram"),
        ("tmc_status_latency_seconds", "histogram"),
        ("tmc_synctarget_ready", "gauge"),
        ("tmc_heartbeat_age_seconds", "gauge"),
        ("tmc_workqueue_depth", "gauge"),
        ("tmc_workqueue_retries_total", "counter"),
        ("tmc_workqueue_failing_keys", "gauge"),
        ("tmc_workqueue_wait_seconds", "histogram"),
        ("tmc_synced_objects", "gauge"),
    ];
    for (name, kind) in families {
        let help: Vec<_> = text.lines().filter(|l| l.starts_with(&format!("# HELP {name} "))).collect();
        assert_eq!(help.len(), 1, "{name}: {help:?}");
        assert!(help[0].ends_with('.'), "{name}: help is a sentence: {}", help[0]);
        assert_eq!(text.matches(&format!("# TYPE {name} {kind}\n")).count(), 1, "{name} {kind}");
        // promtool: only counters end in _total.
        assert_eq!(name.ends_with("_total"), kind == "counter", "{name}");
    }
}

#[test]
fn process_metrics_are_included() {
    let text = Metrics::new().encode();
    for want in ["# TYPE process_resident_memory_bytes gauge", "process_cpu_seconds_total"] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn remove_target_deletes_only_its_series() {
    let m = recorded();
    m.remove_target("key-a");
    let text = m.encode();
    let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!series.iter().any(|l| l.contains(r#""key-a""#)), "key-a left in\n{text}");
    for want in [
        r#"tmc_syncer_operations_total{operation="status",resource="deployments",result="success",sync_target="key-b"} 1"#,
        r#"tmc_syncer_operation_duration_seconds_count{operation="status",sync_target="key-b"} 1"#,
        r#"tmc_synctarget_ready{sync_target="key-b"} 0"#,
        r#"tmc_synced_objects{resource="deployments",sync_target="key-b"} 1"#,
    ] {
        assert!(series.contains(&want), "missing {want:?} in\n{text}");
    }
    // Removing an unknown target is not an error.
    m.remove_target("never-seen");
}

#[test]
fn clones_share_one_registry() {
    let m = Metrics::new();
    m.clone().queue_retry("q");
    assert!(m.encode().contains(r#"tmc_workqueue_retries_total{queue="q"} 1"#));
}

#[test]
fn queue_depth_is_the_sum_of_live_reporters() {
    let m = Metrics::new();
    let depth = |m: &Metrics| {
        let text = m.encode();
        let line = text.lines().find(|l| l.starts_with(r#"tmc_workqueue_depth{queue="syncer"}"#)).map(str::to_owned);
        line.and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse::<i64>().ok()))
    };
    let (a, b) = (m.queue(queue::SYNCER), m.queue(queue::SYNCER));
    assert_eq!(depth(&m), Some(0), "present at zero once a queue exists");
    // (step, expected sum): each reporter's latest value counts, a dropped one no longer does.
    let steps: Vec<(Box<dyn Fn()>, i64)> = vec![
        (Box::new(|| a.set_depth(3)), 3),
        (Box::new(|| b.set_depth(4)), 7),
        (Box::new(|| a.set_depth(1)), 5),
        (Box::new(|| b.set_depth(0)), 1),
    ];
    for (i, (step, want)) in steps.iter().enumerate() {
        step();
        assert_eq!(depth(&m), Some(*want), "step {i}");
    }
    drop(steps);
    drop(a);
    assert_eq!(depth(&m), Some(0));
    b.retry();
    assert!(m.encode().contains(r#"tmc_workqueue_retries_total{queue="syncer"} 1"#));
}

#[test]
fn heartbeat_age_is_computed_at_scrape_time() {
    let m = Metrics::new();
    let now = SystemTime::now();
    // (target, heartbeat at, lowest age a scrape may show)
    let cases = [("old", now - Duration::from_secs(90), 90.0), ("future", now + Duration::from_secs(30), 0.0)];
    for (target, at, _) in &cases {
        m.set_last_heartbeat(target, *at);
    }
    let text = m.encode();
    for (target, _, min) in cases {
        let prefix = format!(r#"tmc_heartbeat_age_seconds{{sync_target="{target}"}} "#);
        let age: f64 = text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap();
        assert!(age >= min && age < min + 5.0, "{target}: {age}");
    }
    m.remove_target("old");
    assert!(!m.encode().contains(r#"sync_target="old""#), "removed targets stay removed");
}
