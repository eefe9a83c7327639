//! Handlers taking a `Responder<T>` (deferred responses) and `&Context<Self>`, in any order
//! after the session, sync and async.

use std::time::Duration;

use nano::prelude::*;
use nano::Component;

#[derive(Serialize, Deserialize)]
pub struct Question {
    pub text: String,
}

#[derive(Default)]
pub struct Oracle;

#[component]
impl Oracle {
    pub fn ask(&mut self, _s: &Session, q: Question, ctx: &Context<Self>, reply: Responder<String>) {
        ctx.after(Duration::from_millis(1), move |_| reply.ok(q.text));
    }

    pub fn later(&self, _s: &Session, reply: Responder<()>, _ctx: &Context<Self>) {
        std::thread::spawn(move || reply.ok(()));
    }

    pub fn raw(&self, _s: &Session, reply: nano::Responder<Bytes>) -> () {
        reply.err(Error::bad_request("no"));
    }

    pub async fn wait(&mut self, _s: &Session, n: u32, reply: Responder<u32>) {
        reply.send(Ok::<_, Error>(n));
    }

    pub fn timer(&mut self, s: &Session, ctx: &Context<Self>) -> Result<()> {
        let s = s.clone();
        ctx.after(Duration::from_millis(1), move |_| {
            let _ = s.push("Oracle.Tick", &1u32);
        });
        Ok(())
    }

    pub async fn ctx_async(&self, _s: &Session, ctx: &Context<Self>) -> Result<u32> {
        let _ = ctx.scheduler().name();
        Ok(1)
    }
}

fn main() {
    let routes: Vec<_> = Oracle::HANDLERS.iter().map(|h| (h.route, h.takes_context, h.deferred)).collect();
    assert_eq!(
        routes,
        [
            ("Oracle.Ask", true, true),
            ("Oracle.Later", true, true),
            ("Oracle.Raw", false, true),
            ("Oracle.Wait", false, true),
            ("Oracle.Timer", true, false),
            ("Oracle.CtxAsync", true, false),
        ]
    );
    assert!(Oracle::HANDLERS[0].has_payload && !Oracle::HANDLERS[1].has_payload);
}
