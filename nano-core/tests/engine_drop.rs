//! An engine dropped without `shutdown()` stops its schedulers: their tasks end and the
//! components are dropped, even while a periodic timer runs and the components keep handles on
//! their schedulers.

use std::time::Duration;

use nano_core::component::Context;
use nano_core::testing::Harness;
use nano_core::{EngineBuilder, Result, Session};
use nano_macros::component;
use tokio::sync::mpsc;

/// Ticks forever, keeps its `Context` (a handle on its own scheduler), and reports its drop.
struct Ticking {
    ctx: Option<Context<Ticking>>,
    ticks: u32,
    dropped: mpsc::UnboundedSender<&'static str>,
    name: &'static str,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        let _ = self.dropped.send(self.name);
    }
}

#[component(crate = ::nano_core)]
impl Ticking {
    fn init(&mut self, ctx: &Context<Self>) {
        ctx.every(Duration::from_millis(1), |t| t.ticks += 1);
        self.ctx = Some(ctx.clone());
    }

    pub fn ticks(&self, _s: &Session) -> Result<u32> {
        Ok(self.ticks)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_engine_handle_without_shutdown_stops_its_schedulers() {
    let (tx, mut dropped) = mpsc::unbounded_channel();
    let ticking = |name| Ticking {
        ctx: None,
        ticks: 0,
        dropped: tx.clone(),
        name,
    };
    let builder = EngineBuilder::new()
        .component_named(ticking("shared"), "Shared", "logic")
        .component_named(ticking("own"), "Own", "own");
    let h = Harness::start(builder).await.unwrap();
    let client = h.connect();
    let _: u32 = client.request("Shared.Ticks", &()).await.unwrap();
    let _: u32 = client.request("Own.Ticks", &()).await.unwrap();
    drop(tx);
    drop(client);
    drop(h); // the last engine handle
    let mut names = Vec::new();
    while names.len() < 2 {
        let name = tokio::time::timeout(Duration::from_secs(5), dropped.recv())
            .await
            .expect("a scheduler still runs after its engine was dropped")
            .expect("a component was leaked, never dropped");
        names.push(name);
    }
    names.sort_unstable();
    assert_eq!(names, ["own", "shared"]);
}
