//! Liveness, readiness and the routing of the operational endpoints.

use std::sync::{Arc, Mutex};

use http::{Method, Response, StatusCode, header};

use super::metrics::Metrics;

/// Whether the process is ready for work, shared between the code that gets it ready and
/// `/readyz`. Cloning is cheap; all clones see the same state.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<Mutex<Option<String>>>);

impl Readiness {
    /// Not ready, waiting for `what` (said in the 503 body of `/readyz`).
    pub fn waiting_for(what: impl Into<String>) -> Self {
        Readiness(Arc::new(Mutex::new(Some(what.into()))))
    }

    pub fn set_ready(&self) {
        *self.lock() = None;
    }

    /// Not ready (again), waiting for `what`.
    pub fn set_waiting_for(&self, what: impl Into<String>) {
        *self.lock() = Some(what.into());
    }

    pub fn is_ready(&self) -> bool {
        self.lock().is_none()
    }

    /// What readiness waits for, or `None` when ready.
    pub fn waiting(&self) -> Option<String> {
        self.lock().clone()
    }

    // A panic while holding the lock cannot leave the Option half-written: use it anyway.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const PLAIN_TEXT: &str = "text/plain; charset=utf-8";

fn text(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, content_type.parse().expect("valid content type"));
    response
}

/// The answer to one request; the same for the metrics and the health address.
pub fn respond(method: &Method, path: &str, metrics: &Metrics, readiness: &Readiness) -> Response<String> {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return text(StatusCode::NOT_FOUND, PLAIN_TEXT, "not found: try /metrics, /healthz or /readyz\n".into());
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN_TEXT, "only GET and HEAD\n".into());
        r.headers_mut().insert(header::ALLOW, "GET, HEAD".parse().expect("valid header"));
        return r;
    }
    match path {
        "/metrics" => text(StatusCode::OK, Metrics::CONTENT_TYPE, metrics.encode()),
        // Answering at all is the liveness signal: the runtime is not wedged.
        "/healthz" => text(StatusCode::OK, PLAIN_TEXT, "ok\n".into()),
        _ => match readiness.waiting() {
            None => text(StatusCode::OK, PLAIN_TEXT, "ok\n".into()),
            Some(what) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN_TEXT, format!("not ready: waiting for {what}\n")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let metrics = Metrics::new();
        let waiting = Readiness::waiting_for("kcp");
        let ready = Readiness::waiting_for("kcp");
        ready.set_ready();
        let cases: &[(Method, &str, &Readiness, StatusCode, &str)] = &[
            (Method::GET, "/healthz", &waiting, StatusCode::OK, "ok"),
            (Method::GET, "/readyz", &waiting, StatusCode::SERVICE_UNAVAILABLE, "waiting for kcp"),
            (Method::GET, "/readyz", &ready, StatusCode::OK, "ok"),
            (Method::GET, "/metrics", &waiting, StatusCode::OK, "# TYPE process_"),
            (Method::HEAD, "/healthz", &waiting, StatusCode::OK, "ok"),
            (Method::GET, "/", &ready, StatusCode::NOT_FOUND, "try /metrics"),
            (Method::GET, "/metrics/extra", &ready, StatusCode::NOT_FOUND, "not found"),
            (Method::POST, "/healthz", &ready, StatusCode::METHOD_NOT_ALLOWED, "only GET"),
            (Method::DELETE, "/nope", &ready, StatusCode::NOT_FOUND, "not found"),
        ];
        for (method, path, readiness, status, body) in cases {
            let r = respond(method, path, &metrics, readiness);
            assert_eq!(r.status(), *status, "{method} {path}");
            assert!(r.body().contains(body), "{method} {path}: {:?}", r.body());
        }
        let r = respond(&Method::GET, "/metrics", &metrics, &ready);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; version=0.0.4");
    }

    #[test]
    fn readiness_is_shared_by_clones() {
        let a = Readiness::waiting_for("the workspace");
        let b = a.clone();
        assert!(!b.is_ready());
        a.set_ready();
        assert!(b.is_ready());
        b.set_waiting_for("kcp again");
        assert_eq!(a.waiting().as_deref(), Some("kcp again"));
    }
}
