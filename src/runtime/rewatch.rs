//! How a watch is retried after an error. kube's default backoff (client-go's: 0.8 s doubling
//! to 30 s, forgotten only after two quiet minutes) let a shard restart of seconds stall every
//! watch on that shard for half a minute or more: the refused connections during the restart
//! raised the delay, and the 410 Expired that every resumed watch then meets raised it again.
//! Here the delay doubles from [`FIRST_DELAY`] to [`MAX_DELAY`], any event resets it, and a
//! 410 (the server answers; only the resourceVersion is gone) relists at once — unless the last
//! 410 was less than [`MAX_DELAY`] ago, so a server answering 410 to every watch cannot drive a
//! loop of lists.

use std::time::Duration;

use tokio::time::Instant;

use futures::{Stream, StreamExt};
use kube::runtime::watcher;

pub const FIRST_DELAY: Duration = Duration::from_millis(500);
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// The delay before the next attempt, given the failures in a row so far.
#[derive(Debug, Default)]
pub struct Delay {
    failures: u32,
    last_expired: Option<Instant>,
}

impl Delay {
    /// After `error`: how long to wait before polling the watch again.
    pub fn after(&mut self, error: &watcher::Error) -> Duration {
        if expired(error) {
            let now = Instant::now();
            let again = self.last_expired.replace(now).is_some_and(|at| now - at < MAX_DELAY);
            if !again {
                return Duration::ZERO;
            }
        }
        let delay = FIRST_DELAY.saturating_mul(1 << self.failures.min(10)).min(MAX_DELAY);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Whether the server answered that the watch's resourceVersion is too old (410 Gone/Expired).
fn expired(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            matches!(e, kube::Error::Api(s) if s.code == 410)
        }
        watcher::Error::NoResourceVersion => false,
    }
}

/// `events` retried as the module docs say: an error is passed on at once, and the next poll
/// waits the delay.
pub fn retried<S, T>(events: S) -> impl Stream<Item = Result<T, watcher::Error>> + Send + Unpin
where
    S: Stream<Item = Result<T, watcher::Error>> + Send + Unpin + 'static,
    T: Send + 'static,
{
    let state = (events, Delay::default(), Duration::ZERO);
    futures::stream::unfold(state, |(mut events, mut delay, wait)| async move {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let item = events.next().await?;
        let wait = match &item {
            Ok(_) => {
                delay.reset();
                Duration::ZERO
            }
            Err(e) => delay.after(e),
        };
        Some((item, (events, delay, wait)))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Box<kube::core::Status> {
        Box::new(kube::core::Status::failure("x", "Expired").with_code(code))
    }

    fn refused() -> watcher::Error {
        watcher::Error::WatchError(status(503))
    }

    #[tokio::test(start_paused = true)]
    async fn delays_double_to_the_cap_and_reset() {
        let mut d = Delay::default();
        let seen: Vec<u64> = (0..7).map(|_| d.after(&refused()).as_millis() as u64).collect();
        assert_eq!(seen, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        d.reset();
        assert_eq!(d.after(&refused()), FIRST_DELAY, "an event in between starts over");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_relists_at_once_whatever_came_before() {
        let cases: Vec<(&str, watcher::Error)> = vec![
            ("410 in the watch", watcher::Error::WatchError(status(410))),
            ("410 starting it", watcher::Error::WatchStartFailed(kube::Error::Api(status(410)))),
        ];
        for (case, error) in cases {
            let mut d = Delay::default();
            for _ in 0..5 {
                d.after(&refused());
            }
            assert_eq!(d.after(&error), Duration::ZERO, "{case}");
            assert_eq!(d.after(&refused()), MAX_DELAY, "{case}: the failures before still count");
            d.reset();
            assert_eq!(d.after(&error), FIRST_DELAY, "{case}: a second 410 at once waits");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_expiry_relists_at_once_again() {
        let mut d = Delay::default();
        let expired = || watcher::Error::WatchError(status(410));
        assert_eq!(d.after(&expired()), Duration::ZERO);
        tokio::time::advance(MAX_DELAY).await;
        assert_eq!(d.after(&expired()), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_pass_at_once_and_the_next_poll_waits() {
        let items: Vec<Result<u8, watcher::Error>> = vec![Err(refused()), Err(refused()), Ok(1), Err(refused())];
        let started = tokio::time::Instant::now();
        let mut s = retried(futures::stream::iter(items));
        let mut at = vec![];
        while let Some(item) = s.next().await {
            at.push((item.is_ok(), started.elapsed().as_millis()));
        }
        assert_eq!(at, [(false, 0), (false, 500), (true, 1500), (false, 1500)]);
    }
}
