//! Several rooms, each on its own scheduler.
//!
//! By default every component shares one logic scheduler: one handler at a time across the
//! whole server, which makes game logic deterministic and lock-free. When independent parts of
//! a game do enough work to need more than one core (separate matches, map shards, rooms that
//! never touch each other), give each its own scheduler with `component_named(.., scheduler)`:
//! handlers of one room still never run concurrently with each other, but different rooms run
//! in parallel. Do *not* split components that share state: state shared across schedulers
//! needs locks again.
//!
//! ```text
//! cargo run --release --example rooms
//! ```
//!
//! The example registers three instances of `Room` (routes `room1.Play`, `room2.Play`, ...),
//! first on one shared scheduler and then on three schedulers, drives them with bots doing a
//! CPU-heavy move each, and prints the wall time of both runs.

use std::time::{Duration, Instant};

use nano::prelude::*;
use nano::{Client, Transport};

/// A room whose every move costs some CPU (think physics or path finding).
struct Room {
    moves: u64,
    checksum: u64,
}

#[component]
impl Room {
    /// `roomN.Play`: simulates a move; returns the room's move count.
    pub fn play(&mut self, _s: &Session, seed: u64) -> Result<u64> {
        let mut x = seed ^ self.checksum;
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        self.checksum = x;
        self.moves += 1;
        Ok(self.moves)
    }
}

const ROOMS: usize = 3;
const MOVES_PER_ROOM: u64 = 200;

async fn run(parallel: bool) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut app = nano::app().tcp("127.0.0.1:0");
    for i in 1..=ROOMS {
        let scheduler = if parallel {
            format!("room{i}")
        } else {
            nano::DEFAULT_SCHEDULER.to_string()
        };
        app = app.component_named(
            Room {
                moves: 0,
                checksum: 0,
            },
            &format!("room{i}"),
            &scheduler,
        );
    }
    // `--admin ADDR`: metrics and the monitor page while the bots play (the second run
    // binds it again once the first has shut down).
    if let Some(addr) = std::env::args().skip_while(|a| a != "--admin").nth(1) {
        app = app.admin(addr);
    }
    let server = app.start().await?;
    if let Some(admin) = server.admin_addr() {
        println!("admin http://{admin}/debug/nano/node");
    }
    let addr = server.addr(Transport::Tcp).ok_or("no tcp address")?;
    let started = Instant::now();
    let mut bots = Vec::new();
    for i in 1..=ROOMS {
        bots.push(tokio::spawn(async move {
            let c: Client = Client::connect_tcp(addr).await?;
            let route = format!("room{i}.Play");
            let mut last = 0;
            for seed in 0..MOVES_PER_ROOM {
                last = c.request::<_, u64>(&route, &seed).await?;
            }
            Ok::<u64, nano::ClientError>(last)
        }));
    }
    for b in bots {
        let moves = b.await??;
        assert_eq!(moves, MOVES_PER_ROOM);
    }
    let took = started.elapsed();
    server.shutdown().await;
    Ok(took)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shared = run(false).await?;
    println!("{ROOMS} rooms on one shared scheduler: {shared:?}");
    let parallel = run(true).await?;
    println!("{ROOMS} rooms on their own schedulers: {parallel:?}");
    println!(
        "speed-up: {:.2}x on {} cores",
        shared.as_secs_f64() / parallel.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    Ok(())
}
