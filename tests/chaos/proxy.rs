//! A TCP proxy the test controls, between the manager and kcp or a cluster: it listens on
//! 127.0.0.1:0 and forwards to a target. Faults are real TCP behaviour, not mocks:
//! - `Pass` forwards bytes as they come;
//! - `Delay(d)` holds every chunk for `d` before forwarding it (added latency);
//! - `Cut` closes every open connection and refuses new ones (RST on accept);
//! - `Blackhole` accepts and keeps connections open but forwards nothing (a partition that
//!   looks alive to the client until its own timeouts fire).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Pass,
    Delay(Duration),
    Cut,
    Blackhole,
}

pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel(Mode::Pass);
        let task = tokio::spawn(accept_loop(listener, target, rx));
        Proxy { addr, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        eprintln!("    proxy {} -> {mode:?}", self.addr);
        self.mode.send_replace(mode);
    }

    /// `https://127.0.0.1:<port>`, for kubeconfigs.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: watch::Receiver<Mode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        if *mode.borrow() == Mode::Cut {
            // Refuse: close at once, before a byte is exchanged.
            drop(client);
            continue;
        }
        tokio::spawn(connection(client, target, mode.clone()));
    }
}

async fn connection(client: TcpStream, target: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(target).await else { return };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pump(cr, sw, mode.clone()));
    let down = tokio::spawn(pump(sr, cw, mode));
    let _ = tokio::join!(up, down);
}

/// Copies `from` to `to` under the current mode; returns when either side closes or a `Cut` comes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read { Ok(0) | Err(_) => return, Ok(n) => n },
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Cut { return; }
                continue;
            }
        };
        // Under Blackhole the bytes read are dropped: the peer sees silence, not an error.
        let current = *mode.borrow();
        match current {
            Mode::Cut => return,
            Mode::Blackhole => continue,
            Mode::Delay(d) => tokio::time::sleep(d).await,
            Mode::Pass => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
