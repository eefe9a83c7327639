use nano::prelude::*;

pub struct Slow;

#[component]
impl Slow {
    /// A deferred handler answers through its responder: it cannot also return a value.
    pub fn slow(&self, _s: &Session, reply: Responder<u32>) -> Result<u32> {
        drop(reply);
        Ok(1)
    }

    /// Only one responder.
    pub fn twice(&self, _s: &Session, _a: Responder<u32>, _b: Responder<u32>) {}

    /// The response type is required.
    pub fn bare(&self, _s: &Session, _a: Responder) {}
}

fn main() {}
