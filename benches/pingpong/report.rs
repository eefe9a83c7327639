//! The readable tables and the JSON file.

use std::path::PathBuf;

use serde::Serialize;

use crate::broadcast::BroadcastResult;
use crate::load::LoadResult;
use crate::scale::ScaleResult;

/// One load case, ours beside the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub mode: String,
    pub transport: String,
    pub conns: usize,
    /// The server under test (nano, or an external target).
    pub ours: LoadResult,
    pub baseline: Option<LoadResult>,
    pub ratios: Option<Ratios>,
    /// Which variant of nano ran beside it (`metrics`: its metrics on; `resume`: resuming
    /// sessions), in the same interleaved run.
    pub variant_name: &'static str,
    pub variant: Option<LoadResult>,
    /// The variant ÷ plain nano.
    pub variant_cost: Option<Ratios>,
}

/// ours ÷ baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// Throughput ratio (higher is better; target ≥ 0.90).
    pub throughput: f64,
    /// Server CPU per operation ratio (lower is better; target ≤ 1.15).
    pub cpu_per_op: Option<f64>,
    /// p50 latency ratio.
    pub p50: f64,
    /// p99 latency ratio (lower is better; target ≤ 1.2).
    pub p99: f64,
}

impl Ratios {
    pub fn of(ours: &LoadResult, base: &LoadResult) -> Ratios {
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        Ratios {
            throughput: div(ours.ops_per_sec, base.ops_per_sec),
            cpu_per_op: ours
                .server_cpu_us_per_op
                .zip(base.server_cpu_us_per_op)
                .map(|(a, b)| div(a, b)),
            p50: div(ours.p50_us, base.p50_us),
            p99: div(ours.p99_us, base.p99_us),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub profile: String,
    pub machine: Machine,
    pub unix_time: u64,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub segments: usize,
    pub load: Vec<CaseReport>,
    pub scale: Vec<ScaleResult>,
    pub broadcast: Option<BroadcastResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub client_threads: usize,
}

fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "-".into()
    } else if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}

fn fmt_int(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "-".into()
    }
}

/// The load table: one row per server and case (`ours_name`, then `base_name`), then the
/// ratio.
pub fn print_load(cases: &[CaseReport], ours_name: &str, base_name: &str) {
    if cases.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<5} {:<4} {:>6}  {:<8} {:>10} {:>8} {:>8} {:>8} {:>9} {:>6}  errors",
        "mode", "via", "conns", "server", "ops/s", "p50", "p99", "p99.9", "cpu/op", "cores"
    );
    println!("{}", "-".repeat(96));
    for c in cases {
        let row = |name: &str, r: &LoadResult, first: bool| {
            let (m, t, n) = if first {
                (c.mode.as_str(), c.transport.as_str(), c.conns.to_string())
            } else {
                ("", "", String::new())
            };
            let errs = if r.errors.total == 0 {
                "0".to_string()
            } else {
                format!(
                    "{} ({})",
                    r.errors.total,
                    r.errors.first.as_deref().unwrap_or("?")
                )
            };
            println!(
                "{:<5} {:<4} {:>6}  {:<8} {:>10} {:>8} {:>8} {:>8} {:>9} {:>6}  {}",
                m,
                t,
                n,
                name,
                fmt_int(r.ops_per_sec),
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                fmt_us(r.p999_us),
                r.server_cpu_us_per_op
                    .map(|v| format!("{v:.1}µs"))
                    .unwrap_or_else(|| "-".into()),
                r.server_cores
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into()),
                errs
            );
        };
        let ratio = |name: &str, r: &Ratios| {
            println!(
                "{:<5} {:<4} {:>6}  {:<8} {:>10} {:>8} {:>8} {:>8} {:>9}",
                "",
                "",
                "",
                name,
                fmt_ratio(r.throughput),
                fmt_ratio(r.p50),
                fmt_ratio(r.p99),
                "",
                r.cpu_per_op.map(fmt_ratio).unwrap_or_else(|| "-".into()),
            );
        };
        row(ours_name, &c.ours, true);
        if let Some(b) = &c.baseline {
            row(base_name, b, false);
        }
        if let Some(r) = &c.ratios {
            ratio("ratio", r);
        }
        if let Some(m) = &c.variant {
            row(&format!("+{}", c.variant_name), m, false);
        }
        if let Some(r) = &c.variant_cost {
            ratio("v÷nano", r);
        }
    }
}

/// The headline and the target checks.
pub fn print_targets(cases: &[CaseReport], scale: &[ScaleResult]) {
    let find = |mode: &str, via: &str, conns: usize| {
        cases
            .iter()
            .find(|c| c.mode == mode && c.transport == via && c.conns == conns)
    };
    let mut lines = Vec::new();
    let check = |ok: bool| if ok { "ok  " } else { "MISS" };
    if let Some(c) = find("echo", "tcp", 100) {
        if let Some(r) = &c.ratios {
            println!();
            println!(
                "HEADLINE  request/response, 100 TCP connections: nano = {:.2}× the raw baseline's throughput ({} vs {} ops/s)",
                r.throughput,
                fmt_int(c.ours.ops_per_sec),
                fmt_int(c.baseline.as_ref().map_or(0.0, |b| b.ops_per_sec))
            );
            lines.push(format!(
                "{} echo tcp 100: throughput {:.2}× baseline (target ≥ 0.90)",
                check(r.throughput >= 0.90),
                r.throughput
            ));
            if let Some(cpu) = r.cpu_per_op {
                lines.push(format!(
                    "{} echo tcp 100: server CPU per request {:.2}× baseline (target ≤ 1.15)",
                    check(cpu <= 1.15),
                    cpu
                ));
            }
            lines.push(format!(
                "{} echo tcp 100: p99 {:.2}× baseline (target ≤ 1.2)",
                check(r.p99 <= 1.2),
                r.p99
            ));
        }
    }
    for mode in ["echo", "ping"] {
        for via in ["tcp", "ws"] {
            if let Some(c) = find(mode, via, 1000) {
                if let Some(r) = &c.ratios {
                    lines.push(format!(
                        "{} {mode} {via} 1000: {} errors, throughput {:.2}× baseline (target 0 errors, ≥ 0.90)",
                        check(c.ours.errors.total == 0 && r.throughput >= 0.90),
                        c.ours.errors.total,
                        r.throughput
                    ));
                }
            }
        }
    }
    for c in cases
        .iter()
        .filter(|c| c.transport == "ws" && c.conns == 100)
    {
        if let Some(r) = &c.ratios {
            lines.push(format!(
                "{} {} ws 100: throughput {:.2}× the raw WebSocket baseline (target ≥ 0.90)",
                check(r.throughput >= 0.90),
                c.mode,
                r.throughput
            ));
        }
    }
    for s in scale.iter().filter(|s| s.server == "nano") {
        let limit = if s.target.starts_with("ws") {
            8192.0
        } else {
            4096.0
        };
        if let Some(b) = s.bytes_per_conn {
            lines.push(format!(
                "{} idle {}: {:.2} KiB per connection, {}/{} stayed connected (target ≤ {} KiB, all)",
                check(b <= limit && s.alive == s.conns),
                s.target.split(':').next().unwrap_or(""),
                b / 1024.0,
                s.alive,
                s.conns,
                limit / 1024.0
            ));
        }
    }
    if !lines.is_empty() {
        println!();
        println!("targets:");
        for l in lines {
            println!("  {l}");
        }
    }
}

pub fn print_scale(scale: &[ScaleResult]) {
    if scale.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<8} {:<26} {:>7} {:>7} {:>7} {:>7} {:>9} {:>10} {:>10}  errors",
        "server", "target", "conns", "up", "alive", "hb rx", "connect", "RSS Δ MiB", "per conn"
    );
    println!("{}", "-".repeat(108));
    for s in scale {
        let delta = match (s.rss_before_kib, s.rss_connected_kib.max(s.rss_end_kib)) {
            (Some(a), Some(b)) => format!("{:.1}", b.saturating_sub(a) as f64 / 1024.0),
            _ => "-".into(),
        };
        println!(
            "{:<8} {:<26} {:>7} {:>7} {:>7} {:>7} {:>8.1}s {:>10} {:>10}  {}{}",
            s.server,
            s.target,
            s.conns,
            s.connected,
            s.alive,
            s.got_heartbeat,
            s.connect_secs,
            delta,
            s.bytes_per_conn
                .map(|b| format!("{:.2} KiB", b / 1024.0))
                .unwrap_or_else(|| "-".into()),
            s.errors,
            s.first_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    println!("(hb rx: connections that received the server's heartbeat during the hold; the baseline sends none)");
}

/// The broadcast figures, from the current line on (callers print the blank line before).
pub fn print_broadcast(b: &BroadcastResult) {
    println!(
        "broadcast to a group of {} sessions ({} joined, TCP), {} rounds:",
        b.members, b.joined, b.rounds
    );
    println!(
        "  time until every member has read the push: median {:.1} ms, max {:.1} ms (first member: {:.2} ms)",
        b.reach_all_ms_median, b.reach_all_ms_max, b.first_ms_median
    );
    println!(
        "  server time in Group::broadcast (encode once + queue on every member, or one frame per gate on a cluster backend): median {:.0} µs",
        b.enqueue_us_median
    );
    println!(
        "  serializations per broadcast: {} (target 1) {}",
        b.serializations_per_broadcast,
        if b.serializations_per_broadcast == 1 {
            "ok"
        } else {
            "MISS"
        }
    );
    for (round, sent) in b.node_messages.iter().enumerate() {
        let total: u64 = sent.values().sum();
        let by_peer: Vec<String> = sent.iter().map(|(p, n)| format!("{p} {n}")).collect();
        println!(
            "  node-to-node messages, broadcast {}: {total} ({})",
            round + 1,
            by_peer.join(", ")
        );
    }
    println!(
        "  errors: {}{}",
        b.errors,
        b.first_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
}

/// Writes a JSON report, by default to `target/nano-bench/<name>.json`; returns its path.
pub fn write_json(
    report: &impl Serialize,
    name: &str,
    path: Option<PathBuf>,
) -> std::io::Result<PathBuf> {
    let path = path.unwrap_or_else(|| target_dir().join("nano-bench").join(format!("{name}.json")));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else three levels above this executable
/// (`target/release/deps/pingpong-…`).
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .filter(|d| d.file_name().is_some_and(|n| n == "target") || d.join("CACHEDIR.TAG").exists())
        .unwrap_or_else(|| PathBuf::from("target"))
}
