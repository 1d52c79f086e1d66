//! Property tests over the pure functions that take tenant-written input: whatever a tenant
//! puts into an object, a label, a status or a timestamp, they return instead of panicking, and
//! keep the promises the manager relies on. Bounded (256 cases each, no regression files) so
//! that they run in seconds inside `cargo test --lib`.
//!
//! Strategies lean towards the values that break code: jiff's extreme timestamps, `i64::MAX`,
//! empty and non-ASCII strings, deep and odd JSON.

mod reconciler;
mod syncer;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Every property runs this many cases.
fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// Short strings, often ASCII label material, sometimes anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9./-]{0,12}",
        Just(String::new()),
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
        Just("tmc.kcp.io/target".to_string()),
        Just("kcp.io/cluster".to_string()),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        Just(Value::from(i64::MAX)),
        Just(Value::from(i64::MIN)),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String)];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object shaped like a Kubernetes object (so the code gets past its first lookups),
/// with arbitrary content in every field.
fn object() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![Just("Secret"), Just("ConfigMap"), Just("Deployment"), Just("Service"), Just("Widget")];
    let api_version = prop_oneof![Just("v1"), Just("apps/v1"), Just("example.dev/v1")];
    (kind, api_version, json(), json(), json(), json(), json(), json()).prop_map(
        |(kind, api, name, labels, annotations, spec, data, extra)| {
            let mut o = Map::new();
            o.insert("apiVersion".into(), api.into());
            o.insert("kind".into(), kind.into());
            o.insert(
                "metadata".into(),
                serde_json::json!({"name": name, "labels": labels, "annotations": annotations, "uid": extra}),
            );
            o.insert("spec".into(), spec);
            o.insert("data".into(), data);
            o.insert("status".into(), serde_json::json!({"replicas": 1}));
            Value::Object(o)
        },
    )
}

/// Timestamps over jiff's whole range, with its ends and the present weighted up.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    let now = Timestamp::now().as_second();
    prop_oneof![
        (min..=max).prop_map(|s| Timestamp::from_second(s).unwrap()),
        (now - 3600..now + 3600).prop_map(|s| Timestamp::from_second(s).unwrap()),
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        (max - 600..=max).prop_map(|s| Timestamp::from_second(s).unwrap()),
    ]
}

/// Durations up to the largest, as an operator flag or a computed delay might be.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..100_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_secs),
        Just(Duration::ZERO),
        Just(Duration::MAX),
    ]
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(prop_oneof!["[a-c]", text()], prop_oneof!["[x-z]", text()], 0..5)
}
