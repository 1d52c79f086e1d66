//! What comes back from a push-mode cluster — or from whatever a tenant's kubeconfig points at —
//! is bounded and described before anything else sees it.
//!
//! [`BoundedResponsesLayer`] sits right above the connection pool of every push-mode client:
//! - an error answer (4xx/5xx) is read up to [`ERROR_BODY_MAX`] bytes and replaced by a Status
//!   the manager wrote itself: the HTTP code, a Kubernetes `reason` word, and the server's Status
//!   message bounded to [`MESSAGE_MAX`] printable characters on one line; a body that is not a
//!   Kubernetes Status is described ("HTTP 502 with a non-Kubernetes body of 1234 bytes"), never
//!   quoted. kube-client therefore never holds, logs or returns the remote text;
//! - a successful non-watch answer must say it is JSON, and is cut off with
//!   [`ResponseError::TooLarge`] once it passes the limit, instead of being read to exhaustion;
//! - a watch stream may run for ever, but no single line (one event) may pass the limit:
//!   kube-client buffers a line until its newline, so that bounds what one watch holds.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tower::BoxError;

/// The longest server-supplied message kept (characters).
pub const MESSAGE_MAX: usize = 200;
/// Error answers are Status objects of a few hundred bytes; more than this is not one.
pub const ERROR_BODY_MAX: usize = 64 * 1024;
/// Default for `--cluster-max-response-mib`.
pub const DEFAULT_MAX_RESPONSE_MIB: u32 = 32;

/// `text` as one line of at most `max` printable characters: control and invisible formatting
/// characters (newlines, escapes, bidi overrides, zero-width marks) become spaces, runs of
/// spaces collapse, and a cut is marked with `…`. For any text that reaches a condition,
/// Event or log line from outside the manager.
pub fn bounded_line(text: &str, max: usize) -> String {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
    };
    let mut out = String::new();
    let mut count = 0;
    for c in text.chars().map(|c| if invisible(c) || c.is_whitespace() { ' ' } else { c }) {
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if count == max {
            let kept = out.trim_end().len();
            out.truncate(kept);
            out.push('…');
            return out;
        }
        out.push(c);
        count += 1;
    }
    out.trim_end().to_string()
}

/// A Kubernetes Status `reason` if `s` looks like one (a CamelCase word, e.g. `NotFound`),
/// otherwise empty: a reason is a machine word, and anything else is not kept.
pub fn reason_word(s: &str) -> &str {
    let word = !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric());
    if word { s } else { "" }
}

/// The Status the manager hands on for an error answer with HTTP `code` and `body` (`complete`
/// is false when the body was longer than [`ERROR_BODY_MAX`] and only its start was read).
pub fn error_status(code: u16, body: &[u8], complete: bool) -> kube::core::Status {
    let parsed = complete
        .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
        .flatten()
        .filter(|v| v["kind"] == "Status");
    let (message, reason) = match &parsed {
        Some(v) => (
            bounded_line(v["message"].as_str().unwrap_or_default(), MESSAGE_MAX),
            reason_word(v["reason"].as_str().unwrap_or_default()).to_string(),
        ),
        None if body.is_empty() => (format!("HTTP {code} with an empty body"), String::new()),
        None if !complete => {
            (format!("HTTP {code} with a non-Kubernetes body of more than {ERROR_BODY_MAX} bytes"), String::new())
        }
        None => (format!("HTTP {code} with a non-Kubernetes body of {} bytes", body.len()), String::new()),
    };
    let mut status = kube::core::Status::failure(&message, &reason).with_code(code);
    if status.message.is_empty() {
        status.message = format!("HTTP {code}");
    }
    status
}

/// Why a cluster's answer was not handed on.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("the cluster's response is larger than {}; it was cut off, not read to the end", size(*.limit))]
    TooLarge { limit: u64 },
    #[error("HTTP {code} with a non-Kubernetes body (not JSON)")]
    NotKubernetes { code: u16 },
}

fn size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) { format!("{} MiB", bytes / MIB) } else { format!("{bytes} bytes") }
}

/// Whether `uri` asks for a watch stream (`?watch=true`, as kube-client sends it).
fn is_watch(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

fn says_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"))
}

/// See the module docs.
#[derive(Clone, Copy, Debug)]
pub struct BoundedResponsesLayer {
    pub max_bytes: u64,
}

impl<S> tower::Layer<S> for BoundedResponsesLayer {
    type Service = BoundedResponses<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BoundedResponses { inner, max_bytes: self.max_bytes }
    }
}

#[derive(Clone, Debug)]
pub struct BoundedResponses<S> {
    inner: S,
    max_bytes: u64,
}

type Bounded = UnsyncBoxBody<Bytes, BoxError>;

impl<S, Req, B> tower::Service<Request<Req>> for BoundedResponses<S>
where
    S: tower::Service<Request<Req>, Response = Response<B>, Error = BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Bounded>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Bounded>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Req>) -> Self::Future {
        let watch = is_watch(req.uri());
        let max = self.max_bytes;
        let answer = self.inner.call(req);
        Box::pin(async move { bound(answer.await?, watch, max).await })
    }
}

async fn bound<B>(res: Response<B>, watch: bool, max: u64) -> Result<Response<Bounded>, BoxError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = res.into_parts();
    let code = parts.status.as_u16();
    if parts.status.is_client_error() || parts.status.is_server_error() {
        let (read, complete) = read_at_most(body, ERROR_BODY_MAX).await?;
        let status = error_status(code, &read, complete);
        let json = serde_json::to_vec(&status).map_err(BoxError::from)?;
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = http_body_util::Full::new(Bytes::from(json)).map_err(|never| match never {});
        return Ok(Response::from_parts(parts, body.boxed_unsync()));
    }
    let empty = parts.headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0");
    if !watch && !empty && !says_json(&parts.headers) {
        return Err(ResponseError::NotKubernetes { code }.into());
    }
    if !watch && body.size_hint().lower() > max {
        return Err(ResponseError::TooLarge { limit: max }.into());
    }
    let capped = Capped { inner: body, max, seen: 0, per_line: watch };
    Ok(Response::from_parts(parts, capped.boxed_unsync()))
}

/// Reads at most `max` bytes of `body`: (what was read, whether that was all of it).
async fn read_at_most<B>(body: B, max: usize) -> Result<(Vec<u8>, bool), BoxError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Into::into)?.into_data() else { continue };
        if read.len() + data.len() > max {
            read.extend_from_slice(&data[..max - read.len()]);
            return Ok((read, false));
        }
        read.extend_from_slice(&data);
    }
    Ok((read, true))
}

/// A body that fails once more than `max` bytes arrive — in all (`per_line` false) or since
/// the last newline (`per_line`, for watch streams).
struct Capped<B> {
    inner: B,
    max: u64,
    seen: u64,
    per_line: bool,
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            match data.iter().position(|b| *b == b'\n') {
                // The line that ends here started in an earlier chunk: it counts whole.
                Some(first) if this.per_line && this.seen + first as u64 <= this.max => {
                    let last = data.iter().rposition(|b| *b == b'\n').unwrap_or(first);
                    this.seen = (data.len() - last - 1) as u64;
                }
                Some(first) if this.per_line => this.seen += first as u64,
                _ => this.seen += data.len() as u64,
            }
            if this.seen > this.max {
                return Poll::Ready(Some(Err(ResponseError::TooLarge { limit: this.max }.into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
