//! `bench`: N connections sending one request after the other for a duration, then the
//! throughput, latency percentiles and errors by kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use nano::{ClientError, Serializer};
use serde_json::json;

use crate::{connect, Common, Failure, Setup};

/// `nano-cli bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Server URL.
    pub url: String,
    /// The request route.
    #[arg(long)]
    pub route: String,
    /// The request payload as JSON (default `{}`).
    #[arg(long)]
    pub payload: Option<String>,
    /// Concurrent connections (each with one request in flight).
    #[arg(long, default_value_t = 10)]
    pub conns: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

/// What one connection measured.
struct Part {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

/// The kind of a failed request, for the error table.
fn kind(e: &ClientError) -> String {
    match e {
        ClientError::Server(err) => format!("server {}", err.code()),
        ClientError::Timeout => "timeout".into(),
        ClientError::Closed => "closed".into(),
        ClientError::Io(_) => "io".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Encode(_) => "encode".into(),
        ClientError::Decode(_) => "decode".into(),
        _ => "other".into(),
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits: the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// `bench`.
pub async fn run<S: Serializer>(setup: &Setup, args: &BenchArgs) -> Result<(), Failure> {
    let duration = Duration::try_from_secs_f64(args.duration)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("bad --duration {}", args.duration))?;
    if args.conns == 0 {
        return Err(Failure::Other("--conns must be at least 1".into()));
    }
    let payload: Arc<[u8]> = setup.codec.encode(args.payload.as_deref())?.into();
    let mut clients = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        clients.push(connect::<S>(setup).await?);
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let (route, payload, done) = (args.route.clone(), Arc::clone(&payload), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut part = Part {
                latencies: histogram(),
                errors: BTreeMap::new(),
            };
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.request_raw(&route, &payload).await {
                    Ok(_) => {
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        part.latencies.saturating_record(us.max(1));
                    }
                    Err(e) => {
                        *part.errors.entry(kind(&e)).or_default() += 1;
                        if client.is_closed() {
                            break;
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            client.close().await;
            part
        }));
    }
    let bar = ProgressBar::new(duration.as_millis().try_into().unwrap_or(u64::MAX));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed}/{duration} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100).min(deadline - Instant::now().min(deadline)))
            .await;
        let elapsed = start.elapsed();
        let n = done.load(Ordering::Relaxed);
        bar.set_position(elapsed.as_millis().try_into().unwrap_or(u64::MAX));
        bar.set_message(format!(
            "{n} requests, {:.0} ops/s",
            n as f64 / elapsed.as_secs_f64().max(1e-9)
        ));
    }
    let mut latencies = histogram();
    let mut errors = BTreeMap::<String, u64>::new();
    for task in tasks {
        let part = task
            .await
            .map_err(|e| Failure::Other(format!("a bench connection failed: {e}")))?;
        let _ = latencies.add(&part.latencies);
        for (k, n) in part.errors {
            *errors.entry(k).or_default() += n;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let ok = latencies.len();
    let failed: u64 = errors.values().sum();
    let ops = ok as f64 / elapsed;
    let q = |p: f64| latencies.value_at_quantile(p);
    if args.json {
        println!(
            "{}",
            json!({
                "route": args.route,
                "conns": args.conns,
                "duration_s": elapsed,
                "ok": ok,
                "errors": failed,
                "errors_by_kind": errors,
                "ops_per_sec": ops,
                "latency_us": {
                    "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99.9": q(0.999),
                    "max": latencies.max(),
                },
            })
        );
    } else {
        println!(
            "{} x {} conns for {elapsed:.2}s: {ok} ok, {failed} errors",
            args.route, args.conns
        );
        println!("ops/s: {ops:.0}");
        println!(
            "latency: p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            latencies.max()
        );
        for (k, n) in &errors {
            println!("errors {k}: {n}");
        }
    }
    Ok(())
}
