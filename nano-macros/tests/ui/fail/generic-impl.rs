use nano::prelude::*;

pub struct Room<T>(T);

#[component]
impl<T: Send + 'static> Room<T> {
    pub fn join(&mut self, _s: &Session) -> Result<()> {
        Ok(())
    }

    pub fn take<P: Deserialize<'static>>(&mut self, _s: &Session, _p: P) -> Result<()> {
        Ok(())
    }
}

fn main() {}
