//! A deadline on every request that is not a watch. kube's clients have none by default (its
//! `read_timeout` is off so that watches and exec sessions live), so a request whose server dies
//! or stalls at the wrong moment can wait forever, and with it the worker and the object it
//! syncs. The chaos suite found this: kcp killed in the middle of a burst left 19 finalizer
//! writes hanging for good, and their objects never reached the cluster. A request cut off here
//! fails like any other and is retried with the key's backoff.
//!
//! The bound is the time until the response headers arrive; a watch (`watch=true`/`watch=1`)
//! is exempt, as its response is open-ended by design (the watcher's own idle timeout guards it).

use std::time::Duration;

use http::Request;

/// How long a request may wait for its response: the kube-apiserver's own default
/// `--request-timeout` (kcp keeps it), after which the server itself gives up on a request that is
/// not long-running, so no request that could still succeed is cut off.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// Whether `request` is a watch, whose response is open-ended.
pub fn is_watch<B>(request: &Request<B>) -> bool {
    request.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

/// The error of a request cut off by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("no response within {0:?}; the request was abandoned and will be retried")]
pub struct DeadlineExceeded(pub Duration);

/// A tower layer bounding every request that is not a watch to `deadline`.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    pub deadline: Duration,
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline { inner, deadline: self.deadline }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    deadline: Duration,
}

impl<S, B> tower::Service<Request<B>> for Deadline<S>
where
    S: tower::Service<Request<B>>,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let bounded = (!is_watch(&request)).then_some(self.deadline);
        let response = self.inner.call(request);
        Box::pin(async move {
            match bounded {
                None => response.await.map_err(Into::into),
                Some(deadline) => match tokio::time::timeout(deadline, response).await {
                    Ok(answered) => answered.map_err(Into::into),
                    Err(_) => Err(Box::new(DeadlineExceeded(deadline)) as tower::BoxError),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    fn request(uri: &str) -> Request<()> {
        Request::builder().uri(uri).body(()).unwrap()
    }

    #[test]
    fn watches_are_recognised() {
        let cases = [
            ("/api/v1/configmaps?watch=true&resourceVersion=5", true),
            ("/api/v1/configmaps?resourceVersion=5&watch=1", true),
            ("/api/v1/configmaps?watch=false", false),
            ("/api/v1/configmaps?limit=500", false),
            ("/api/v1/namespaces/watch=true/configmaps", false),
            ("/api/v1/configmaps?allowWatchBookmarks=true", false),
        ];
        for (uri, want) in cases {
            assert_eq!(is_watch(&request(uri)), want, "{uri}");
        }
    }

    /// A server that never answers: a plain request is cut off at the deadline, a watch waits.
    #[tokio::test(start_paused = true)]
    async fn a_request_without_answer_is_cut_off_and_a_watch_is_not() {
        let never = tower::service_fn(|_: Request<()>| std::future::pending::<Result<(), tower::BoxError>>());
        let mut svc = DeadlineLayer { deadline: Duration::from_secs(60) }.layer(never);
        let started = tokio::time::Instant::now();
        let err = svc.ready().await.unwrap().call(request("/api/v1/configmaps/a")).await.unwrap_err();
        assert!(err.is::<DeadlineExceeded>(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        let watch = svc.ready().await.unwrap().call(request("/api/v1/configmaps?watch=true"));
        let waited = tokio::time::timeout(Duration::from_secs(3600), watch).await;
        assert!(waited.is_err(), "the watch was cut off");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_passes_through() {
        let quick = tower::service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(59)).await;
            Ok::<_, tower::BoxError>(7)
        });
        let mut svc = DeadlineLayer { deadline: Duration::from_secs(60) }.layer(quick);
        assert_eq!(svc.ready().await.unwrap().call(request("/api/v1/configmaps/a")).await.unwrap(), 7);
    }
}
