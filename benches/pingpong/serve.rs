//! Servers under test, each in its own process so its CPU time and memory can be read from
//! `/proc/<pid>`: the bench binary re-executes itself with the hidden `--serve nano|raw|bcast`
//! flag. The child prints `READY <tcp addr> <ws addr>` once listening and exits when its stdin
//! closes (the parent ended, however it ended). The cluster bench runs its nodes through the
//! same [`run_child`] and [`ServerProc::spawn_with`].

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nano::prelude::*;
use nano::Transport;

use crate::handler::TestHandler;

/// The WebSocket path of the servers started here.
pub const WS_PATH: &str = "/nano";

/// Which server a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// nano with the pingpong component (protobuf).
    Nano,
    /// The same with its metrics on (`App::metrics`): what they cost.
    NanoMetrics,
    /// The same resuming sessions (`App::resume`): what keeping packets for a return costs.
    NanoResume,
    /// The hand-written baseline.
    Raw,
    /// nano with the broadcast component (JSON).
    Bcast,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nano => "nano",
            Kind::NanoMetrics => "nano-metrics",
            Kind::NanoResume => "nano-resume",
            Kind::Raw => "raw",
            Kind::Bcast => "bcast",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "nano" => Some(Kind::Nano),
            "nano-metrics" => Some(Kind::NanoMetrics),
            "nano-resume" => Some(Kind::NanoResume),
            "raw" => Some(Kind::Raw),
            "bcast" => Some(Kind::Bcast),
            _ => None,
        }
    }
}

/// Child side: runs the server until stdin closes. Never returns.
pub fn serve_forever(kind: Kind, tcp: &str, ws: &str, heartbeat: u64) -> ! {
    let (tcp, ws) = (tcp.to_owned(), ws.to_owned());
    run_child(async move {
        let hb = Some(Duration::from_secs(heartbeat));
        let started: (SocketAddr, SocketAddr, Keep) = match kind {
            Kind::Nano | Kind::NanoMetrics | Kind::NanoResume => {
                let mut app = nano::app_with(Protobuf)
                    .component(TestHandler)
                    .push_routes(["pong"])
                    .heartbeat(hb)
                    .metrics(kind == Kind::NanoMetrics);
                if kind == Kind::NanoResume {
                    app = app.resume(Duration::from_secs(30));
                }
                let server = app
                    .tcp(&tcp)
                    .websocket(&ws, WS_PATH)
                    .start()
                    .await
                    .expect("nano server starts");
                let t = server.addr(Transport::Tcp).expect("tcp");
                let w = server.addr(Transport::WebSocket).expect("ws");
                (t, w, Box::new(server))
            }
            Kind::Bcast => {
                let server = crate::broadcast::start_server(&tcp, &ws, hb)
                    .await
                    .expect("broadcast server starts");
                let t = server.addr(Transport::Tcp).expect("tcp");
                let w = server.addr(Transport::WebSocket).expect("ws");
                (t, w, Box::new(server))
            }
            Kind::Raw => {
                let (t, w) = crate::raw_server::start(&tcp, &ws, heartbeat)
                    .await
                    .expect("raw server starts");
                (t, w, Box::new(()))
            }
        };
        started
    })
}

/// What a child keeps alive while it serves (its server, its cluster node, ...).
pub type Keep = Box<dyn std::any::Any>;

/// Child side of any server: runs `start` on a multi-threaded runtime (one worker per core,
/// as `App::run`), prints `READY <a> <b>` with the two addresses it returns, then serves until
/// stdin closes (the parent ended, however it ended). Never returns.
pub fn run_child<F>(start: F) -> !
where
    F: std::future::Future<Output = (SocketAddr, SocketAddr, Keep)>,
{
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (a, b, keep) = start.await;
        println!("READY {a} {b}");
        std::future::pending::<()>().await;
        drop(keep);
    });
    unreachable!("the server runs until stdin closes")
}

/// Parent side: a server child process.
pub struct ServerProc {
    child: Child,
    pub pid: u32,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
}

impl ServerProc {
    /// The target of this server over `via` (`tcp`, or WebSocket otherwise).
    #[allow(dead_code)] // not every bench loads by transport name
    pub fn target(&self, via: &str) -> crate::conn::Target {
        match via {
            "tcp" => crate::conn::Target::Tcp(self.tcp),
            _ => crate::conn::Target::Ws {
                addr: self.ws,
                path: WS_PATH.into(),
            },
        }
    }

    /// Starts `kind` on ephemeral loopback ports and waits until it listens.
    pub fn spawn(kind: Kind, heartbeat: u64) -> io::Result<ServerProc> {
        let heartbeat = heartbeat.to_string();
        ServerProc::spawn_with(
            kind.name(),
            &[
                "--tcp",
                "127.0.0.1:0",
                "--ws",
                "127.0.0.1:0",
                "--heartbeat",
                &heartbeat,
            ],
        )
    }

    /// Runs this binary with `--serve <kind>` and the flags `args`, and waits for its
    /// `READY <a> <b>` line (its two addresses, kept as `tcp` and `ws`).
    pub fn spawn_with(kind: &str, args: &[&str]) -> io::Result<ServerProc> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["--serve", kind])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let parsed = match (parts.next(), parts.next(), parts.next()) {
            (Some("READY"), Some(t), Some(w)) => t.parse().ok().zip(w.parse().ok()),
            _ => None,
        };
        let Some((tcp, ws)) = parsed else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "{kind} server did not start: {line:?}"
            )));
        };
        Ok(ServerProc {
            child,
            pid,
            tcp,
            ws,
        })
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
