//! The generated code end to end: requests go through the real codec and engine
//! (`nano::testing::Harness`) to the handlers, and their results come back as responses.

use nano::prelude::*;
use nano::testing::Harness;
use nano::engine::EngineBuilder;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct Add {
    pub n: i64,
}

#[derive(Debug)]
pub struct Overflow;

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("overflow")
    }
}

impl std::error::Error for Overflow {}

// A handler's own error type converts into what the client sees; here a generic NANO-500.
impl From<Overflow> for Error {
    fn from(e: Overflow) -> Self {
        Error::internal_from(e)
    }
}

#[derive(Default)]
pub struct Counter {
    total: i64,
    started: bool,
}

#[component]
impl Counter {
    pub fn add(&mut self, _s: &Session, req: Add) -> Result<i64> {
        self.total += req.n;
        Ok(self.total)
    }

    pub fn get(&self, _s: &Session) -> Result<Value> {
        Ok(json!({ "total": self.total, "started": self.started }))
    }

    pub fn echo(&self, _s: &Session, raw: Vec<u8>) -> Result<Bytes> {
        Ok(Bytes::from(raw))
    }

    pub fn reset(&mut self, _s: &Session) -> Result<()> {
        self.total = 0;
        Ok(())
    }

    pub async fn double(&mut self, _s: &Session) -> std::result::Result<i64, Overflow> {
        self.total = self.total.checked_mul(2).ok_or(Overflow)?;
        Ok(self.total)
    }

    fn init(&mut self, _ctx: &Context<Self>) {
        self.started = true;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let harness = Harness::start(EngineBuilder::<Json>::new().component(Counter::default()))
        .await
        .unwrap();
    let client = harness.connect();

    let total: i64 = client
        .request("Counter.Add", &json!({ "n": 20 }))
        .await
        .unwrap();
    assert_eq!(total, 20);
    let total: i64 = client.request("Counter.Double", &()).await.unwrap();
    assert_eq!(total, 40);

    let state: Value = client.request("Counter.Get", &()).await.unwrap();
    assert_eq!(state, json!({ "total": 40, "started": true }));

    let raw = client
        .request_raw("Counter.Echo", b"\x00\x01binary")
        .await
        .unwrap();
    assert_eq!(&raw[..], b"\x00\x01binary");

    let empty = client.request_raw("Counter.Reset", b"").await.unwrap();
    assert!(empty.is_empty());

    let err = client
        .request::<_, i64>("Counter.Add", &json!({ "n": "x" }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "NANO-400");

    let _: i64 = client
        .request("Counter.Add", &json!({ "n": i64::MAX }))
        .await
        .unwrap();
    let err = client
        .request::<_, i64>("Counter.Double", &())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "NANO-500");

    harness.shutdown().await;
}
