//! A TCP proxy on 127.0.0.1 whose connections a test cuts: the client's and the server's
//! sockets both go away at once, reset, as when a phone changes network and the NAT in between
//! forgets the connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Forwards every connection it accepts to `upstream` until cut.
pub struct Cutter {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    refusing: Arc<AtomicBool>,
    accept: AbortHandle,
}

impl Cutter {
    /// Listens on a free port of 127.0.0.1; a cut resets both sockets (RST).
    pub async fn start(upstream: SocketAddr) -> Cutter {
        Self::start_with(upstream, true).await
    }

    /// The same, but a cut closes both sockets (FIN): over TCP the goodbye of a client that
    /// leaves, over WebSocket a drop (no close frame).
    pub async fn start_closing(upstream: SocketAddr) -> Cutter {
        Self::start_with(upstream, false).await
    }

    async fn start_with(upstream: SocketAddr, reset: bool) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let accept = {
            let conns = conns.clone();
            let refusing = refusing.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if refusing.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            if reset {
                                // A zero linger makes the drop a reset, at once (no blocking).
                                #[allow(deprecated)]
                                let _ = (
                                    client.set_linger(Some(std::time::Duration::ZERO)),
                                    server.set_linger(Some(std::time::Duration::ZERO)),
                                );
                            }
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    conns.lock().unwrap().push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        Cutter {
            addr,
            conns,
            refusing,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection made so far: both of its sockets are dropped.
    pub fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// While on, connections are accepted and closed at once (the network is down).
    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
