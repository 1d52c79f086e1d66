//! Decisions of the finalizer sweeper (see [`super::sweeper`]): which syncer markers on a kcp
//! object nobody will ever release, and which may be released now. Pure, so every case is a
//! row of a table test.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kube::api::ObjectMeta;

use crate::apis::names::SYNCER_FINALIZER_PREFIX;
use crate::syncer::status::STATUS_ANNOTATION_PREFIX;

/// Whether anything can act on the objects of one existing SyncTarget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Syncer {
    /// A syncer runs (push mode in some manager endpoint, or a pull-mode syncer with a fresh
    /// heartbeat), or the manager has not decided yet: its objects are left to it.
    Acting,
    /// No syncer can act on its objects, and why (e.g. its kubeconfig Secret is missing).
    Absent(String),
}

/// What the sweeper does about one target's marker on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it: its target's syncer will release it.
    Keep,
    /// Release it: the key belongs to no SyncTarget any endpoint knows.
    Orphaned,
    /// Release it: the object has waited the deletion timeout for a target without a syncer.
    TimedOut(String),
    /// Look again after this long: the object is being deleted and its target has no syncer.
    WaitFor(Duration),
}

/// The target keys whose syncer finalizer or per-target status annotation `meta` carries.
pub fn marker_keys(meta: &ObjectMeta) -> BTreeSet<String> {
    let finalizers = meta.finalizers.iter().flatten().map(String::as_str);
    markers_in(finalizers, meta.annotations.iter().flat_map(|a| a.keys()).map(String::as_str))
}

/// The target keys among an object's `finalizers` and `annotation_keys` (see [`marker_keys`]).
pub fn markers_in<'a>(
    finalizers: impl IntoIterator<Item = &'a str>,
    annotation_keys: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let finalizers = finalizers.into_iter().filter_map(|f| f.strip_prefix(SYNCER_FINALIZER_PREFIX));
    let annotations = annotation_keys.into_iter().filter_map(|k| k.strip_prefix(STATUS_ANNOTATION_PREFIX));
    finalizers.chain(annotations).filter(|k| !k.is_empty()).map(str::to_string).collect()
}

/// The target keys whose markers the object `held` in kcp's view carries.
pub fn held_markers(held: &crate::syncer::kept::Held) -> BTreeSet<String> {
    let (finalizers, annotation_keys) = held.markers();
    markers_in(finalizers, annotation_keys)
}

/// The verdict for the marker of `target_key` on an object that has been deleting for
/// `deleting_for` (`None`: not being deleted). `known` holds every SyncTarget of every endpoint,
/// and is only ever built from synced caches.
pub fn verdict(
    target_key: &str,
    known: &HashMap<String, Syncer>,
    deleting_for: Option<Duration>,
    deletion_timeout: Duration,
) -> Verdict {
    match known.get(target_key) {
        None => Verdict::Orphaned,
        Some(Syncer::Acting) => Verdict::Keep,
        Some(Syncer::Absent(why)) => match deleting_for {
            None => Verdict::Keep,
            Some(waited) if waited >= deletion_timeout => Verdict::TimedOut(why.clone()),
            Some(waited) => Verdict::WaitFor(deletion_timeout - waited),
        },
    }
}

/// Whether an object carrying the markers of `target_keys` can get any verdict but
/// [`Verdict::Keep`]: only a marker of a target whose syncer does not act can. The sweeper looks
/// at no other object, so a pass over a manager's every synced object reads (and holds) only the
/// few it may act on.
pub fn worth_a_look(target_keys: &BTreeSet<String>, known: &HashMap<String, Syncer>) -> bool {
    target_keys.iter().any(|k| !matches!(known.get(k), Some(Syncer::Acting)))
}

/// How long a target key must stay unknown to every endpoint before its markers are released.
/// A pull-mode syncer may put its finalizer on objects moments after its SyncTarget was created,
/// before this manager's watch has delivered that SyncTarget: one look is not proof enough.
pub const ORPHAN_CONFIRMATION: Duration = Duration::from_secs(30);

/// Whether a key first seen orphaned at `first_seen` may be released at `now`: `Ok` once it has
/// stayed unknown for [`ORPHAN_CONFIRMATION`], else how much longer to wait.
pub fn confirmed_orphan(first_seen: std::time::Instant, now: std::time::Instant) -> Result<(), Duration> {
    let waited = now.saturating_duration_since(first_seen);
    if waited >= ORPHAN_CONFIRMATION { Ok(()) } else { Err(ORPHAN_CONFIRMATION - waited) }
}

/// Whether a pull-mode target's syncer acts: its heartbeat (`lastSyncTime`) is fresher than
/// `threshold`. A missing or future-dated heartbeat counts as stale and fresh respectively.
pub fn pull_syncer(last_heartbeat: Option<jiff::Timestamp>, now: jiff::Timestamp, threshold: Duration) -> Syncer {
    let Some(at) = last_heartbeat else {
        return Syncer::Absent("its pull-mode syncer has never sent a heartbeat".into());
    };
    let age = Duration::try_from(now.duration_since(at)).unwrap_or_default();
    if age < threshold { Syncer::Acting } else { Syncer::Absent("its pull-mode syncer's heartbeat is stale".into()) }
}

/// Whether a push-mode target's syncer acts: `Some(true)` it runs in this manager, `Some(false)`
/// a reconcile stopped it (credentials missing or refused), `None` not decided since start.
/// The reason names no detail of the target's Ready message: the Event goes to the object's
/// workspace, which may be another than the target's.
pub fn push_syncer(running: Option<bool>) -> Syncer {
    match running {
        Some(false) => Syncer::Absent("the manager runs no syncer for it (see its Ready condition)".into()),
        _ => Syncer::Acting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(300);

    #[test]
    fn verdicts() {
        let known: HashMap<String, Syncer> =
            [("acting".to_string(), Syncer::Acting), ("absent".to_string(), Syncer::Absent("no kubeconfig".into()))]
                .into();
        let s = Duration::from_secs;
        let rows: &[(&str, Option<Duration>, Verdict)] = &[
            ("gone", None, Verdict::Orphaned),
            ("gone", Some(s(1)), Verdict::Orphaned),
            ("acting", None, Verdict::Keep),
            ("acting", Some(s(10_000)), Verdict::Keep),
            ("absent", None, Verdict::Keep),
            ("absent", Some(s(0)), Verdict::WaitFor(T)),
            ("absent", Some(s(200)), Verdict::WaitFor(s(100))),
            ("absent", Some(T), Verdict::TimedOut("no kubeconfig".into())),
            ("absent", Some(s(301)), Verdict::TimedOut("no kubeconfig".into())),
        ];
        for (key, deleting, want) in rows {
            assert_eq!(verdict(key, &known, *deleting, T), *want, "{key} deleting {deleting:?}");
        }
    }

    /// Passed over only when every verdict would be `Keep`, however long it has been deleting.
    #[test]
    fn only_objects_a_verdict_may_act_on_are_looked_at() {
        let known: HashMap<String, Syncer> =
            [("acting".to_string(), Syncer::Acting), ("absent".to_string(), Syncer::Absent("no kubeconfig".into()))]
                .into();
        let rows: &[(&[&str], bool)] = &[
            (&[], false),
            (&["acting"], false),
            (&["absent"], true),
            (&["gone"], true),
            (&["acting", "gone"], true),
            (&["acting", "absent"], true),
        ];
        for (keys, want) in rows {
            let keys: BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
            assert_eq!(worth_a_look(&keys, &known), *want, "{keys:?}");
            if !want {
                for deleting in [None, Some(Duration::ZERO), Some(T * 10)] {
                    assert!(keys.iter().all(|k| verdict(k, &known, deleting, T) == Verdict::Keep), "{keys:?}");
                }
            }
        }
    }

    #[test]
    fn unknown_key_in_empty_view_is_orphaned_only_because_the_view_is_complete() {
        // The caller never builds `known` from an unsynced cache; an empty complete view means
        // no SyncTarget exists anywhere.
        assert_eq!(verdict("k", &HashMap::new(), None, T), Verdict::Orphaned);
    }

    #[test]
    fn markers() {
        let meta = ObjectMeta {
            finalizers: Some(vec![
                "tmc.kcp.io/syncer-aaa".into(),
                "kubernetes".into(),
                "tmc.kcp.io/syncer-".into(),
                "example.com/syncer-zzz".into(),
            ]),
            annotations: Some(
                [("status.tmc.kcp.io/bbb".to_string(), "{}".to_string()), ("other/ccc".into(), "x".into())].into(),
            ),
            ..Default::default()
        };
        assert_eq!(marker_keys(&meta), ["aaa".to_string(), "bbb".to_string()].into());
        assert!(marker_keys(&ObjectMeta::default()).is_empty());
        // The same markers on an object the view holds whole or metadata only.
        let obj = kube::api::DynamicObject { types: None, metadata: meta, data: serde_json::json!({}) };
        for (placed, what) in [(true, "whole"), (false, "metadata only")] {
            let held = crate::syncer::kept::Held::new(obj.clone(), placed, true);
            assert_eq!(held_markers(&held), ["aaa".to_string(), "bbb".to_string()].into(), "{what}");
        }
    }

    #[test]
    fn pull_heartbeats() {
        let now: jiff::Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        let ago = |s: i64| Some(now - jiff::SignedDuration::from_secs(s));
        let th = Duration::from_secs(40);
        let rows: &[(Option<jiff::Timestamp>, bool)] =
            &[(None, false), (ago(0), true), (ago(39), true), (ago(40), false), (ago(4000), false), (ago(-60), true)];
        for (at, acting) in rows {
            assert_eq!(pull_syncer(*at, now, th) == Syncer::Acting, *acting, "{at:?}");
        }
    }

    #[test]
    fn push_states() {
        assert_eq!(push_syncer(Some(true)), Syncer::Acting);
        assert_eq!(push_syncer(None), Syncer::Acting, "undecided since start: leave it");
        assert!(matches!(push_syncer(Some(false)), Syncer::Absent(_)));
    }

    #[test]
    fn an_orphan_is_released_only_after_it_stayed_unknown() {
        let t0 = std::time::Instant::now();
        for (after, want) in [
            (Duration::ZERO, Err(ORPHAN_CONFIRMATION)),
            (Duration::from_secs(10), Err(ORPHAN_CONFIRMATION - Duration::from_secs(10))),
            (ORPHAN_CONFIRMATION, Ok(())),
            (ORPHAN_CONFIRMATION * 3, Ok(())),
        ] {
            assert_eq!(confirmed_orphan(t0, t0 + after), want, "after {after:?}");
        }
        // A clock that goes backwards (a first look recorded "later") waits the whole time.
        assert_eq!(confirmed_orphan(t0 + Duration::from_secs(5), t0), Err(ORPHAN_CONFIRMATION));
    }
}
