use super::*;
use crate::reconciler::placement::explain::{Candidate, Why, explain};

fn t(name: &str) -> TargetView {
    TargetView {
        name: name.into(),
        labels: [("env".to_string(), "prod".to_string())].into(),
        ready: true,
        ready_since: Some("2026-01-01T00:00:00Z".parse().unwrap()),
        apis_available: true,
        allows: true,
        ..Default::default()
    }
}

fn now() -> Timestamp {
    "2026-01-01T01:00:00Z".parse().unwrap()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct Case {
    targets: Vec<TargetView>,
    current: &'static [&'static str],
    number: Option<i32>,
    budget: usize,
    foreign: bool,
}

/// `f` of the scheduler's input for case `c`.
fn with_input<R>(c: &Case, f: impl FnOnce(&Input<'_>) -> R) -> R {
    let labels = [("env".to_string(), "prod".to_string())].into();
    let current = names(c.current);
    f(&Input {
        placement: "ws|pl",
        match_labels: &labels,
        match_expressions: &[],
        number_of_targets: c.number,
        targets: &c.targets,
        current: &current,
        foreign: c.foreign,
        now: now(),
        failover_grace: Duration::from_secs(120),
        evictions_allowed: c.budget,
    })
}

fn run(c: &Case) -> Decision {
    with_input(c, schedule)
}

/// What the preview shows for case `c`.
fn explained(c: &Case) -> Vec<Candidate> {
    with_input(c, |input| explain(input, &schedule(input)))
}

fn case(targets: Vec<TargetView>, current: &'static [&'static str], number: Option<i32>) -> Case {
    Case { targets, current, number, budget: 10, foreign: false }
}

fn not_ready_for(mut target: TargetView, secs: i64) -> TargetView {
    target.ready = false;
    target.ready_since = Some(now() - jiff::SignedDuration::from_secs(secs));
    target
}

type Row = (&'static str, Case, &'static [&'static str], Outcome);

fn selection_cases() -> Vec<Row> {
    let unlabelled = TargetView { labels: BTreeMap::new(), ..t("other") };
    let cordoned = TargetView { unschedulable: true, ..t("b") };
    let draining = TargetView { evict_after: Some(now() - jiff::SignedDuration::from_secs(1)), ..t("b") };
    let denied = TargetView { allows: false, ..t("a") };
    let no_apis = TargetView { apis_available: false, ..t("b") };
    vec![
        (
            "all matching when unset",
            case(vec![t("a"), t("b"), unlabelled.clone()], &[], None),
            &["a", "b"],
            Outcome::Scheduled,
        ),
        ("nothing matches", case(vec![unlabelled], &[], None), &[], Outcome::NoMatchingTargets),
        ("consent missing", Case { foreign: true, ..case(vec![denied], &[], None) }, &[], Outcome::WorkspaceNotAllowed),
        (
            "sticky: current kept when another appears",
            case(vec![t("a"), t("b"), t("c")], &["c"], Some(1)),
            &["c"],
            Outcome::Scheduled,
        ),
        (
            "cordon keeps what runs",
            case(vec![TargetView { unschedulable: true, ..t("a") }, t("b")], &["a"], Some(1)),
            &["a"],
            Outcome::Scheduled,
        ),
        ("cordon takes nothing new", case(vec![t("a"), cordoned], &[], None), &["a"], Outcome::Scheduled),
        ("drain moves off", case(vec![t("a"), draining], &["b"], Some(1)), &["a"], Outcome::Scheduled),
        ("unavailable APIs take nothing new", case(vec![t("a"), no_apis], &[], None), &["a"], Outcome::Scheduled),
        ("only unready targets", case(vec![not_ready_for(t("a"), 5)], &[], None), &[], Outcome::NoReadyTargets),
        (
            "unready within grace kept",
            case(vec![not_ready_for(t("a"), 60), t("b")], &["a"], Some(1)),
            &["a"],
            Outcome::Scheduled,
        ),
        (
            "unready past grace fails over",
            case(vec![not_ready_for(t("a"), 300), t("b")], &["a"], Some(1)),
            &["b"],
            Outcome::Scheduled,
        ),
        (
            "unready past grace without replacement stays",
            case(vec![not_ready_for(t("a"), 300)], &["a"], Some(1)),
            &["a"],
            Outcome::Scheduled,
        ),
        ("stale current names ignored", case(vec![t("a")], &["gone"], Some(1)), &["a"], Outcome::Scheduled),
    ]
}

#[test]
fn selection_table() {
    for (name, c, want, outcome) in selection_cases() {
        let d = run(&c);
        assert_eq!(d.selected, names(want), "{name}");
        assert_eq!(d.outcome, outcome, "{name}");
    }
}

/// Another workspace's targets: without consent nothing about them shows, so a Placement
/// probing a workspace reads the same whatever that workspace holds.
fn foreign_cases() -> Vec<Row> {
    let denied = |name: &str| TargetView { allows: false, ..t(name) };
    let unlabelled = |allows: bool| TargetView { labels: BTreeMap::new(), allows, ..t("u") };
    let foreign = |targets: Vec<TargetView>, current: &'static [&'static str]| Case {
        foreign: true,
        ..case(targets, current, None)
    };
    vec![
        ("no targets at all", foreign(vec![], &[]), &[], Outcome::WorkspaceNotAllowed),
        ("matching, no consent", foreign(vec![denied("a"), denied("b")], &[]), &[], Outcome::WorkspaceNotAllowed),
        ("not matching, no consent", foreign(vec![unlabelled(false)], &[]), &[], Outcome::WorkspaceNotAllowed),
        (
            "consent withdrawn from the current one",
            foreign(vec![denied("a")], &["a"]),
            &[],
            Outcome::WorkspaceNotAllowed,
        ),
        (
            "a consenting one that does not match",
            foreign(vec![unlabelled(true), denied("a")], &[]),
            &[],
            Outcome::NoMatchingTargets,
        ),
        ("only the consenting one is chosen", foreign(vec![denied("a"), t("b")], &[]), &["b"], Outcome::Scheduled),
        ("own workspace without targets", case(vec![], &[], None), &[], Outcome::NoMatchingTargets),
    ]
}

#[test]
fn foreign_targets_without_consent_are_invisible() {
    for (name, c, want, outcome) in foreign_cases() {
        let d = run(&c);
        assert_eq!((d.selected, d.outcome), (names(want), outcome), "{name}");
    }
}

impl Case {
    fn with_budget(mut self, budget: usize) -> Self {
        self.budget = budget;
        self
    }
}

#[test]
fn lowering_the_number_trims_by_rank() {
    let d = run(&case(vec![t("a"), t("b"), t("c")], &["a", "b", "c"], Some(1)).with_budget(0));
    assert_eq!(d.selected.len(), 1);
    assert!(d.evicted.is_empty(), "trimming is not an eviction");
}

#[test]
fn deterministic_and_spread_over_placements() {
    let targets: Vec<_> = (0..20).map(|i| t(&format!("t{i}"))).collect();
    let a = run(&case(targets.clone(), &[], Some(1)));
    assert_eq!(a, run(&case(targets.clone(), &[], Some(1))), "same inputs, same choice");
    let labels = [("env".to_string(), "prod".to_string())].into();
    let chosen: BTreeSet<_> = (0..20)
        .map(|i| {
            let p = format!("ws|p{i}");
            let current = BTreeSet::new();
            let input = Input {
                placement: &p,
                match_labels: &labels,
                match_expressions: &[],
                number_of_targets: Some(1),
                targets: &targets,
                current: &current,
                foreign: false,
                now: now(),
                failover_grace: Duration::from_secs(1),
                evictions_allowed: 0,
            };
            schedule(&input).selected.into_iter().next().unwrap()
        })
        .collect();
    assert!(chosen.len() > 5, "placements spread over targets: {chosen:?}");
}

#[test]
fn spreads_across_cells() {
    let cell = |name: &str, c: &str| TargetView { cells: vec![c.into()], ..t(name) };
    let targets = vec![cell("a1", "a"), cell("a2", "a"), cell("a3", "a"), cell("b1", "b")];
    for placement in ["x", "y", "z", "w"] {
        let labels = [("env".to_string(), "prod".to_string())].into();
        let current = BTreeSet::new();
        let d = schedule(&Input {
            placement,
            match_labels: &labels,
            match_expressions: &[],
            number_of_targets: Some(2),
            targets: &targets,
            current: &current,
            foreign: false,
            now: now(),
            failover_grace: Duration::from_secs(1),
            evictions_allowed: 0,
        });
        assert!(d.selected.contains("b1"), "{placement}: one per cell: {:?}", d.selected);
    }
}

#[test]
fn evictions_are_rate_limited_and_timed() {
    let targets = vec![not_ready_for(t("a"), 300), t("b")];
    let d = run(&case(targets.clone(), &["a"], Some(1)).with_budget(0));
    assert_eq!((d.selected, d.deferred), (names(&["a"]), 1), "no budget: stays, deferred");
    let d = run(&case(targets, &["a"], Some(1)).with_budget(1));
    assert_eq!((d.evicted, d.deferred), (names(&["a"]), 0));
    let d = run(&case(vec![not_ready_for(t("a"), 100), t("b")], &["a"], Some(1)));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(20)), "woken when the grace ends");
}

/// `lastTransitionTime` and `evictAfter` are tenant-written: year 9999 plus the grace is past
/// jiff's range (`+` would panic), and an outage cannot have started in the future.
#[test]
fn times_at_the_end_of_the_range_neither_panic_nor_hold_forever() {
    let end: Timestamp = "9999-12-30T21:59:59Z".parse().unwrap(); // about jiff's last second
    let future_outage = TargetView { ready: false, ready_since: Some(end), ..t("a") };
    let far_eviction = TargetView { evict_after: Some(end), ..t("b") };
    let d = run(&case(vec![future_outage, far_eviction, t("c")], &["a", "b"], Some(2)));
    // "a" has been out for the grace starting now, not from year 9999: kept, woken then.
    assert_eq!(d.selected, names(&["a", "b"]));
    assert_eq!(d.requeue_after, Some(Duration::from_secs(120)));
    assert!(d.evicted.is_empty());
    // A grace that ends past the representable range is not over.
    assert_eq!(grace_ends(end, end, Duration::from_secs(3600)), None);
    assert_eq!(grace_ends(end, now(), Duration::from_secs(1)), Some(now() + Duration::from_secs(1)));
}

/// The preview's explanation never disagrees with the decision: over every scheduling case
/// (and the rate-limited ones), a target is shown chosen exactly when `schedule` chose it, and
/// every target is listed once.
#[test]
fn explanations_agree_with_every_decision() {
    let limited = [
        ("no budget", case(vec![not_ready_for(t("a"), 300), t("b")], &["a"], Some(1)).with_budget(0)),
        ("trimmed", case(vec![t("a"), t("b"), t("c")], &["a", "b", "c"], Some(1)).with_budget(0)),
    ];
    let rows = selection_cases().into_iter().chain(foreign_cases()).map(|(name, c, _, _)| (name, c));
    for (name, c) in rows.chain(limited) {
        let d = run(&c);
        let shown = explained(&c);
        let chosen: BTreeSet<String> = shown.iter().filter(|c| c.chosen).map(|c| c.name.clone()).collect();
        assert_eq!(chosen, d.selected, "{name}");
        assert_eq!(shown.len(), c.targets.len(), "{name}");
    }
}

/// The rule named for each target, one case per rule.
#[test]
fn each_target_is_explained_by_the_rule_that_decided_it() {
    use Why::*;
    let past = Some(now() - jiff::SignedDuration::from_secs(1));
    let cases: Vec<(&str, Case, &str, Why)> = vec![
        ("fresh", case(vec![t("a")], &[], None), "a", Chosen),
        ("current", case(vec![t("a")], &["a"], None), "a", Kept),
        ("current, unready in grace", case(vec![not_ready_for(t("a"), 60)], &["a"], None), "a", KeptNotReady),
        (
            "current, cordoned",
            case(vec![TargetView { unschedulable: true, ..t("a") }], &["a"], None),
            "a",
            KeptCordoned,
        ),
        (
            "no consent",
            Case { foreign: true, ..case(vec![TargetView { allows: false, ..t("a") }, t("b")], &[], None) },
            "a",
            NotAllowed,
        ),
        (
            "labels",
            case(vec![TargetView { labels: BTreeMap::new(), ..t("a") }, t("b")], &[], None),
            "a",
            LabelsDoNotMatch,
        ),
        ("drained", case(vec![TargetView { evict_after: past, ..t("a") }, t("b")], &["a"], Some(1)), "a", Drained),
        ("failed over", case(vec![not_ready_for(t("a"), 300), t("b")], &["a"], Some(1)), "a", FailedOver),
        ("unready", case(vec![not_ready_for(t("a"), 5), t("b")], &[], None), "a", NotReady),
        ("cordoned", case(vec![TargetView { unschedulable: true, ..t("a") }, t("b")], &[], None), "a", Cordoned),
        ("draining", case(vec![TargetView { evict_after: past, ..t("a") }, t("b")], &[], None), "a", Draining),
        ("kinds", case(vec![TargetView { apis_available: false, ..t("a") }, t("b")], &[], None), "a", ApisUnavailable),
        ("kept elsewhere", case(vec![t("a"), t("b")], &["b"], Some(1)), "a", NumberOfTargetsFilled),
        (
            "trimmed",
            case(vec![t("a"), t("b"), t("c")], &["a", "b", "c"], Some(1)).with_budget(0),
            "?",
            NumberOfTargetsFilled,
        ),
    ];
    for (name, c, target, want) in cases {
        let shown = explained(&c);
        // "?": any target not chosen (which one the rank trims is the hash's business).
        let row = shown.iter().find(|s| if target == "?" { !s.chosen } else { s.name == target }).unwrap();
        assert_eq!(row.why, want, "{name}: {shown:?}");
    }
}
