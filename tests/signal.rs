//! The pingpong example as a real process: SIGTERM shuts it down gracefully, kicking clients.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nano::{Client, ClientEvent, Protobuf};

/// `target/<profile>/examples/pingpong`, built by `cargo test` with the tests.
fn example(name: &str) -> std::path::PathBuf {
    let mut p = std::env::current_exe().expect("test binary path");
    p.pop(); // the test binary
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("examples").join(name)
}

/// Kills the server if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sigterm_kicks_clients_and_exits_cleanly() {
    let child = Command::new(example("pingpong"))
        .args(["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the pingpong example was built by cargo test");
    let mut guard = KillOnDrop(child);
    let child = &mut guard.0;
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("tcp ")
        .expect("first line: tcp ADDR")
        .to_owned();
    let client: Client<Protobuf> = Client::connect_tcp(addr.as_str()).await.unwrap();
    let rc = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let ev = tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .unwrap();
    assert!(matches!(ev, ClientEvent::Kicked { .. }), "{ev:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "exited in bounded time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
