//! The shared test environment: one real kcp server for the whole run, started on loopback with
//! a temporary root directory and free ports, and helpers to drive it like a user would.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kcp_tmc::kcp::{ClusterClients, WorkspacePath, workspace};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Fails the test with a message when `cond` is false.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// A free loopback port.
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), so that a server the
/// chaos suite kills and starts again on its port never finds it taken: a client's outgoing
/// connection draws its local port from that range, and once did take a killed kube-apiserver's.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let below: u32 = ephemeral.and_then(|r| r.split_whitespace().next()?.parse().ok()).unwrap_or(32_768);
    if below > LOWEST + 1_000 {
        // Spread by process and time so that concurrent test binaries rarely probe the same ports.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seed = nanos.subsec_nanos() ^ (std::process::id() << 8);
        for _ in 0..1_000 {
            let step = NEXT.fetch_add(7_919, std::sync::atomic::Ordering::Relaxed);
            let port = LOWEST + seed.wrapping_add(step) % (below - LOWEST);
            if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
}

/// A kcp user (not an admin) known to the shared kcp through its token file: `rbac.rs` runs a
/// manager as this user with only the RBAC of config/kcp-rbac.
pub const MANAGER_USER: &str = "kcp-tmc-manager";
pub const MANAGER_USER_TOKEN: &str = "kcp-tmc-manager-e2e-token";

/// A kcp server process, killed on drop.
pub struct Kcp {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub kubeconfig: PathBuf,
}

impl Drop for Kcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kcp binary: `$TMC_KCP_BIN`, or built (and cached) by `tests/servers.sh kcp`.
fn kcp_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("TMC_KCP_BIN") {
        return bin.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers.sh");
    let out = Command::new(script).arg("kcp").stderr(Stdio::inherit()).output().expect("run tests/servers.sh");
    assert!(out.status.success(), "building kcp failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl Kcp {
    pub async fn start() -> Kcp {
        Self::start_on(free_port(), &[]).await
    }

    /// Starts kcp on `port` with `extra` flags (the chaos suite puts a proxy in front of it and
    /// advertises that proxy as the virtual-workspace URL).
    pub async fn start_on(port: u16, extra: &[String]) -> Kcp {
        let bin = kcp_binary();
        let dir = tempfile::Builder::new()
            .prefix("tmc-e2e-kcp")
            .disable_cleanup(std::env::var_os("TMC_E2E_KEEP").is_some())
            .tempdir()
            .unwrap();
        let root = dir.path().join(".kcp");
        let log = std::fs::File::create(dir.path().join("kcp.log")).unwrap();
        // Static token users (kcp's own e2e framework does the same); the admin keeps its token.
        let tokens = dir.path().join("auth-tokens.csv");
        std::fs::write(&tokens, format!("{MANAGER_USER_TOKEN},{MANAGER_USER},{MANAGER_USER}-uid\n")).unwrap();
        let child = Command::new(&bin)
            .arg("start")
            .arg(format!("--root-directory={}", root.display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--embedded-etcd-client-port={}", free_port()))
            .arg(format!("--embedded-etcd-peer-port={}", free_port()))
            .arg("--embedded-etcd-wal-size-bytes=5000")
            .arg(format!("--token-auth-file={}", tokens.display()))
            .args(extra)
            .env("UNSAFE_E2E_HACK_DISABLE_ETCD_FSYNC", "true")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let kcp = Kcp { child, port, kubeconfig: root.join("admin.kubeconfig"), dir };
        kcp.wait_ready().await;
        kcp
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(180);
        // kcp writes the file in more than one step: wait until it names its current context.
        let written = |path: &Path| {
            kube::config::Kubeconfig::read_from(path).is_ok_and(|k| k.current_context.is_some_and(|c| !c.is_empty()))
        };
        while !written(&self.kubeconfig) {
            assert!(Instant::now() < deadline, "kcp wrote no admin.kubeconfig; see {}", self.log().display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The tenancy API becomes usable a little after /readyz: poll the root workspace list.
        let clients = self.clients().await;
        let root = WorkspacePath::root();
        loop {
            let ready = workspace::resolve(&clients, &"root:none".parse().unwrap()).await;
            if matches!(ready, Err(workspace::WorkspaceError::NotFound { .. })) {
                break;
            }
            assert!(Instant::now() < deadline, "kcp not ready: {ready:?}; see {}", self.log().display());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!("kcp ready on port {} after {:?} ({root})", self.port, started.elapsed());
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("kcp.log")
    }

    pub async fn config(&self) -> kube::Config {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()
    }

    pub async fn clients(&self) -> ClusterClients {
        ClusterClients::for_server(&self.config().await).unwrap()
    }

    /// Creates the workspace `path` through `clients`, binds kcp-tmc's export there with the
    /// sample APIBinding (`config/samples/`) and waits up to `wait` until it serves; returns
    /// the workspace's logical cluster.
    pub async fn bind_sample(
        &self,
        clients: &ClusterClients,
        path: &str,
        wait: Duration,
    ) -> Result<kcp_tmc::kcp::LogicalClusterName, String> {
        let parsed = path.parse().map_err(|e| format!("{e}"))?;
        let cluster = workspace::ensure(clients, &parsed, Duration::from_secs(60)).await.map_err(|e| e.to_string())?;
        let binding =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples/apibinding.yaml")).unwrap();
        self.kubectl(path, &["apply", "-f", "-"], Some(&binding))?;
        eventually(&format!("synctargets served in {path}"), wait, || async {
            Ok(self.kubectl(path, &["get", "synctargets"], None).ok().map(|_| ()))
        })
        .await?;
        Ok(cluster)
    }

    pub fn server(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/clusters/{path}", self.port)
    }

    /// Runs kubectl against the workspace `path`, feeding `stdin`; returns stdout.
    pub fn kubectl(&self, path: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        kubectl_at(&self.kubeconfig, &self.server(path), args, stdin)
            .map_err(|e| format!("kubectl {args:?} in {path}: {e}"))
    }
}

/// Runs kubectl with `kubeconfig` against `server`, feeding `stdin`; returns stdout, or stderr
/// as the error.
pub fn kubectl_at(kubeconfig: &Path, server: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--server={server}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kubectl: {e}"))?;
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).map_err(|e| e.to_string())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A process of the `tmc` binary under test, killed on drop, logging to a file.
pub struct Tmc {
    child: Child,
    /// Started under `TMC_WRAP` (a profiler), in a process group of its own: the wrapper's
    /// child is the real `tmc`, and only signalling the group reaches both.
    wrapped: bool,
    pub log: PathBuf,
}

/// A `tmc manager` started by [`Tmc::manager`], with its operational addresses (`host:port`).
pub struct ManagerProcess {
    pub process: Tmc,
    pub metrics: String,
    pub health: String,
}

impl Tmc {
    /// `tmc manager --kubeconfig <kubeconfig> --workspace <workspace> <extra…>` on free loopback
    /// ports for its metrics and health endpoints: never the defaults, since other managers and
    /// syncers run beside it.
    pub fn manager(kubeconfig: &str, workspace: &str, extra: &[&str], log: PathBuf) -> ManagerProcess {
        Self::manager_with_env(kubeconfig, workspace, extra, log, &[])
    }

    /// [`Tmc::manager`] with extra environment, which wins over [`Tmc::spawn`]'s (e.g. `RUST_LOG`).
    pub fn manager_with_env(
        kubeconfig: &str,
        workspace: &str,
        extra: &[&str],
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> ManagerProcess {
        let (metrics, health) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
        let mut args = vec!["manager", "--kubeconfig", kubeconfig, "--workspace", workspace];
        args.extend(["--metrics-bind-address", &metrics, "--health-bind-address", &health]);
        args.extend(extra);
        let process = Tmc::spawn_with_env(&args, log, env);
        ManagerProcess { process, metrics, health }
    }

    pub fn spawn(args: &[&str], log: PathBuf) -> Tmc {
        Self::spawn_with_env(args, log, &[])
    }

    /// [`Tmc::spawn`] with extra environment; `RUST_LOG` there replaces the default.
    pub fn spawn_with_env(args: &[&str], log: PathBuf, env: &[(&str, &str)]) -> Tmc {
        let file = std::fs::File::create(&log).unwrap();
        // `TMC_WRAP="heaptrack -o /tmp/heap/tmc"` runs every tmc process under a profiler.
        let wrap: Vec<String> =
            std::env::var("TMC_WRAP").unwrap_or_default().split_whitespace().map(String::from).collect();
        let mut command = match wrap.split_first() {
            Some((tool, tool_args)) => {
                let mut c = Command::new(tool);
                c.args(tool_args).arg(env!("CARGO_BIN_EXE_tmc"));
                std::os::unix::process::CommandExt::process_group(&mut c, 0);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_tmc")),
        };
        let child = command
            .args(args)
            .env("RUST_LOG", "info,kcp_tmc=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Tmc { child, wrapped: !wrap.is_empty(), log }
    }

    /// The pid of the `tmc` process itself: under `TMC_WRAP`, the member of the wrapper's
    /// process group running the tmc binary (the wrapper's own pid until it has started it), so
    /// that `/proc/<pid>` figures and signals are the manager's, not the profiler's.
    pub fn pid(&self) -> u32 {
        let wrapper = self.child.id();
        if !self.wrapped {
            return wrapper;
        }
        let binary = Path::new(env!("CARGO_BIN_EXE_tmc")).canonicalize().ok();
        let in_group = |pid: u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) state ppid pgrp …`: comm may hold spaces, so split after its `)`.
            let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
            fields.get(2) == Some(&wrapper.to_string().as_str())
        };
        let is_tmc = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).ok() == binary;
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| pid != wrapper && in_group(pid) && is_tmc(pid))
            .unwrap_or(wrapper)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running (not crashed)?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal, e.g. `KILL` or `TERM`, to the `tmc` process (not a wrapper around it).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status();
    }

    /// What `kill` addresses to reach every process of this one: under `TMC_WRAP` the whole
    /// process group (`-<pgid>`), so a profiler's children do not outlive the run.
    fn kill_target(&self) -> String {
        if self.wrapped { format!("-{}", self.child.id()) } else { self.child.id().to_string() }
    }

    /// The exit code once the process has exited (`None` while it runs or if a signal ended it).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }
}

impl Drop for Tmc {
    /// SIGTERM to `tmc` first, so it shuts down cleanly (and coverage data gets written), then
    /// SIGKILL if it has not exited within five seconds. Under `TMC_WRAP` the profiler gets a
    /// minute to write its data once `tmc` has exited, and then its whole process group is killed.
    fn drop(&mut self) {
        let grace = Duration::from_secs(if self.wrapped { 60 } else { 5 });
        let deadline = Instant::now() + grace;
        let mut termed = false;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                // Exited and reaped: its pid may be anyone's now, but a group's id is not
                // reused while a member (a profiler's helper) is left.
                if self.wrapped {
                    let _ = Command::new("kill").args(["-KILL", "--", &self.kill_target()]).status();
                }
                return;
            }
            if !termed {
                self.signal("TERM");
                termed = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &self.kill_target()]).status();
        let _ = self.child.wait();
    }
}

/// Runs `tmc` to completion: (exit code, stdout, stderr).
pub fn tmc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tmc")).args(args).env("NO_COLOR", "1").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` every 400 ms until it returns `Ok(Some(v))`, or fails after `timeout` with the
/// last thing `check` said. (Most checks spawn kubectl; with thirty tests polling at once on two
/// cores, a faster poll starves the servers under test.)
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}
