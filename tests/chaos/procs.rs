//! Signals to real server processes, and restarting them with the very arguments and environment
//! they ran with (read back from /proc): kcp with its embedded etcd keeps its data directory, a
//! kube-apiserver keeps its port and etcd. Also a second kube-apiserver on a cluster's etcd, and
//! etcd compaction through etcd's v3 HTTP gateway.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process the suite can signal and restart.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: PathBuf,
    /// The process this suite started last (a restart), killed on drop.
    child: Option<Child>,
    /// Where the cluster script keeps the pids it stops on `down`, if any.
    pids_file: Option<PathBuf>,
}

fn split_nul(bytes: Vec<u8>) -> Vec<OsString> {
    bytes.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| OsString::from_vec(s.to_vec())).collect()
}

/// The pid of the process whose command line contains `needle`.
pub fn find_pid(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let alive = process_state(pid).is_none_or(|s| s != 'Z');
        (alive && String::from_utf8_lossy(&cmd).contains(needle)).then_some(pid)
    })
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.chars().next()
}

impl Proc {
    /// Takes over a running process: remembers its argv and environment for restarts.
    pub fn adopt(name: &str, pid: u32, log: PathBuf, pids_file: Option<PathBuf>) -> Result<Proc, String> {
        let args = split_nul(std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| format!("{name}: {e}"))?);
        let env = split_nul(std::fs::read(format!("/proc/{pid}/environ")).map_err(|e| format!("{name}: {e}"))?)
            .into_iter()
            .filter_map(|kv| {
                let s = kv.into_vec();
                let eq = s.iter().position(|b| *b == b'=')?;
                Some((OsString::from_vec(s[..eq].to_vec()), OsString::from_vec(s[eq + 1..].to_vec())))
            })
            .collect();
        Ok(Proc { name: name.into(), pid, args, env, log, child: None, pids_file })
    }

    pub fn signal(&self, sig: &str) {
        eprintln!("    kill -{sig} {} ({})", self.pid, self.name);
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.pid.to_string()]).status();
    }

    /// kill -9, then waits until the process is gone, or a zombie with no thread left: a
    /// multi-threaded process's leader turns zombie before its other threads have exited, and
    /// the open files (its listening socket) close only with the last of them — a restart right
    /// at the leader's 'Z' found the port still bound.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let deadline = Instant::now() + Duration::from_secs(10);
        let alive = |pid: u32| {
            let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
            process_state(pid).is_some_and(|s| s != 'Z') || threads > 1
        };
        while alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Starts the process again with its recorded argv and environment, appending to its log.
    pub fn restart(&mut self) -> Result<(), String> {
        let child = self.spawn(&self.args.clone(), &self.log.clone())?;
        self.pid = child.id();
        if let Some(f) = &self.pids_file {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).open(f).map_err(|e| e.to_string())?;
            writeln!(file, "{}", self.pid).map_err(|e| e.to_string())?;
        }
        self.child = Some(child);
        eprintln!("    restarted {} as pid {}", self.name, self.pid);
        Ok(())
    }

    /// The same program with one flag replaced (`--secure-port=` → another port): a second
    /// kube-apiserver on the same etcd. The caller owns (and kills) the child.
    pub fn spawn_variant(&self, flag: &str, value: &str, log: &Path) -> Result<Child, String> {
        let mut args = self.args.clone();
        for a in args.iter_mut() {
            if a.to_string_lossy().starts_with(&format!("{flag}=")) {
                *a = format!("{flag}={value}").into();
            }
        }
        self.spawn(&args, log)
    }

    /// The value of `--flag=value` in the recorded argv.
    pub fn flag(&self, flag: &str) -> Option<String> {
        self.args.iter().find_map(|a| a.to_string_lossy().strip_prefix(&format!("{flag}=")).map(Into::into))
    }

    fn spawn(&self, args: &[OsString], log: &Path) -> Result<Child, String> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| e.to_string())?;
        Command::new(&args[0])
            .args(&args[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("restart {}: {e}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// etcd's current revision, from its v3 HTTP gateway.
pub fn etcd_revision(endpoint: &str) -> Result<i64, String> {
    let out = curl(&format!("{endpoint}/v3/kv/range"), r#"{"key":"AA=="}"#)?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    v["header"]["revision"].as_str().and_then(|r| r.parse().ok()).ok_or_else(|| format!("no revision in {out}"))
}

/// Compacts etcd's history up to its current revision: watches resumed from an older
/// resourceVersion then get 410 Gone. Returns the revision compacted at.
pub fn etcd_compact(endpoint: &str) -> Result<i64, String> {
    let rev = etcd_revision(endpoint)?;
    curl(&format!("{endpoint}/v3/kv/compaction"), &format!(r#"{{"revision":"{rev}","physical":true}}"#))?;
    Ok(rev)
}

fn curl(url: &str, body: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-X", "POST", url, "-d", body])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("POST {url}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
