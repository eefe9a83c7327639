use std::rc::Rc;

use nano::prelude::*;

pub struct Room;

async fn tick() {}

#[component]
impl Room {
    /// Handler futures run on the component's scheduler and must be `Send`.
    pub async fn wait(&mut self, _s: &Session) -> Result<()> {
        let local = Rc::new(1);
        tick().await;
        let _ = local;
        Ok(())
    }
}

fn main() {}
