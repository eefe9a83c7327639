//! Dispatch: the per-session in-flight limit, with a hand-written component.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::component::{BoxedPayload, Call, Context, ReplyTo};
use crate::private::{reply_typed, reply_unit};
use crate::testing::Harness;
use crate::{Component, EngineBuilder, Error, HandlerInfo, Json, Session};

/// `Gated.Wait` is an async handler that waits for a permit of `gate`; `Gated.Passed` counts
/// the waits that finished.
struct Gated {
    gate: Arc<Semaphore>,
    passed: u32,
}

const fn handler(name: &'static str, route: &'static str, is_async: bool) -> HandlerInfo {
    HandlerInfo {
        name,
        route,
        has_payload: false,
        raw_payload: false,
        is_async,
        takes_context: false,
        deferred: false,
        internal: false,
        payload_type: "",
        response_type: "()",
        raw_response: false,
    }
}

impl Component for Gated {
    type Serializer = Json;
    const NAME: &'static str = "Gated";
    const HANDLERS: &'static [HandlerInfo] = &[
        handler("Wait", "Gated.Wait", true),
        handler("Passed", "Gated.Passed", false),
    ];

    fn decode(_index: usize, _payload: Bytes) -> Result<BoxedPayload, Error> {
        Ok(Box::new(()))
    }

    fn call<'a>(
        &'a mut self,
        index: usize,
        _session: &'a Session,
        _payload: BoxedPayload,
        _ctx: Option<&'a Context<Self>>,
        reply: ReplyTo<'a, Json>,
    ) -> Call<'a> {
        if index == 0 {
            Call::Pending(Box::pin(async move {
                if let Ok(permit) = self.gate.acquire().await {
                    permit.forget();
                }
                self.passed += 1;
                reply_unit(reply, Ok::<(), Error>(()));
            }))
        } else {
            reply_typed(reply, Ok::<u32, Error>(self.passed));
            Call::Done
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_at_its_in_flight_limit_makes_its_reader_wait() {
    let gate = Arc::new(Semaphore::new(0));
    let component = Gated {
        gate: gate.clone(),
        passed: 0,
    };
    let h = Harness::start(EngineBuilder::new().max_inflight(2).component(component))
        .await
        .unwrap();
    let c = h.connect();
    // The first waits on the gate on the scheduler task; the second is queued behind it.
    c.notify("Gated.Wait", &()).await.unwrap();
    c.notify("Gated.Wait", &()).await.unwrap();
    let third = c.notify("Gated.Wait", &());
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut third)
            .await
            .is_err(),
        "a third message was taken while two were in flight"
    );
    // The limit is per session: another client is not held back.
    let other = h.connect();
    tokio::time::timeout(Duration::from_secs(5), other.notify("Gated.Wait", &()))
        .await
        .expect("another session was held back")
        .unwrap();
    // The first finishes: its place goes to the third.
    gate.add_permits(1);
    tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the reader was not let go when a message finished")
        .unwrap();
    gate.add_permits(3);
    let passed: u32 = c.request("Gated.Passed", &()).await.unwrap();
    assert_eq!(passed, 4);
    // Every place was given back: two more messages go in without waiting, gate closed.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), c.notify("Gated.Wait", &()))
            .await
            .expect("a place in flight was never given back")
            .unwrap();
    }
    gate.add_permits(2);
    let passed: u32 = c.request("Gated.Passed", &()).await.unwrap();
    assert_eq!(passed, 6);
}
