use nano::prelude::*;

#[component]
pub struct Room;

#[component]
pub fn join(_s: &Session) -> Result<()> {
    Ok(())
}

fn main() {}
