//! The `tmc` binary's behaviour on bad input and an unreachable kcp.

use std::sync::Arc;
use std::time::Duration;

use crate::env::{self, TestResult, Tmc, eventually, free_port};
use crate::{PROVIDER, World, ensure};

pub async fn manager_waits_for_unreachable_kcp(w: Arc<World>) -> TestResult {
    // The admin kubeconfig, pointed at a port nothing listens on.
    let kubeconfig = std::fs::read_to_string(&w.kcp.kubeconfig)?;
    let dead = kubeconfig.replace(&format!("127.0.0.1:{}", w.kcp.port), &format!("127.0.0.1:{}", free_port()));
    let path = w.kcp.dir.path().join("unreachable.kubeconfig");
    std::fs::write(&path, dead)?;
    let path_text = path.display().to_string();
    let log = w.kcp.dir.path().join("unreachable-manager.log");
    let mut manager = Tmc::manager(&path_text, "root:tmc", &["--cluster-address-allow", "127.0.0.1/32"], log).process;
    eventually("a log line saying what the manager waits for", Duration::from_secs(20), || async {
        let out = manager.output();
        Ok((out.contains("waiting for kcp") && out.contains("retry_in")).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(manager.running(), "the manager must keep retrying, not exit:\n{}", manager.output());
    let retries = manager.output().matches("waiting for kcp").count();
    ensure!(retries >= 2, "expected repeated attempts with backoff, saw {retries}");
    Ok(())
}

pub async fn invalid_input_says_what_to_fix(w: Arc<World>) -> TestResult {
    let kubeconfig = w.kcp.kubeconfig.display().to_string();
    // Held for the whole test: a manager told to listen there must fail at once.
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken = held.local_addr()?.to_string();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["manager", "--workspace", "Root:Team"], 2, "lower-case letters"),
        (vec!["manager", "--workspace", "root", "--heartbeat-threshold", "soon"], 2, "e.g. 500ms, 40s"),
        (vec!["manager", "--workspace", "root", "--heartbeat-threshold", "0s"], 1, "greater than zero"),
        (
            vec!["install", "--kubeconfig", "/nonexistent/kubeconfig", "--workspace", "root:x"],
            1,
            "fix: pass --kubeconfig",
        ),
        (
            vec!["install", "--kubeconfig", &kubeconfig, "--workspace", "root:no-such-workspace"],
            1,
            "--create-workspace",
        ),
        (vec!["install", "--kubeconfig", &kubeconfig], 2, "--workspace"),
        (
            vec!["manager", "--kubeconfig", &kubeconfig, "--workspace", PROVIDER, "--metrics-bind-address", &taken],
            1,
            "--metrics-bind-address: cannot listen on",
        ),
        (vec!["manager", "--workspace", "root", "--health-bind-address", "8081"], 2, "invalid socket address"),
        (vec!["manager", "--workspace", "root", "--shards", "root,Shard_2"], 1, "\"Shard_2\" is not a shard name"),
    ];
    for (args, want_code, want_text) in cases {
        let (code, out, err) = env::tmc(&args);
        ensure!(code == want_code, "tmc {args:?} exited {code}, want {want_code}: {out}{err}");
        ensure!(err.contains(want_text), "tmc {args:?} should say {want_text:?}, said:\n{err}");
    }
    Ok(())
}
