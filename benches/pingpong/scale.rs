//! Connection scale: N idle connections that keep heartbeating; the server's resident memory
//! per connection (VmRSS delta ÷ connections) and whether every connection stayed up.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::conn::{Conn, Target};
use crate::procfs;

/// The measured figures of one scale run.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub server: String,
    pub target: String,
    pub conns: usize,
    pub connected: usize,
    /// Connections still up at the end of the hold.
    pub alive: usize,
    /// Connections that received at least one heartbeat from the server during the hold.
    pub got_heartbeat: usize,
    pub heartbeat_secs: Option<u64>,
    pub connect_secs: f64,
    pub hold_secs: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_connected_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// (max(RSS connected, RSS end) − RSS before) ÷ connections, bytes.
    pub bytes_per_conn: Option<f64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Opens `conns` idle connections, holds them `hold`, measures `pid`'s memory.
pub async fn run(
    server: &str,
    target: Target,
    conns: usize,
    hold: Duration,
    sources: Vec<IpAddr>,
    pid: Option<u32>,
) -> ScaleResult {
    let rss_before = pid.and_then(procfs::rss_kib);
    let connected = Arc::new(AtomicUsize::new(0));
    let settled = Arc::new(AtomicUsize::new(0));
    let alive = Arc::new(AtomicUsize::new(0));
    let got_hb = Arc::new(AtomicUsize::new(0));
    let hb_secs = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let connecting = Arc::new(Semaphore::new(128));
    let (done_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::with_capacity(conns);
    let t0 = Instant::now();
    eprintln!(
        "scale: {server} {}: opening {conns} connections",
        target.describe()
    );
    for i in 0..conns {
        let target = target.clone();
        let src = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let (connected, settled, alive, got_hb, hb_secs, errors, first_error, connecting) = (
            connected.clone(),
            settled.clone(),
            alive.clone(),
            got_hb.clone(),
            hb_secs.clone(),
            errors.clone(),
            first_error.clone(),
            connecting.clone(),
        );
        let mut done = done_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let note = |e: String| {
                errors.fetch_add(1, Ordering::Relaxed);
                first_error.lock().unwrap().get_or_insert(e);
            };
            let permit = connecting.acquire().await.expect("open");
            let opened =
                tokio::time::timeout(Duration::from_secs(60), Conn::open(&target, src, i as u32))
                    .await;
            drop(permit);
            let mut conn = match opened {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    note(format!("connect: {e}"));
                    settled.fetch_add(1, Ordering::Release);
                    return;
                }
                Err(_) => {
                    note("connect: timeout".into());
                    settled.fetch_add(1, Ordering::Release);
                    return;
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            alive.fetch_add(1, Ordering::Relaxed);
            settled.fetch_add(1, Ordering::Release);
            let period = conn.heartbeat.unwrap_or(Duration::from_secs(30));
            hb_secs.store(period.as_secs(), Ordering::Relaxed);
            // Spread the heartbeats over the period rather than all at once.
            let offset = period.mul_f64((i % 97) as f64 / 97.0);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            let mut counted_hb = false;
            loop {
                tokio::select! {
                    m = conn.recv_message() => {
                        match m {
                            Ok(m) => note(format!("idle connection got {:?}", m.kind)),
                            Err(e) => {
                                note(format!("idle connection ended: {e}"));
                                alive.fetch_sub(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                    _ = tick.tick() => {
                        if let Err(e) = conn.send_heartbeat().await {
                            note(format!("heartbeat: {e}"));
                            alive.fetch_sub(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    _ = done.recv() => return,
                }
                if !counted_hb && conn.heartbeats_received > 0 {
                    counted_hb = true;
                    got_hb.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut last_report = Instant::now();
    while settled.load(Ordering::Acquire) < conns && t0.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            eprintln!(
                "scale: {}/{conns} connected",
                connected.load(Ordering::Relaxed)
            );
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = pid.and_then(procfs::rss_kib);
    let n = connected.load(Ordering::Relaxed);
    eprintln!(
        "scale: {n}/{conns} connected in {connect_secs:.1}s; holding {:.0}s",
        hold.as_secs_f64()
    );
    let t_hold = Instant::now();
    tokio::time::sleep(hold).await;
    let hold_secs = t_hold.elapsed().as_secs_f64();
    let rss_end = pid.and_then(procfs::rss_kib);
    let alive_n = alive.load(Ordering::Relaxed);
    let _ = done_tx.send(());
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let bytes_per_conn = match (rss_before, rss_connected.max(rss_end)) {
        (Some(a), Some(b)) if n > 0 => Some((b.saturating_sub(a) as f64 * 1024.0) / n as f64),
        _ => None,
    };
    let hb = hb_secs.load(Ordering::Relaxed);
    let first_error = first_error.lock().unwrap().clone();
    ScaleResult {
        server: server.to_owned(),
        target: target.describe(),
        conns,
        connected: n,
        alive: alive_n,
        got_heartbeat: got_hb.load(Ordering::Relaxed),
        heartbeat_secs: (hb > 0).then_some(hb),
        connect_secs,
        hold_secs,
        rss_before_kib: rss_before,
        rss_connected_kib: rss_connected,
        rss_end_kib: rss_end,
        bytes_per_conn,
        errors: errors.load(Ordering::Relaxed),
        first_error,
    }
}
