//! TLS over real sockets, the failure side: a client refuses a certificate it does not trust
//! (or one for another name), and a plain-TCP client on a TLS port is closed promptly while
//! the server keeps serving TLS clients.

use std::time::Duration;

use nano::prelude::*;
use nano::protocol::{Packet, PacketType};
use nano::{Client, ClientError, Server, TlsConfig, Transport};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod common;

use common::{read_to_end, T};

struct Echo;

#[component]
impl Echo {
    pub fn echo(&mut self, _s: &Session, v: Value) -> Result<Value> {
        Ok(v)
    }
}

struct Tls {
    server: Server<Json>,
    /// The server's certificate (DER), for clients that trust it.
    der: Vec<u8>,
}

async fn tls_server() -> Tls {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = TlsConfig::from_pem(
        cert.cert.pem().as_bytes(),
        cert.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    // A long handshake timeout: a prompt close below is the refusal, not the timeout.
    let server = nano::app()
        .component(Echo)
        .handshake_timeout(Duration::from_secs(30))
        .tcp_tls("127.0.0.1:0", tls.clone())
        .websocket_tls("127.0.0.1:0", "/nano", tls)
        .start()
        .await
        .unwrap();
    Tls {
        server,
        der: cert.cert.der().to_vec(),
    }
}

async fn trusted_echo(t: &Tls, v: &str) {
    let c = Client::<Json>::builder()
        .tls_root_cert_der(t.der.clone())
        .request_timeout(T)
        .connect_tcp(t.server.addr(Transport::TcpTls).unwrap())
        .await
        .expect("a client trusting the certificate connects");
    let got: Value = c.request("Echo.Echo", &json!(v)).await.unwrap();
    assert_eq!(got, json!(v));
}

fn assert_tls_refused(r: Result<Client<Json>, ClientError>, what: &str) {
    match r {
        Err(ClientError::Tls(e)) => assert!(
            e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
            "{what}: {e}"
        ),
        Err(e) => panic!("{what}: not a TLS refusal: {e:?}"),
        Ok(_) => panic!("{what}: connected"),
    }
}

#[tokio::test]
async fn a_client_refuses_an_untrusted_or_misnamed_certificate() {
    let t = tls_server().await;
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_der = other.cert.der().to_vec();
    let tcp = t.server.addr(Transport::TcpTls).unwrap();
    let wss = format!(
        "wss://localhost:{}/nano",
        t.server.addr(Transport::WebSocketTls).unwrap().port()
    );

    let untrusted = |der: Vec<u8>| {
        Client::<Json>::builder()
            .tls_root_cert_der(der)
            .request_timeout(T)
    };
    assert_tls_refused(
        untrusted(other_der.clone()).connect_tcp(tcp).await,
        "tcp+tls, untrusted certificate",
    );
    assert_tls_refused(
        untrusted(other_der).connect_ws(&wss).await,
        "wss, untrusted certificate",
    );
    assert_tls_refused(
        untrusted(t.der.clone())
            .server_name("elsewhere.example")
            .connect_tcp(tcp)
            .await,
        "tcp+tls, certificate for another name",
    );
    // The server is unharmed.
    trusted_echo(&t, "still here").await;
}

#[tokio::test]
async fn plain_tcp_to_a_tls_port_is_closed_and_others_are_served() {
    let t = tls_server().await;
    // One TLS client connected before, served after.
    let before = Client::<Json>::builder()
        .tls_root_cert_der(t.der.clone())
        .connect_tcp(t.server.addr(Transport::TcpTls).unwrap())
        .await
        .unwrap();

    let hs = Packet::new(PacketType::Handshake, r#"{"sys":{"type":"plain"}}"#)
        .encode()
        .unwrap();
    let targets = [
        (Transport::TcpTls, hs.to_vec()),
        (Transport::WebSocketTls, hs.to_vec()),
        (
            Transport::WebSocketTls,
            b"GET /nano HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n".to_vec(),
        ),
    ];
    for (transport, bytes) in targets {
        let mut s = TcpStream::connect(t.server.addr(transport).unwrap())
            .await
            .unwrap();
        s.write_all(&bytes).await.unwrap();
        let started = std::time::Instant::now();
        let out = read_to_end(&mut s).await; // fails the test if never closed
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(5),
            "{transport:?}: closed only after {waited:?} (the handshake timeout is 30 s)"
        );
        // At most a TLS alert record (content type 21), never a nano or HTTP answer.
        assert!(
            out.is_empty() || out[0] == 21,
            "{transport:?}: answered in the clear: {out:?}"
        );
    }

    let v: Value = before.request("Echo.Echo", &json!("before")).await.unwrap();
    assert_eq!(v, json!("before"));
    trusted_echo(&t, "after").await;
}
