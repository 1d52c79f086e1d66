use std::time::Duration;

use super::*;
use crate::net::address::Cidr;

fn dialer(allow: &[&str], kcp: &[&str]) -> Dialer {
    let policy = AddressPolicy {
        allow: allow.iter().map(|c| c.parse::<Cidr>().unwrap()).collect(),
        deny: vec![],
        allow_plain_http: false,
    };
    let endpoints = KcpEndpoints::default();
    kcp.iter().for_each(|u| endpoints.add_url(&u.parse().unwrap()));
    Dialer::new(policy, endpoints)
}

#[tokio::test]
async fn check_server_table() {
    let d = dialer(&["127.0.0.1/32"], &["https://127.0.0.1:6443", "https://127.0.0.1:7443/services/apiexport/x"]);
    let cases: &[(&str, Result<(), &str>)] = &[
        ("https://10.0.0.1:6443", Ok(())),
        ("https://127.0.0.1:7000", Ok(())),
        ("https://[::ffff:127.0.0.1]:7000", Ok(())),
        ("https://127.0.0.2:6443", Err("the server 127.0.0.2:6443 is refused: 127.0.0.2 is a loopback address")),
        ("https://169.254.169.254", Err("169.254.169.254 is a link-local address")),
        ("https://0.0.0.0:6443", Err("0.0.0.0 is an unspecified address")),
        ("https://127.0.0.1:6443", Err("127.0.0.1:6443 is kcp's own endpoint 127.0.0.1:6443")),
        ("https://127.0.0.1:7443/clusters/root", Err("kcp's own endpoint 127.0.0.1:7443")),
        ("https://[::1]:6443", Err("::1 is a loopback address")),
        ("http://10.0.0.1:8080", Err("plain http://")),
        ("https://localhost:6443", Err("refused")),
        ("https://no-such-host.invalid:6443", Err("does not resolve")),
    ];
    for (server, want) in cases {
        let got = d.check_server(&server.parse().unwrap()).await;
        match (want, got) {
            (Ok(()), Ok(())) => {}
            (Err(fragment), Err(e)) => assert!(e.to_string().contains(fragment), "{server}: {e}"),
            (want, got) => panic!("{server}: want {want:?}, got {got:?}"),
        }
    }
}

/// The connector refuses before any packet leaves: a listener on a refused address sees nothing.
#[tokio::test]
async fn connector_dials_only_allowed_addresses() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move {
        let mut n = 0;
        while tokio::time::timeout(Duration::from_millis(500), listener.accept()).await.is_ok_and(|r| r.is_ok()) {
            n += 1;
        }
        n
    });
    let refusing = dialer(&[], &[]);
    for host in ["127.0.0.1", "localhost"] {
        let uri: Uri = format!("https://{host}:{port}").parse().unwrap();
        let err = refusing.connector(&uri, None).oneshot(uri.clone()).await.expect_err(host);
        let cause = find_cause::<DialError>(err.as_ref()).unwrap_or_else(|| panic!("{host}: {err}"));
        assert!(cause.is_refusal(), "{host}: {cause}");
    }
    let allowing = dialer(&["127.0.0.1/32"], &[]);
    for host in ["127.0.0.1", "localhost"] {
        let uri: Uri = format!("https://{host}:{port}").parse().unwrap();
        allowing.connector(&uri, None).oneshot(uri).await.unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    assert_eq!(accepted.await.unwrap(), 2, "only the two allowed dials reach the listener");
}
