//! The closed-loop load: N connections, each sends one request (or notify), waits for its
//! reply, verifies it, and repeats. Latencies go to one hdrhistogram (in nanoseconds); server
//! CPU time is read from `/proc/<pid>/stat` at the start and end of the measured window.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nano::protocol::MessageType;
use serde::Serialize;
use tokio::sync::{watch, Semaphore};

use crate::conn::{Conn, Target};
use crate::handler::{Ping, Pong};
use crate::procfs;
use crate::wire::{ROUTE_ECHO, ROUTE_PING, ROUTE_PONG};

/// Request/response or notify→push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `TestHandler.Echo` request → response.
    Echo,
    /// `TestHandler.Ping` notify → `pong` push.
    Ping,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Ping => "ping",
        }
    }
}

/// One server's side of a load case.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Shown in the progress line, e.g. `nano`.
    pub label: String,
    pub target: Target,
    /// The server's processes (several for a cluster), for CPU time per request and memory,
    /// summed over them.
    pub server_pids: Vec<u32>,
}

/// What every server of a case gets.
#[derive(Debug, Clone)]
pub struct CaseSpec {
    /// Shown in the progress line, e.g. `[3/12]`.
    pub label: String,
    pub mode: Mode,
    pub conns: usize,
    pub warmup: Duration,
    /// Measured time per server, split into `segments` slices.
    pub duration: Duration,
    /// The servers take turns in this many slices (A B B A A B …), so that what else runs on
    /// the machine weighs on each alike.
    pub segments: usize,
    pub content: String,
}

/// Error counts by kind.
#[derive(Debug, Default)]
struct Errors {
    connect: AtomicU64,
    io: AtomicU64,
    timeout: AtomicU64,
    mismatch: AtomicU64,
    sample: Mutex<Option<String>>,
}

impl Errors {
    fn note(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut s = self.sample.lock().unwrap();
        if s.is_none() {
            *s = Some(what);
        }
    }

    fn total(&self) -> u64 {
        self.connect.load(Ordering::Relaxed)
            + self.io.load(Ordering::Relaxed)
            + self.timeout.load(Ordering::Relaxed)
            + self.mismatch.load(Ordering::Relaxed)
    }
}

/// Errors of a case, as reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorReport {
    pub connect: u64,
    pub io: u64,
    pub timeout: u64,
    pub mismatch: u64,
    pub total: u64,
    /// The first error seen, for diagnosis.
    pub first: Option<String>,
}

/// The measured figures of one server in a case.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub target: String,
    pub mode: Mode,
    pub conns: usize,
    pub connected: usize,
    /// Measured seconds (sum of the slices).
    pub seconds: f64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors: ErrorReport,
    /// Server CPU (user + system) per operation, microseconds, summed over the server's
    /// processes; `None` without a pid.
    pub server_cpu_us_per_op: Option<f64>,
    /// The same per server process, in the order of [`LoadSpec::server_pids`] (one entry on a
    /// single process).
    pub server_cpu_us_per_op_each: Vec<Option<f64>>,
    /// Server CPU use over the measured time, in cores (1.0 = one core busy).
    pub server_cores: Option<f64>,
    /// This (client) process's CPU per operation, microseconds.
    pub client_cpu_us_per_op: Option<f64>,
    /// Server resident memory at the end, KiB (summed over its processes).
    pub server_rss_kib: Option<u64>,
}

/// Connection states, set by the driver.
const PAUSED: u8 = 0;
/// Running, not measured (warm-up, settling after a switch).
const RUN: u8 = 1;
const MEASURE: u8 = 2;
const STOP: u8 = 3;

/// Latencies buffered per connection before they are merged into the shared histogram.
const LOCAL_SAMPLES: usize = 1024;

/// Time allowed for one reply before the connection counts a timeout and stops.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Unmeasured time after a server's connections resume, before its slice is measured.
const SETTLE: Duration = Duration::from_millis(50);

/// One server's connections.
struct Shared {
    state: AtomicU8,
    wake: watch::Sender<u8>,
    /// Operations completed in measured time.
    ops: AtomicU64,
    /// Operations completed overall (progress).
    all_ops: AtomicU64,
    /// Connections that finished connecting (or failed to).
    settled: AtomicUsize,
    connected: AtomicUsize,
    hist: Mutex<Histogram<u64>>,
    errors: Errors,
}

impl Shared {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.wake.send_replace(state);
    }
}

fn new_histogram() -> Histogram<u64> {
    // 100 ns .. 100 s, 3 significant figures.
    Histogram::new_with_bounds(100, 100_000_000_000, 3).expect("histogram bounds")
}

/// Accumulated measurement of one server.
#[derive(Default)]
struct Window {
    seconds: f64,
    server_cpu: Option<Duration>,
    /// Per server process.
    server_cpu_each: Vec<Option<Duration>>,
    client_cpu: Duration,
}

/// Runs one case against every server of `specs`, taking turns; one result per spec.
pub async fn run(case: &CaseSpec, specs: &[LoadSpec]) -> Vec<LoadResult> {
    let mut sets = Vec::new();
    let mut tasks = Vec::new();
    let content: Arc<str> = case.content.as_str().into();
    let connecting = Arc::new(Semaphore::new(128));
    for spec in specs {
        let (wake, wake_rx) = watch::channel(PAUSED);
        let shared = Arc::new(Shared {
            state: AtomicU8::new(PAUSED),
            wake,
            ops: AtomicU64::new(0),
            all_ops: AtomicU64::new(0),
            settled: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            hist: Mutex::new(new_histogram()),
            errors: Errors::default(),
        });
        for i in 0..case.conns {
            let shared = shared.clone();
            let target = spec.target.clone();
            let wake_rx = wake_rx.clone();
            let connecting = connecting.clone();
            let content = content.clone();
            let mode = case.mode;
            tasks.push(tokio::spawn(async move {
                let permit = connecting.acquire().await.expect("semaphore open");
                let opened = tokio::time::timeout(
                    Duration::from_secs(30),
                    Conn::open(&target, None, i as u32),
                )
                .await;
                drop(permit);
                let conn = match opened {
                    Ok(Ok(c)) => {
                        shared.connected.fetch_add(1, Ordering::Relaxed);
                        Some(c)
                    }
                    Ok(Err(e)) => {
                        shared
                            .errors
                            .note(&shared.errors.connect, format!("connect: {e}"));
                        None
                    }
                    Err(_) => {
                        shared
                            .errors
                            .note(&shared.errors.connect, "connect: timeout".into());
                        None
                    }
                };
                shared.settled.fetch_add(1, Ordering::Release);
                if let Some(conn) = conn {
                    closed_loop(conn, mode, &content, &shared, wake_rx).await;
                }
            }));
        }
        sets.push(shared);
    }

    // Every connection up (or failed) before anything is measured.
    let t_connect = Instant::now();
    while sets
        .iter()
        .any(|s| s.settled.load(Ordering::Acquire) < case.conns)
        && t_connect.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let tty = std::io::stderr().is_terminal();
    let mut windows: Vec<Window> = specs
        .iter()
        .map(|s| Window {
            server_cpu_each: vec![None; s.server_pids.len()],
            ..Window::default()
        })
        .collect();
    for (i, set) in sets.iter().enumerate() {
        set.set(RUN);
        progress(case, &specs[i], set, "warm-up", case.warmup, tty).await;
        set.set(PAUSED);
    }
    let segments = case.segments.max(1);
    let slice = case.duration.div_f64(segments as f64);
    for seg in 0..segments {
        // A B, B A, A B, …
        let order: Vec<usize> = if seg % 2 == 0 {
            (0..sets.len()).collect()
        } else {
            (0..sets.len()).rev().collect()
        };
        for i in order {
            let set = &sets[i];
            set.set(RUN);
            tokio::time::sleep(SETTLE).await;
            let cpu0 = procfs::cpu_sum(&specs[i].server_pids);
            let each0: Vec<_> = specs[i]
                .server_pids
                .iter()
                .map(|&p| procfs::cpu(p))
                .collect();
            let me0 = procfs::cpu(std::process::id());
            let t0 = Instant::now();
            set.set(MEASURE);
            let phase = format!("slice {}/{segments}", seg + 1);
            progress(case, &specs[i], set, &phase, slice, tty).await;
            set.set(PAUSED);
            let w = &mut windows[i];
            w.seconds += t0.elapsed().as_secs_f64();
            let cpu1 = procfs::cpu_sum(&specs[i].server_pids);
            for (k, &pid) in specs[i].server_pids.iter().enumerate() {
                if let (Some(a), Some(b)) = (each0[k], procfs::cpu(pid)) {
                    let sum = &mut w.server_cpu_each[k];
                    *sum = Some(sum.unwrap_or_default() + b.since(&a));
                }
            }
            let me1 = procfs::cpu(std::process::id());
            if let (Some(a), Some(b)) = (cpu0, cpu1) {
                w.server_cpu = Some(w.server_cpu.unwrap_or_default() + b.since(&a));
            }
            if let (Some(a), Some(b)) = (me0, me1) {
                w.client_cpu += b.since(&a);
            }
        }
    }
    if tty {
        eprint!("\r\x1b[2K");
    }
    let rss: Vec<Option<u64>> = specs
        .iter()
        .map(|s| procfs::rss_kib_sum(&s.server_pids))
        .collect();
    for set in &sets {
        set.set(STOP);
    }
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(OP_TIMEOUT + Duration::from_secs(2), t)
            .await
            .is_err()
        {
            abort.abort();
        }
    }

    let us = |ns: u64| ns as f64 / 1000.0;
    sets.iter()
        .zip(specs)
        .zip(windows)
        .zip(rss)
        .map(|(((set, spec), w), rss)| {
            let ops = set.ops.load(Ordering::Relaxed);
            let hist = set.hist.lock().unwrap().clone();
            let e = &set.errors;
            let errors = ErrorReport {
                connect: e.connect.load(Ordering::Relaxed),
                io: e.io.load(Ordering::Relaxed),
                timeout: e.timeout.load(Ordering::Relaxed),
                mismatch: e.mismatch.load(Ordering::Relaxed),
                total: e.total(),
                first: e.sample.lock().unwrap().clone(),
            };
            let per_op = |d: Duration| (ops > 0).then(|| d.as_secs_f64() * 1e6 / ops as f64);
            LoadResult {
                target: spec.target.describe(),
                mode: case.mode,
                conns: case.conns,
                connected: set.connected.load(Ordering::Relaxed),
                seconds: w.seconds,
                ops,
                ops_per_sec: ops as f64 / w.seconds.max(1e-9),
                mean_us: hist.mean() / 1000.0,
                p50_us: us(hist.value_at_quantile(0.50)),
                p99_us: us(hist.value_at_quantile(0.99)),
                p999_us: us(hist.value_at_quantile(0.999)),
                max_us: us(hist.max()),
                errors,
                server_cpu_us_per_op: w.server_cpu.and_then(per_op),
                server_cpu_us_per_op_each: w
                    .server_cpu_each
                    .iter()
                    .map(|c| c.and_then(per_op))
                    .collect(),
                server_cores: w.server_cpu.map(|c| c.as_secs_f64() / w.seconds.max(1e-9)),
                client_cpu_us_per_op: per_op(w.client_cpu),
                server_rss_kib: rss,
            }
        })
        .collect()
}

/// Sleeps `d`, keeping a progress line up to date on a terminal.
async fn progress(
    case: &CaseSpec,
    spec: &LoadSpec,
    set: &Shared,
    phase: &str,
    d: Duration,
    tty: bool,
) {
    let start = Instant::now();
    let base = set.all_ops.load(Ordering::Relaxed);
    let line = |elapsed: f64| {
        let done = set.all_ops.load(Ordering::Relaxed) - base;
        format!(
            "{} {} {} c={} {} {}: {:.1}/{:.1}s {:>9.0} ops/s errors {}",
            case.label,
            spec.label,
            case.mode.name(),
            case.conns,
            spec.target.describe(),
            phase,
            elapsed,
            d.as_secs_f64(),
            done as f64 / elapsed.max(1e-3),
            set.errors.total()
        )
    };
    if !tty {
        if phase == "warm-up" {
            eprintln!("{}", line(0.0).split(": ").next().unwrap_or(""));
        }
        tokio::time::sleep(d).await;
        return;
    }
    while start.elapsed() < d {
        let left = d.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_millis(250))).await;
        eprint!("\r\x1b[2K{}", line(start.elapsed().as_secs_f64()));
        let _ = std::io::stderr().flush();
    }
}

/// One connection's closed loop until the stop phase.
async fn closed_loop(
    mut conn: Conn,
    mode: Mode,
    content: &str,
    shared: &Shared,
    mut wake: watch::Receiver<u8>,
) {
    let mut local: Vec<u64> = Vec::with_capacity(LOCAL_SAMPLES);
    let mut seq: i64 = 0;
    let mut counted: u64 = 0;
    let flush = |local: &mut Vec<u64>, counted: &mut u64| {
        if !local.is_empty() {
            let mut h = shared.hist.lock().unwrap();
            for &v in local.iter() {
                h.saturating_record(v);
            }
            local.clear();
        }
        shared.ops.fetch_add(*counted, Ordering::Relaxed);
        *counted = 0;
    };
    loop {
        let phase = shared.state.load(Ordering::Acquire);
        match phase {
            STOP => break,
            PAUSED => {
                flush(&mut local, &mut counted);
                if wake.wait_for(|s| *s != PAUSED).await.is_err() {
                    break;
                }
                continue;
            }
            _ => {}
        }
        seq += 1;
        let ping = Ping {
            content: content.to_owned(),
            sequence: seq,
        };
        let (id, packet) = match mode {
            Mode::Echo => {
                let (id, p) = conn.request_packet(ROUTE_ECHO, &ping);
                (Some(id), p)
            }
            Mode::Ping => (None, conn.notify_packet(ROUTE_PING, &ping)),
        };
        let t = Instant::now();
        if let Err(e) = conn.send(&packet).await {
            shared.errors.note(&shared.errors.io, format!("write: {e}"));
            break;
        }
        let reply = match tokio::time::timeout(OP_TIMEOUT, conn.recv_message()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                shared.errors.note(&shared.errors.io, format!("read: {e}"));
                break;
            }
            Err(_) => {
                shared.errors.note(
                    &shared.errors.timeout,
                    format!("no reply within {OP_TIMEOUT:?}"),
                );
                break;
            }
        };
        let elapsed = t.elapsed();
        let ok = match (mode, id) {
            (Mode::Echo, Some(id)) => {
                reply.kind == MessageType::Response && reply.id == id && !reply.error
            }
            _ => conn.is_push(&reply, ROUTE_PONG),
        };
        let verdict = if !ok {
            Err(format!(
                "unexpected reply: {:?} id {} route {:?} error {}",
                reply.kind, reply.id, reply.route, reply.error
            ))
        } else {
            match <Pong as prost::Message>::decode(&reply.payload[..]) {
                Ok(p) if p.sequence == seq + 1 && is_thrice(&p.content, content) => Ok(()),
                Ok(p) => Err(format!(
                    "wrong pong: sequence {} for {seq}, content of {} bytes",
                    p.sequence,
                    p.content.len()
                )),
                Err(e) => Err(format!("undecodable pong: {e}")),
            }
        };
        if let Err(what) = verdict {
            shared.errors.note(&shared.errors.mismatch, what);
            continue;
        }
        shared.all_ops.fetch_add(1, Ordering::Relaxed);
        if phase == MEASURE && shared.state.load(Ordering::Acquire) == MEASURE {
            local.push(elapsed.as_nanos() as u64);
            counted += 1;
            if local.len() == LOCAL_SAMPLES {
                flush(&mut local, &mut counted);
            }
        }
    }
    flush(&mut local, &mut counted);
}

fn is_thrice(got: &str, content: &str) -> bool {
    got.len() == content.len() * 3
        && got
            .as_bytes()
            .chunks(content.len().max(1))
            .all(|c| c == content.as_bytes())
}

/// The load modes and transports named on the command line (`--mode`, `--transport`); the
/// error names the first unknown one.
pub fn parse_modes(modes: &[String], transports: &[String]) -> Result<Vec<Mode>, String> {
    for t in transports {
        if t != "tcp" && t != "ws" {
            return Err(format!("--transport: unknown {t} (tcp, ws)"));
        }
    }
    modes
        .iter()
        .map(|m| match m.as_str() {
            "echo" => Ok(Mode::Echo),
            "ping" => Ok(Mode::Ping),
            other => Err(format!("--mode: unknown {other} (echo, ping)")),
        })
        .collect()
}
