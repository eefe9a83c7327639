use nano::prelude::*;

/// No `Serialize`: the JSON serializer cannot encode it.
pub struct Members {
    pub names: Vec<String>,
}

pub struct Room;

#[component]
impl Room {
    pub fn members(&self, _s: &Session) -> Result<Members> {
        Ok(Members { names: Vec::new() })
    }
}

fn main() {}
