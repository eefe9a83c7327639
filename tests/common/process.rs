//! Example binaries as real processes: spawned with flags, their stdout and stderr read line by
//! line, SIGTERM sent, and the exit awaited — every wait bounded by [`T`](super::T).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use super::T;

/// `target/<profile>/examples/<name>`, built by `cargo test` with the tests.
pub fn example_path(name: &str) -> PathBuf {
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop(); // the test binary
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join(name)
}

/// A port that was free a moment ago on 127.0.0.1 (bound, read, released), for flags whose
/// effect is the exact address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running example process. Killed (SIGKILL) when dropped before it exited.
pub struct Example {
    name: String,
    pid: libc::pid_t,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr_lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    exit: Option<oneshot::Receiver<ExitStatus>>,
    exited: Option<ExitStatus>,
}

fn forward(
    r: impl Read + Send + 'static,
    tx: mpsc::UnboundedSender<String>,
    log: Option<Arc<Mutex<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Some(log) = &log {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
            let _ = tx.send(line);
        }
    });
}

impl Example {
    /// Spawns example `name` with `args` (logging without colours).
    pub fn spawn(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(example_path(name))
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("the {name} example was built by cargo test: {e}"));
        let pid = child.id() as libc::pid_t;
        let (out_tx, stdout) = mpsc::unbounded_channel();
        let (err_tx, stderr_lines) = mpsc::unbounded_channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        forward(child.stdout.take().unwrap(), out_tx, None);
        forward(child.stderr.take().unwrap(), err_tx, Some(stderr.clone()));
        let (exit_tx, exit) = oneshot::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Example {
            name: name.to_owned(),
            pid,
            stdout,
            stderr_lines,
            stderr,
            exit: Some(exit),
            exited: None,
        }
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next stdout line, within [`T`].
    pub async fn line(&mut self) -> String {
        match timeout(T, self.stdout.recv()).await {
            Ok(Some(l)) => l,
            Ok(None) => panic!("{}: stdout closed; stderr:\n{}", self.name, self.stderr()),
            Err(_) => panic!(
                "{}: no stdout line within {T:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
        }
    }

    /// The next stdout line, which must start with `prefix`; the rest of it.
    pub async fn line_after(&mut self, prefix: &str) -> String {
        let l = self.line().await;
        match l.strip_prefix(prefix) {
            Some(rest) => rest.to_owned(),
            None => panic!("{}: expected a line `{prefix}…`, got {l:?}", self.name),
        }
    }

    /// The `tcp ADDR` line's address.
    pub async fn tcp_line(&mut self) -> SocketAddr {
        self.line_after("tcp ").await.parse().expect("tcp ADDR")
    }

    /// Waits (within `bound`) for a stderr line containing `needle`.
    pub async fn stderr_line_containing(&mut self, needle: &str, bound: Duration) -> String {
        let name = self.name.clone();
        let found = timeout(bound, async {
            while let Some(l) = self.stderr_lines.recv().await {
                if l.contains(needle) {
                    return Some(l);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(l)) => l,
            _ => panic!(
                "{name}: no stderr line with {needle:?} within {bound:?}:\n{}",
                self.stderr()
            ),
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) with a pid we spawned and have not reaped (the waiter thread reaps
        // it only once it exited); no memory is involved.
        let rc = unsafe { libc::kill(self.pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {}", self.pid);
    }

    /// Sends SIGKILL (a crash: no cleanup, no deregistration) and waits for the exit.
    pub async fn kill(&mut self) {
        // SAFETY: as in `sigterm`.
        let rc = unsafe { libc::kill(self.pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill -KILL {}", self.pid);
        self.exit_within(T).await;
    }

    /// Waits for the process to exit, within `bound`.
    pub async fn exit_within(&mut self, bound: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let rx = self.exit.take().expect("one wait");
        let status = match timeout(bound, rx).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => panic!("{}: the wait failed", self.name),
            Err(_) => panic!(
                "{}: still running after {bound:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
        };
        self.exited = Some(status);
        status
    }

    /// SIGTERM, then a clean exit (status 0) within [`T`].
    pub async fn terminate_cleanly(&mut self) {
        self.sigterm();
        let status = self.exit_within(T).await;
        assert!(
            status.success(),
            "{}: exit after SIGTERM: {status:?}; stderr:\n{}",
            self.name,
            self.stderr()
        );
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let reaped = self.exit.as_mut().is_some_and(|rx| rx.try_recv().is_ok());
        if self.exited.is_none() && !reaped {
            // SAFETY: as in `sigterm`; at worst the process already exited and this fails.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}
