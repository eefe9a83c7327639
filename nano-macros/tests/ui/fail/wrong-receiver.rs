use nano::prelude::*;

pub struct Room;

#[component]
impl Room {
    pub fn join(self, _s: &Session) -> Result<()> {
        Ok(())
    }

    pub fn leave(self: Box<Self>, _s: &Session) -> Result<()> {
        Ok(())
    }
}

fn main() {
    // The stub impl keeps code that uses the component compiling.
    let _ = <Room as nano::Component>::NAME;
}
