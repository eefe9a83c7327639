use nano::prelude::*;

pub struct Room;

#[component]
impl Room {
    pub fn ping(&self) -> Result<()> {
        Ok(())
    }

    pub fn join(&mut self, name: String) -> Result<()> {
        let _ = name;
        Ok(())
    }

    pub fn leave(&mut self, _s: &mut Session) -> Result<()> {
        Ok(())
    }
}

fn main() {}
