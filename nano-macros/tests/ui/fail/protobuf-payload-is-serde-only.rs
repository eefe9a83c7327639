use nano::prelude::*;

/// A serde type: fine for `Json`, not for `Protobuf`.
#[derive(Serialize, Deserialize)]
pub struct Move {
    pub x: i32,
    pub y: i32,
}

pub struct World;

#[component]
impl World {
    pub fn r#move(&mut self, _s: &Session<Protobuf>, m: Move) -> Result<()> {
        let _ = (m.x, m.y);
        Ok(())
    }
}

fn main() {}
