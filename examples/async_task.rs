//! Asynchronous tasks: slow work off the logic scheduler, its result applied back on it.
//!
//! This is the seed README's "How to execute the asynchronous task", in Rust. A login handler
//! must query a (simulated, slow) database. Blocking the scheduler would stall every other
//! player, so the handler hands the query to `Context::spawn`, which runs it on the tokio
//! runtime and delivers its output back *on the component's scheduler* with `&mut self`, where
//! it is safe to touch component state and push to the player. The handler takes its
//! `Responder` and answers the login request with the loaded player from there (a deferred
//! response): the scheduler is free meanwhile, and the client's request resolves once the
//! query is done.
//!
//! ```text
//! cargo run --example async_task
//! ```
//!
//! The example starts the server on a free port, logs two bots in concurrently, prints the
//! pushes they receive, and exits.

use std::time::Duration;

use nano::prelude::*;
use nano::{Client, Transport};

#[derive(Serialize, Deserialize, Clone, Debug)]
struct LoginRequest {
    player_id: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Player {
    id: u64,
    name: String,
    level: u32,
}

/// Pretends to be a database: 300 ms per query.
async fn query_player(id: u64) -> Player {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Player {
        id,
        name: format!("player-{id}"),
        level: (id % 50) as u32 + 1,
    }
}

#[derive(Default)]
struct PlayerManager {
    players: Vec<Player>,
}

#[component(name = "PlayerSystem")]
impl PlayerManager {
    /// `PlayerSystem.Login`: answered with the player once the query is done (a deferred
    /// response), and `PlayerSystem.LoginSuccess` is pushed at the same time.
    pub fn login(
        &mut self,
        s: &Session,
        req: LoginRequest,
        ctx: &Context<Self>,
        reply: Responder<Player>,
    ) {
        let session = s.clone();
        ctx.spawn(query_player(req.player_id), move |manager, player| {
            // Back on the scheduler: no other handler of this component runs now.
            manager.players.push(player.clone());
            tracing::info!(online = manager.players.len(), "player loaded");
            let _ = session.push("PlayerSystem.LoginSuccess", &player);
            reply.ok(player);
        });
    }

    /// `PlayerSystem.Online`: how many players are loaded.
    pub fn online(&self, _s: &Session) -> Result<usize> {
        Ok(self.players.len())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("info")
        .init();
    let mut app = nano::app()
        .component(PlayerManager::default())
        .tcp("127.0.0.1:0");
    // `--admin ADDR`: metrics and the monitor page while the bots run.
    if let Some(addr) = std::env::args().skip_while(|a| a != "--admin").nth(1) {
        app = app.admin(addr);
    }
    let server = app.start().await?;
    if let Some(admin) = server.admin_addr() {
        println!("admin http://{admin}/debug/nano/node");
    }
    let addr = server.addr(Transport::Tcp).ok_or("no tcp address")?;

    let mut bots = Vec::new();
    for id in [7, 42] {
        bots.push(tokio::spawn(async move {
            let c: Client = Client::connect_tcp(addr).await?;
            let mut success = c.on("PlayerSystem.LoginSuccess");
            let started = std::time::Instant::now();
            let answer: Player = c
                .request("PlayerSystem.Login", &LoginRequest { player_id: id })
                .await?;
            println!(
                "bot {id}: login answered after {:?}: {answer:?}",
                started.elapsed()
            );
            let pushed = success.recv().await.ok_or("disconnected")?;
            let player: Player = serde_json::from_slice(&pushed)?;
            println!(
                "bot {id}: LoginSuccess after {:?}: {player:?}",
                started.elapsed()
            );
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(c)
        }));
    }
    let mut clients = Vec::new();
    for b in bots {
        clients.push(b.await?.map_err(|e| e.to_string())?);
    }
    let online: usize = clients[0].request("PlayerSystem.Online", &()).await?;
    println!("online: {online}");
    server.shutdown().await;
    Ok(())
}
