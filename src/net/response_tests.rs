use super::*;
use tower::{Layer, ServiceExt};

#[test]
fn bounded_line_table() {
    let long = "x".repeat(500);
    let cases: Vec<(&str, usize, String)> = vec![
        ("plain words", 200, "plain words".into()),
        ("two\nlines\r\nand\ttabs", 200, "two lines and tabs".into()),
        ("  padded   out  ", 200, "padded out".into()),
        ("esc\u{1b}[31mred", 200, "esc [31mred".into()),
        ("bidi\u{202e}txet", 200, "bidi txet".into()),
        ("zero\u{200b}width", 200, "zero width".into()),
        ("abcdef", 3, "abc…".into()),
        ("abc", 3, "abc".into()),
        ("ab cdef", 3, "ab…".into()),
        (&long, 200, format!("{}…", "x".repeat(200))),
        ("", 200, String::new()),
    ];
    for (input, max, want) in cases {
        assert_eq!(bounded_line(input, max), want, "{input:?}");
    }
}

#[test]
fn reason_word_table() {
    let cases = [
        ("NotFound", "NotFound"),
        ("Forbidden", "Forbidden"),
        ("", ""),
        ("Not Found", ""),
        ("<html>", ""),
        ("9Lives", ""),
        ("Évil", ""),
        (&*"A".repeat(65), ""),
    ];
    for (input, want) in cases {
        assert_eq!(reason_word(input), want, "{input:?}");
    }
}

#[test]
fn error_status_table() {
    let status = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":403,"reason":"Forbidden","message":"secrets is forbidden:\nUser \"x\" cannot list"}"#;
    let huge_message = format!(r#"{{"kind":"Status","reason":"Invalid","message":"{}"}}"#, "m".repeat(5000));
    let html = b"<html><body>MARKER-1234 bad gateway</body></html>";
    let json_not_status = br#"{"error":"MARKER-1234"}"#;
    let cases: Vec<(u16, &[u8], bool, &str, &str)> = vec![
        (403, status, true, "Forbidden", "secrets is forbidden: User \"x\" cannot list"),
        (422, huge_message.as_bytes(), true, "Invalid", "mmmm"),
        (502, html, true, "", "HTTP 502 with a non-Kubernetes body of 49 bytes"),
        (500, json_not_status, true, "", "HTTP 500 with a non-Kubernetes body of 23 bytes"),
        (503, b"", true, "", "HTTP 503 with an empty body"),
        (502, &html[..10], false, "", "HTTP 502 with a non-Kubernetes body of more than 65536 bytes"),
        (404, br#"{"kind":"Status","reason":"bad reason!"}"#, true, "", "HTTP 404"),
    ];
    for (code, body, complete, reason, message) in cases {
        let got = error_status(code, body, complete);
        assert_eq!(got.code, code);
        assert_eq!(got.reason, reason, "{message}");
        assert!(got.message.starts_with(message), "{:?} should start with {message:?}", got.message);
        assert!(got.message.chars().count() <= MESSAGE_MAX + 1, "{}", got.message.len());
        assert!(!got.message.contains("MARKER"), "{}", got.message);
    }
}

#[test]
fn watch_is_recognised() {
    let cases = [
        ("/api/v1/namespaces?watch=true&resourceVersion=1", true),
        ("/api/v1/namespaces?resourceVersion=1&watch=1", true),
        ("/api/v1/namespaces?limit=500", false),
        ("/api/v1/namespaces/watch=true", false),
        ("/api/v1/namespaces", false),
    ];
    for (uri, want) in cases {
        assert_eq!(is_watch(&uri.parse().unwrap()), want, "{uri}");
    }
}

/// A service answering every request with `status`, `content_type` and `chunks` of body.
fn answering(
    status: u16,
    content_type: &'static str,
    chunks: Vec<Vec<u8>>,
) -> impl tower::Service<Request<()>, Response = Response<Bounded>, Error = BoxError> {
    let inner = tower::service_fn(move |_req: Request<()>| {
        let chunks = chunks.clone();
        async move {
            let frames =
                futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c)))));
            let body = http_body_util::StreamBody::new(frames);
            let mut res = Response::new(body);
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
            if !content_type.is_empty() {
                res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            }
            Ok::<_, BoxError>(res)
        }
    });
    BoundedResponsesLayer { max_bytes: 1024 }.layer(inner)
}

async fn collect(
    svc: impl tower::Service<Request<()>, Response = Response<Bounded>, Error = BoxError>,
    uri: &str,
) -> Result<(u16, Vec<u8>), String> {
    let res = svc.oneshot(Request::get(uri).body(()).unwrap()).await.map_err(|e| e.to_string())?;
    let code = res.status().as_u16();
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((code, body.to_vec()))
}

#[tokio::test]
async fn responses_are_bounded() {
    let kib = |n: usize| vec![b'a'; n * 1024];
    // Small JSON passes through unchanged.
    let got = collect(answering(200, "application/json", vec![b"{\"kind\":\"List\"}".to_vec()]), "/api").await;
    assert_eq!(got, Ok((200, b"{\"kind\":\"List\"}".to_vec())));
    // A big one is cut off, however it is chunked.
    let got = collect(answering(200, "application/json", vec![kib(1), kib(1)]), "/api").await;
    assert!(got.as_ref().is_err_and(|e| e.contains("larger than")), "{got:?}");
    // Not JSON: refused without reading it.
    let got = collect(answering(200, "text/html", vec![b"<html>MARKER</html>".to_vec()]), "/api").await;
    assert_eq!(got, Err("HTTP 200 with a non-Kubernetes body (not JSON)".into()));
    // An error page becomes a Status the manager wrote.
    let (code, body) =
        collect(answering(502, "text/html", vec![b"<html>MARKER</html>".to_vec()]), "/api").await.unwrap();
    assert_eq!(code, 502);
    let status: kube::core::Status = serde_json::from_slice(&body).unwrap();
    assert_eq!(status.message, "HTTP 502 with a non-Kubernetes body of 19 bytes");
    // A watch may stream for ever in lines, but no line may pass the limit.
    let lines: Vec<Vec<u8>> =
        (0..10).map(|_| [kib(0), b"{\"type\":\"ADDED\"}\n".to_vec(), vec![b' '; 900]].concat()).collect();
    let got = collect(answering(200, "application/json", lines), "/api/v1/pods?watch=true").await;
    assert!(got.is_ok(), "{got:?}");
    let got = collect(answering(200, "application/json", vec![kib(1), kib(1)]), "/api/v1/pods?watch=true").await;
    assert!(got.as_ref().is_err_and(|e| e.contains("larger than")), "{got:?}");
}
