//! The pingpong example's component over real sockets with the protobuf serializer.

use std::time::Duration;

use nano::prelude::*;
use nano::{Client, Transport};
use tokio::time::timeout;

#[path = "../examples/pingpong/handler.rs"]
mod handler;

use handler::{Ping, Pong, TestHandler};

#[tokio::test]
async fn echo_and_ping_over_tcp_and_websocket_with_protobuf_and_compressed_routes() {
    let server = nano::app_with(Protobuf)
        .component(TestHandler)
        .push_routes(["pong"])
        .tcp("127.0.0.1:0")
        .websocket("127.0.0.1:0", "/nano")
        .start()
        .await
        .unwrap();
    let tcp = Client::<Protobuf>::connect_tcp(server.addr(Transport::Tcp).unwrap())
        .await
        .unwrap();
    let ws = Client::<Protobuf>::connect_ws(&format!(
        "ws://{}/nano",
        server.addr(Transport::WebSocket).unwrap()
    ))
    .await
    .unwrap();
    for c in [&tcp, &ws] {
        assert_eq!(c.handshake().serializer.as_deref(), Some("protobuf"));
        let dict = c.handshake().dict.as_ref().unwrap();
        assert!(dict.code("TestHandler.Echo").is_some() && dict.code("pong").is_some());
        let ping = Ping {
            content: "ab".into(),
            sequence: 41,
        };
        let pong: Pong = c.request("TestHandler.Echo", &ping).await.unwrap();
        assert_eq!(pong.content, "ababab");
        assert_eq!(pong.sequence, 42);
        let mut pongs = c.on("pong");
        c.notify("TestHandler.Ping", &ping).await.unwrap();
        let p = timeout(Duration::from_secs(10), pongs.recv())
            .await
            .unwrap()
            .unwrap();
        let pong: Pong = prost::Message::decode(&p[..]).unwrap();
        assert_eq!((pong.content.as_str(), pong.sequence), ("ababab", 42));
        // Protobuf error responses decode too.
        let e = c
            .request::<_, Pong>("TestHandler.Nope", &ping)
            .await
            .unwrap_err();
        assert_eq!(
            e.server_error().map(|e| e.code().to_owned()).as_deref(),
            Some("NANO-404")
        );
    }
    timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown within the bound");
}
