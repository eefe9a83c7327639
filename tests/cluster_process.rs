//! The pingpong example as a cluster of real processes on 127.0.0.1: a master, a backend
//! hosting `TestHandler` and a gate serving the client. Nodes are killed with SIGKILL (no
//! cleanup, no deregistration) and restarted.

use std::time::Duration;

use nano::{Client, Protobuf};
use tokio::time::{timeout, Instant};

mod common;
use common::process::Example;
use common::T;

#[path = "../examples/pingpong/handler.rs"]
#[allow(dead_code)]
mod handler;
use handler::{Ping, Pong};

const DEADLINE: Duration = Duration::from_millis(1000);

fn node(role: &str, id: &str, extra: &[&str]) -> Example {
    let mut args = vec!["--cluster", role, "--node-id", id, "--lease-ttl", "2"];
    args.extend_from_slice(extra);
    Example::spawn("pingpong", &args)
}

fn ping(n: i64) -> Ping {
    Ping {
        content: "ab".into(),
        sequence: n,
    }
}

fn code(e: &nano::ClientError) -> String {
    e.server_error()
        .map(|e| e.code().to_owned())
        .unwrap_or_else(|| format!("not an error response: {e}"))
}

/// Echo through the gate until it succeeds (a member restarting is being rediscovered); every
/// failure meanwhile must be an error response of the cluster's, not a hang.
async fn echo_until_served(c: &Client<Protobuf>) -> Pong {
    let attempts = async {
        loop {
            match c.request::<_, Pong>("TestHandler.Echo", &ping(1)).await {
                Ok(pong) => return pong,
                Err(e) => {
                    let code = code(&e);
                    assert!(
                        ["NANO-503", "NANO-504", "NANO-404"].contains(&code.as_str()),
                        "{code}"
                    );
                    // Rediscovery takes lease round trips; do not spin on the gate meanwhile.
                    tokio::task::yield_now().await;
                }
            }
        }
    };
    timeout(3 * T, attempts)
        .await
        .expect("served again in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pingpong_cluster_survives_killed_members() {
    let mut master = node("master", "master", &["--listen", "127.0.0.1:0"]);
    let master_addr = master.line_after("cluster ").await;
    let mut backend = node("backend", "backend-1", &["--master", &master_addr]);
    backend.line_after("cluster ").await;
    let deadline = DEADLINE.as_millis().to_string();
    let gate_args = [
        "--master",
        &master_addr,
        "--tcp",
        "127.0.0.1:0",
        "--ws",
        "127.0.0.1:0",
        "--heartbeat",
        "0",
        "--forward-deadline-ms",
        &deadline,
    ];
    let mut gate = node("gate", "gate-1", &gate_args);
    gate.line_after("cluster ").await;
    let tcp = gate.tcp_line().await;
    gate.stderr_line_containing("peer=backend-1", T).await;

    let c = timeout(T, Client::<Protobuf>::connect_tcp(tcp))
        .await
        .unwrap()
        .unwrap();
    // Request and notify → push, forwarded by the gate to the backend's TestHandler.
    let pong: Pong = c.request("TestHandler.Echo", &ping(41)).await.unwrap();
    assert_eq!((pong.content.as_str(), pong.sequence), ("ababab", 42));
    let mut pongs = c.on("pong");
    c.notify("TestHandler.Ping", &ping(9)).await.unwrap();
    let pushed = timeout(T, pongs.recv()).await.unwrap().unwrap();
    let pong: Pong = prost::Message::decode(&pushed[..]).unwrap();
    assert_eq!(pong.sequence, 10);

    // The master dies: the routes known keep working (links are node to node).
    master.kill().await;
    for n in 0..3 {
        let pong: Pong = c.request("TestHandler.Echo", &ping(n)).await.unwrap();
        assert_eq!(pong.sequence, n + 1);
    }

    // The backend dies: the client's request is answered with an error within the deadline.
    backend.kill().await;
    let started = Instant::now();
    let e = c
        .request::<_, Pong>("TestHandler.Echo", &ping(1))
        .await
        .unwrap_err();
    assert!(["NANO-503", "NANO-504"].contains(&code(&e).as_str()), "{e}");
    assert!(
        started.elapsed() < DEADLINE + Duration::from_secs(2),
        "answered within the forward deadline: {:?}",
        started.elapsed()
    );

    // Master and backend come back: the master relearns the gate, the gate the new backend.
    let mut master = node("master", "master", &["--listen", &master_addr]);
    master.line_after("cluster ").await;
    let mut backend = node("backend", "backend-1", &["--master", &master_addr]);
    backend.line_after("cluster ").await;
    let pong = echo_until_served(&c).await;
    assert_eq!(pong.sequence, 2);

    // The gate dies with the client's session open: its lease lapses and the backend closes
    // the session it held for it.
    gate.kill().await;
    let line = backend
        .stderr_line_containing("gate left: closing its sessions", 3 * T)
        .await;
    assert!(
        line.contains("gate-1") && line.contains("sessions=1"),
        "{line}"
    );
    backend.terminate_cleanly().await;
    master.terminate_cleanly().await;
}
