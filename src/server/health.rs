//! Liveness, readiness and the routing of the operational endpoints.

use std::sync::{Arc, Mutex};

use http::{Method, Response, StatusCode, header};

use super::metrics::Metrics;

/// Whether the process is ready for work, shared between the code that gets it ready and
/// `/readyz`. Cloning is cheap; all clones see the same state.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<Mutex<State>>);

#[derive(Clone, Debug)]
enum State {
    Waiting(String),
    /// Ready; the note (e.g. "standby") is said in the 200 body.
    Ready(Option<String>),
}

impl Readiness {
    /// Not ready, waiting for `what` (said in the 503 body of `/readyz`).
    pub fn waiting_for(what: impl Into<String>) -> Self {
        Readiness(Arc::new(Mutex::new(State::Waiting(what.into()))))
    }

    pub fn set_ready(&self) {
        *self.lock() = State::Ready(None);
    }

    /// Ready, in a role worth saying: `/readyz` answers `ok: <note>`.
    pub fn set_ready_as(&self, note: impl Into<String>) {
        *self.lock() = State::Ready(Some(note.into()));
    }

    /// Not ready (again), waiting for `what`.
    pub fn set_waiting_for(&self, what: impl Into<String>) {
        *self.lock() = State::Waiting(what.into());
    }

    pub fn is_ready(&self) -> bool {
        matches!(*self.lock(), State::Ready(_))
    }

    /// What readiness waits for, or `None` when ready.
    pub fn waiting(&self) -> Option<String> {
        match &*self.lock() {
            State::Waiting(what) => Some(what.clone()),
            State::Ready(_) => None,
        }
    }

    // A panic while holding the lock cannot leave the state half-written: use it anyway.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
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
        // One read of the state, so the answer cannot mix two states.
        _ => match readiness.lock().clone() {
            State::Waiting(what) => {
                text(StatusCode::SERVICE_UNAVAILABLE, PLAIN_TEXT, format!("not ready: waiting for {what}\n"))
            }
            State::Ready(Some(note)) => text(StatusCode::OK, PLAIN_TEXT, format!("ok: {note}\n")),
            State::Ready(None) => text(StatusCode::OK, PLAIN_TEXT, "ok\n".into()),
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
        let standby = Readiness::waiting_for("kcp");
        standby.set_ready_as("standby");
        let cases: &[(Method, &str, &Readiness, StatusCode, &str)] = &[
            (Method::GET, "/healthz", &waiting, StatusCode::OK, "ok"),
            (Method::GET, "/readyz", &waiting, StatusCode::SERVICE_UNAVAILABLE, "waiting for kcp"),
            (Method::GET, "/readyz", &ready, StatusCode::OK, "ok"),
            (Method::GET, "/readyz", &standby, StatusCode::OK, "ok: standby"),
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
