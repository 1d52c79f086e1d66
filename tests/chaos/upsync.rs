//! Case: upsync (a Placement's `spec.upsync`) through real faults. An operator's ConfigMaps in
//! the cluster come back into the tenant's namespace in kcp; then
//! - the cluster is cut off while the operator deletes and changes some originals: no copy in
//!   kcp is deleted or rewritten while the syncer cannot see the cluster (not listed is
//!   unknown, not absent), and once the cluster is back exactly the deleted ones go;
//! - the manager is killed with kill -9 in the middle of a second burst of originals: its
//!   replacement copies the rest, and no copy made before is deleted and recreated.
//!
//! Throughout, the originals are never deleted or replaced by kcp-tmc (their UIDs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::checks::{nothing_stuck, until_equal};
use crate::env::eventually;
use crate::evidence::{self, Copy};
use crate::proxy::Mode;
use crate::world::{WAIT, World, configmap_lists, configmaps};
use crate::{Report, burst_size};

const WS: &str = "root:chaos-upsync";
const NS: &str = "ops";
/// Originals deleted, and others changed, while the cluster is cut off.
const TOUCHED: usize = 10;
/// How long the cluster stays cut off: several upsync passes (one every 15 s at the latest, and
/// one per change) run meanwhile.
const CUT: Duration = Duration::from_secs(20);

/// The operator: applies `objects` as ConfigMaps into the cluster's namespace `dns`, 25 per
/// kubectl call, counting them in `applied`.
fn operate(w: &World, dns: &str, objects: &BTreeMap<String, Value>, applied: &AtomicUsize) -> Result<(), String> {
    for (count, list) in configmap_lists(objects, 25) {
        w.clusters[0].kubectl_stdin(&["-n", dns, "apply", "-f", "-"], &list)?;
        applied.fetch_add(count, Ordering::SeqCst);
    }
    Ok(())
}

/// The copies in kcp: this target's upsynced ConfigMaps in `WS`/`NS`.
fn copies(w: &World, key: &str) -> Result<BTreeMap<String, Copy>, String> {
    evidence::upstream(&w.kcp, WS, NS, "configmaps", &format!("tmc.kcp.io/upsynced-from={key}"))
}

/// Waits until kcp holds exactly one copy of each of `want` (name → data), nothing else.
async fn copies_equal(w: &World, key: &str, want: &BTreeMap<String, Value>) -> Result<BTreeMap<String, Copy>, String> {
    let what = format!("kcp's copies in {WS}/{NS} to equal the cluster's originals");
    Ok(until_equal(&what, want, WAIT, || copies(w, key)).await?.0)
}

/// Fails when a copy of `before` was deleted, recreated or (with `rewritten`) written.
fn kept(
    before: &BTreeMap<String, Copy>,
    after: &BTreeMap<String, Copy>,
    rewritten: bool,
    when: &str,
) -> Result<(), String> {
    let mut bad = evidence::recreated(before, after);
    if rewritten {
        bad.extend(
            before
                .iter()
                .filter(|(n, c)| after.get(*n).is_some_and(|a| a.resource_version != c.resource_version))
                .map(|(n, _)| format!("{n} written")),
        );
    }
    if bad.is_empty() {
        return Ok(());
    }
    let shown: Vec<_> = bad.iter().take(5).collect();
    Err(format!("{when}: {} copies in kcp deleted, recreated or written: {shown:?}", bad.len()))
}

pub async fn copies_hold_through_a_cut_cluster_and_a_killed_manager(w: Arc<World>, r: &Report) -> Result<(), String> {
    w.tenant(WS).await?;
    let key = w.target(WS, "t", 0, json!({})).await?;
    let mut manager = w.manager("upsync-1", &[]);
    w.wait_ready(WS, "t", "True", WAIT).await?;
    w.namespace(WS, NS, Some(&key), json!({}))?;
    // What the Placement reconciler writes for `spec.upsync: [{kind: ConfigMap}]`.
    let upsync = format!("upsync.tmc.kcp.io/{key}=[{{\"group\":\"\",\"kind\":\"ConfigMap\"}}]");
    w.kcp.kubectl(WS, &["annotate", "--overwrite", "namespace", NS, &upsync], None)?;
    // The tenant's own ConfigMap: synced down, never copied back.
    let seed =
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "seed" }, "data": { "by": "tenant" } });
    w.kcp.kubectl(WS, &["-n", NS, "apply", "-f", "-"], Some(&seed.to_string()))?;
    let dns = w.downstream_ns(WS, "t", WS, NS).await?;
    eventually("the tenant's ConfigMap in the cluster", WAIT, || async {
        Ok(evidence::downstream(&w.clusters[0], &dns, "configmaps")?.contains_key("seed").then_some(()))
    })
    .await?;

    // The operator's first objects come back.
    let n = burst_size() / 3;
    let mut want = configmaps("op", n, "1");
    operate(&w, &dns, &want, &AtomicUsize::new(0))?;
    let first = copies_equal(&w, &key, &want).await?;
    let originals = evidence::downstream(&w.clusters[0], &dns, "configmaps")?;

    // Cut off: the operator deletes and changes originals the syncer cannot see.
    w.cluster_proxies[0].set(Mode::Cut);
    let deleted: Vec<String> = (0..TOUCHED).map(|i| format!("op-{i}")).collect();
    let mut args = vec!["-n", dns.as_str(), "delete", "configmap"];
    args.extend(deleted.iter().map(String::as_str));
    w.clusters[0].kubectl(&args)?;
    let changed: BTreeMap<String, Value> =
        (TOUCHED..2 * TOUCHED).map(|i| (format!("op-{i}"), json!({ "i": i.to_string(), "rev": "2" }))).collect();
    operate(&w, &dns, &changed, &AtomicUsize::new(0))?;
    tokio::time::sleep(CUT).await;
    kept(&first, &copies(&w, &key)?, true, "while the cluster was cut off")?;
    w.cluster_proxies[0].set(Mode::Pass);
    deleted.iter().for_each(|n| drop(want.remove(n)));
    want.extend(changed);
    let t = std::time::Instant::now();
    let second = copies_equal(&w, &key, &want).await?;
    r.figure(format!(
        "{TOUCHED} deleted and {TOUCHED} changed originals followed {:.1?} after the cluster returned",
        t.elapsed()
    ));
    let untouched: BTreeMap<_, _> = first.into_iter().filter(|(n, _)| want.contains_key(n)).collect();
    kept(&untouched, &second, false, "after the cluster returned")?;

    // kill -9 in the middle of the operator's second burst.
    let more = configmaps("late", burst_size(), "1");
    let applied = Arc::new(AtomicUsize::new(0));
    let operator = tokio::task::spawn_blocking({
        let (w, dns, more, applied) = (w.clone(), dns.clone(), more.clone(), applied.clone());
        move || operate(&w, &dns, &more, &applied)
    });
    while applied.load(Ordering::SeqCst) < more.len() / 3 && !operator.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if operator.is_finished() {
        return Err(format!("the operator's burst of {} was over before the kill", more.len()));
    }
    manager.signal("KILL");
    let copied_at_kill = copies(&w, &key)?.len().saturating_sub(second.len());
    drop(std::mem::replace(&mut manager, w.manager("upsync-2", &[])));
    operator.await.map_err(|e| e.to_string())??;
    want.extend(more);
    let t = std::time::Instant::now();
    let third = copies_equal(&w, &key, &want).await?;
    r.figure(format!(
        "{} originals copied {:.1?} after the burst (manager killed with {copied_at_kill} of them copied)",
        burst_size(),
        t.elapsed()
    ));
    kept(&second, &third, false, "after the manager was killed")?;

    // The originals are the operator's: kcp-tmc deleted or replaced none (their UIDs, and every
    // one the operator did not delete still there). Not the cluster's DELETE counter: it counts
    // the whole cluster, where the cases before this one leave syncers' work behind.
    let now = evidence::downstream(&w.clusters[0], &dns, "configmaps")?;
    let replaced: Vec<_> = originals
        .iter()
        .filter(|(n, c)| !deleted.contains(n) && now.get(*n).is_none_or(|o| o.uid != c.uid))
        .map(|(n, _)| n)
        .collect();
    let missing: Vec<_> = want.keys().filter(|n| !now.contains_key(*n)).collect();
    if !missing.is_empty() {
        return Err(format!("originals gone from the cluster: {missing:?}"));
    }
    if !replaced.is_empty() {
        return Err(format!("originals replaced in the cluster: {replaced:?}"));
    }
    nothing_stuck(&w, WS).await?;
    drop(manager);
    Ok(())
}
