//! The assertions every case ends with: exactly once downstream (every object present once with
//! kcp's data, nothing else), UIDs unchanged, no kcp object stuck behind a finalizer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::env::eventually;
use crate::evidence::{self, Copy};
use crate::world::World;

/// Waits until cluster `index`'s namespace `dns` holds exactly `want` (name → data); returns the
/// copies and how long it took.
pub async fn exactly(
    w: &World,
    index: usize,
    dns: &str,
    want: &BTreeMap<String, Value>,
    timeout: Duration,
) -> Result<(BTreeMap<String, Copy>, Duration), String> {
    let what = format!("{dns} in cluster {index} to equal kcp");
    until_equal(&what, want, timeout, || evidence::downstream(&w.clusters[index], dns, "configmaps")).await
}

/// Waits until `fetch` returns exactly `want` (name → data), nothing else; returns what it
/// returned and how long that took. `what` names the wait in the error.
pub async fn until_equal(
    what: &str,
    want: &BTreeMap<String, Value>,
    timeout: Duration,
    fetch: impl Fn() -> Result<BTreeMap<String, Copy>, String>,
) -> Result<(BTreeMap<String, Copy>, Duration), String> {
    let t = Instant::now();
    let got = eventually(what, timeout, || async {
        let got = fetch()?;
        let problems = evidence::diff(want, &got);
        if problems.is_empty() {
            return Ok(Some(got));
        }
        let shown: Vec<_> = problems.iter().take(5).collect();
        Err(format!("{} differences, e.g. {shown:?}", problems.len()))
    })
    .await?;
    Ok((got, t.elapsed()))
}

/// After `settle`, the copies still have the UIDs of `before` and still equal kcp.
pub async fn unchanged(
    w: &World,
    index: usize,
    dns: &str,
    before: &BTreeMap<String, Copy>,
    settle: Duration,
) -> Result<(), String> {
    tokio::time::sleep(settle).await;
    let after = evidence::downstream(&w.clusters[index], dns, "configmaps")?;
    let recreated = evidence::recreated(before, &after);
    if !recreated.is_empty() {
        let shown: Vec<_> = recreated.iter().take(5).collect();
        return Err(format!("{} copies deleted or recreated in {dns}: {shown:?}", recreated.len()));
    }
    Ok(())
}

/// No namespace, ConfigMap or SyncTarget in `ws` stays in deletion behind a finalizer.
pub async fn nothing_stuck(w: &World, ws: &str) -> Result<(), String> {
    eventually(&format!("no kcp object in {ws} stuck in deletion"), Duration::from_secs(60), || async {
        let stuck = evidence::stuck_in_kcp(&w.kcp, ws, "namespaces,configmaps,synctargets")?;
        if stuck.is_empty() { Ok(Some(())) } else { Err(format!("{stuck:?}")) }
    })
    .await
}

/// Fails with `what` when the cluster saw DELETEs of `resource` between two counter snapshots.
pub fn no_deletes(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, what: &str) -> Result<(), String> {
    let deletes = evidence::delta(before, after, "DELETE");
    if deletes > 0 {
        return Err(format!("{what}: the cluster saw {deletes} DELETE requests (before {before:?}, after {after:?})"));
    }
    Ok(())
}
