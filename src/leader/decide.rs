//! The leader-election decision, free of I/O: given what the Lease says, who we are and what our
//! own clock saw, what to do next. The loop in [`super`] reads the Lease, asks [`decide`], and
//! writes what the answer says.

use std::time::Duration;

/// The Lease as last read, reduced to what the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen<'a> {
    /// `spec.holderIdentity`; empty when nobody holds the lease (never taken, or released).
    pub holder: &'a str,
    /// `spec.leaseDurationSeconds` as the holder wrote it.
    pub duration: Duration,
    /// How long, by our own monotonic clock, the Lease has gone without any write (its
    /// resourceVersion unchanged). Expiry is judged by this rather than by comparing the
    /// holder's `renewTime` with our wall clock, so clock skew between replicas cannot make a
    /// live leader look expired (the approach of client-go's leaderelection).
    pub unchanged_for: Duration,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it holding it ourselves.
    Create,
    /// Take the lease over (it is free or expired): write ourselves as holder.
    Acquire,
    /// We hold it: write a fresh renewTime.
    Renew,
    /// Someone else holds a live lease: stay standby and look again later.
    Wait { holder: String, expires_in: Duration },
    /// We were leading but may no longer: stop writing at once.
    Lost(LostReason),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LostReason {
    #[error("the lease was not renewed within the renew deadline")]
    RenewDeadline,
    #[error("the lease is now held by {0:?}")]
    TakenBy(String),
    #[error("the lease was released or deleted by someone else")]
    Vanished,
}

/// `lease` is the Lease as read (`None`: it does not exist); `me` our identity; `leading` how
/// long ago we last renewed successfully, or `None` while standby.
pub fn decide(lease: Option<&Seen<'_>>, me: &str, leading: Option<Duration>, renew_deadline: Duration) -> Decision {
    // Past the renew deadline another replica may take over any moment (the deadline is
    // shorter than the lease duration): whatever the Lease says now, stop first.
    if leading.is_some_and(|since| overdue(since, renew_deadline)) {
        return Decision::Lost(LostReason::RenewDeadline);
    }
    let Some(seen) = lease else {
        return if leading.is_some() { Decision::Lost(LostReason::Vanished) } else { Decision::Create };
    };
    if seen.holder == me {
        return Decision::Renew;
    }
    if leading.is_some() {
        return Decision::Lost(if seen.holder.is_empty() {
            LostReason::Vanished
        } else {
            LostReason::TakenBy(seen.holder.to_string())
        });
    }
    if seen.holder.is_empty() || seen.unchanged_for >= seen.duration {
        return Decision::Acquire;
    }
    Decision::Wait { holder: seen.holder.to_string(), expires_in: seen.duration - seen.unchanged_for }
}

/// Whether a leader that last renewed `since_renew` ago must stop. Also checked when kcp does
/// not answer at all, so a hung request cannot keep a leader writing past its deadline.
pub fn overdue(since_renew: Duration, renew_deadline: Duration) -> bool {
    since_renew > renew_deadline
}

/// Checks the flags together: the renew deadline must leave the old leader time to stop before
/// the lease expires for the others, and retries must fit several times into the deadline.
pub fn validate(duration: Duration, renew_deadline: Duration, retry_period: Duration) -> Result<(), String> {
    if retry_period.is_zero() {
        return Err("--leader-election-retry-period must be greater than zero".into());
    }
    if renew_deadline >= duration {
        return Err(format!(
            "--leader-election-renew-deadline ({renew_deadline:?}) must be shorter than \
             --leader-election-lease-duration ({duration:?}), so a leader that cannot renew stops \
             before another replica may take over"
        ));
    }
    if retry_period >= renew_deadline {
        return Err(format!(
            "--leader-election-retry-period ({retry_period:?}) must be shorter than \
             --leader-election-renew-deadline ({renew_deadline:?}), so a leader retries a failed renewal"
        ));
    }
    Ok(())
}

/// The Lease a manager following only `shards` (`--shards`) elects its leader on:
/// `<base>-<the shards sorted, joined with '.'>`, so managers of disjoint shard sets each lead
/// their own and replicas of the same set share one. Too long for a Lease name (253), the shard
/// part becomes a hash of it. All shards (no filter) keep `base`.
pub fn lease_name(base: &str, shards: Option<&std::collections::BTreeSet<String>>) -> String {
    use sha2::{Digest, Sha256};
    let Some(shards) = shards.filter(|s| !s.is_empty()) else { return base.to_string() };
    let joined = shards.iter().map(String::as_str).collect::<Vec<_>>().join(".");
    let name = format!("{base}-{joined}");
    if name.len() <= 253 {
        return name;
    }
    let digest = Sha256::digest(joined.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{base}-shards-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names() {
        let set = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<std::collections::BTreeSet<_>>();
        let long: Vec<String> = (0..40).map(|i| format!("shard-number-{i}")).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let cases: Vec<(Option<std::collections::BTreeSet<String>>, &str)> = vec![
            (None, "tmc-manager"),
            (Some(set(&[])), "tmc-manager"),
            (Some(set(&["root"])), "tmc-manager-root"),
            (Some(set(&["shard-1", "root"])), "tmc-manager-root.shard-1"),
            (Some(set(&long)), "tmc-manager-shards-"),
        ];
        for (shards, want) in cases {
            let got = lease_name("tmc-manager", shards.as_ref());
            assert!(got.starts_with(want) && got.len() <= 253, "{shards:?}: {got}");
            if !want.ends_with('-') {
                assert_eq!(got, want);
            }
        }
        let hashed = lease_name("tmc-manager", Some(&set(&long)));
        assert_eq!(hashed.len(), "tmc-manager-shards-".len() + 16);
        assert_eq!(hashed, lease_name("tmc-manager", Some(&set(&long))), "stable");
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn seen(holder: &str, unchanged_for: u64) -> Seen<'_> {
        Seen { holder, duration: S(15), unchanged_for: S(unchanged_for) }
    }

    #[test]
    fn decisions() {
        let deadline = S(10);
        let lost = |r| Decision::Lost(r);
        let wait = |h: &str, s| Decision::Wait { holder: h.into(), expires_in: S(s) };
        // (lease, leading = seconds since our last renewal, want)
        let cases: Vec<(Option<Seen>, Option<u64>, Decision)> = vec![
            // Standby.
            (None, None, Decision::Create),
            (Some(seen("", 0)), None, Decision::Acquire),
            (Some(seen("other", 0)), None, wait("other", 15)),
            (Some(seen("other", 14)), None, wait("other", 1)),
            (Some(seen("other", 15)), None, Decision::Acquire),
            (Some(seen("other", 100)), None, Decision::Acquire),
            // A Lease naming us while standby (e.g. our create won but the answer was lost).
            (Some(seen("me", 3)), None, Decision::Renew),
            // Leading.
            (Some(seen("me", 2)), Some(2), Decision::Renew),
            (Some(seen("me", 10)), Some(10), Decision::Renew),
            (Some(seen("me", 11)), Some(11), lost(LostReason::RenewDeadline)),
            // Past the deadline even if the lease still names us: another may take it any moment.
            (Some(seen("me", 0)), Some(12), lost(LostReason::RenewDeadline)),
            (None, Some(12), lost(LostReason::RenewDeadline)),
            (Some(seen("other", 0)), Some(1), lost(LostReason::TakenBy("other".into()))),
            (Some(seen("", 0)), Some(1), lost(LostReason::Vanished)),
            (None, Some(1), lost(LostReason::Vanished)),
        ];
        for (lease, leading, want) in cases {
            let got = decide(lease.as_ref(), "me", leading.map(S), deadline);
            assert_eq!(got, want, "lease {lease:?}, leading {leading:?}");
        }
    }

    #[test]
    fn overdue_only_past_the_deadline() {
        for (since, want) in [(0, false), (9, false), (10, false), (11, true)] {
            assert_eq!(overdue(S(since), S(10)), want, "{since}s");
        }
    }

    #[test]
    fn flag_combinations() {
        let cases: &[(u64, u64, u64, Option<&str>)] = &[
            (15, 10, 2, None),
            (15, 15, 2, Some("shorter than --leader-election-lease-duration")),
            (15, 20, 2, Some("renew-deadline")),
            (15, 10, 10, Some("shorter than --leader-election-renew-deadline")),
            (15, 10, 0, Some("greater than zero")),
        ];
        for &(duration, deadline, retry, want) in cases {
            let got = validate(S(duration), S(deadline), S(retry));
            match want {
                None => assert!(got.is_ok(), "{got:?}"),
                Some(text) => assert!(got.as_ref().unwrap_err().contains(text), "{got:?}"),
            }
        }
    }
}
