use nano::prelude::*;

/// No `Deserialize`: the JSON serializer cannot decode it.
pub struct JoinRequest {
    pub name: String,
}

pub struct Room;

#[component]
impl Room {
    pub fn join(&mut self, _s: &Session, req: JoinRequest) -> Result<()> {
        let _ = req.name;
        Ok(())
    }
}

fn main() {}
