//! `cargo bench --bench pingpong`: where nano stands against the physical limit.
//!
//! 1. **Load**: N connections in closed loop (each sends one message, waits for its reply,
//!    verifies it, repeats) against the pingpong component — `TestHandler.Echo`
//!    request/response and `TestHandler.Ping` notify → `pong` push — over TCP and WebSocket,
//!    with 1, 100 and 1,000 connections. The same lean client then loads a hand-written tokio
//!    server that speaks just enough of the protocol (the *baseline*); ours ÷ baseline is the
//!    headline.
//! 2. **Scale**: 10,000 idle heartbeating connections; server memory per connection.
//! 3. **Broadcast**: a group of 10,000 sessions; time for one broadcast to reach every member,
//!    serializations per broadcast.
//!
//! Each server runs as its own process (this binary re-executed with the hidden `--serve`
//! flag) so its CPU time and memory come from `/proc/<pid>`.
//!
//! ```text
//! cargo bench --bench pingpong                       # quick (default), a couple of minutes
//! cargo bench --bench pingpong -- --full             # longer windows (or NANO_BENCH=full)
//! cargo bench --bench pingpong -- --only load --conns 100 --mode echo --transport tcp
//! cargo bench --bench pingpong -- --addr 127.0.0.1:3250            # an external TCP server
//! cargo bench --bench pingpong -- --addr 127.0.0.1:3251 --ws-path /nano   # external WebSocket
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

#[path = "../examples/pingpong/handler.rs"]
#[allow(dead_code)]
mod handler;

#[path = "pingpong/broadcast.rs"]
mod broadcast;
#[path = "pingpong/conn.rs"]
mod conn;
#[path = "pingpong/driver.rs"]
mod driver;
#[path = "pingpong/load.rs"]
mod load;
#[path = "pingpong/procfs.rs"]
mod procfs;
#[path = "pingpong/raw_server.rs"]
mod raw_server;
#[path = "pingpong/report.rs"]
mod report;
#[path = "pingpong/scale.rs"]
mod scale;
#[path = "pingpong/serve.rs"]
mod serve;
#[path = "pingpong/wire.rs"]
mod wire;

use conn::Target;
use driver::Profile;
use load::{CaseSpec, LoadSpec};
use report::{CaseReport, Machine, Ratios, Report};
use serve::{Kind, ServerProc, WS_PATH};

/// Command-line flags. Unknown positional arguments (cargo's bench filter, e.g. `pingpong`)
/// and cargo's `--bench` flag are accepted and ignored.
#[derive(Parser, Debug)]
#[command(
    name = "pingpong",
    about = "nano pingpong benchmark: load, baseline, scale, broadcast"
)]
struct Args {
    /// Short windows (the default; also NANO_BENCH=quick).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Long windows (also NANO_BENCH=full).
    #[arg(long)]
    full: bool,
    /// Load an external nano-protocol server at HOST:PORT instead of starting nano (TCP, or
    /// WebSocket when --ws-path is given without --ws-addr).
    #[arg(long)]
    addr: Option<String>,
    /// WebSocket address of the external server, when it has both TCP (--addr) and WebSocket.
    #[arg(long)]
    ws_addr: Option<String>,
    /// WebSocket path of the external server (default /nano).
    #[arg(long)]
    ws_path: Option<String>,
    /// PID of the external server, for CPU time per request and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connection counts of the load cases.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    conns: Vec<usize>,
    /// Load modes: echo (request/response), ping (notify → push).
    #[arg(long, value_delimiter = ',', default_value = "echo,ping")]
    mode: Vec<String>,
    /// Transports: tcp, ws.
    #[arg(long, value_delimiter = ',', default_value = "tcp,ws")]
    transport: Vec<String>,
    /// Measured seconds per load case (quick 2, full 10).
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds per server and load case (quick 0.5, full 2).
    #[arg(long)]
    warmup: Option<f64>,
    /// Slices the measured time is split into; ours and the baseline take turns (quick 4,
    /// full 10).
    #[arg(long)]
    segments: Option<usize>,
    /// Sections to run: load, scale, broadcast (default: all; with --addr: load).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the raw baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Skip the run of the nano variant (by default each load case also loads a second nano
    /// server, interleaved with the others, to show what a feature costs: see --variant).
    #[arg(long)]
    no_metrics: bool,
    /// The variant of nano loaded beside it: `metrics` (`App::metrics(true)`, the default) or
    /// `resume` (`App::resume`: every packet kept for a client's return).
    #[arg(long, default_value = "metrics")]
    variant: String,
    /// Use the server at HOST:PORT as the baseline instead of the raw one (e.g. another nano
    /// build, or another implementation): TCP, or WebSocket when --ws-path is given without
    /// --baseline-ws-addr.
    #[arg(long)]
    baseline_addr: Option<String>,
    /// WebSocket address of that baseline, when it has both TCP and WebSocket.
    #[arg(long)]
    baseline_ws_addr: Option<String>,
    /// PID of that baseline, for its CPU time per request.
    #[arg(long)]
    baseline_pid: Option<u32>,
    /// Idle connections of the scale test.
    #[arg(long, default_value_t = 10_000)]
    idle_conns: usize,
    /// Seconds the idle connections are held (quick 4, full 30).
    #[arg(long)]
    hold: Option<f64>,
    /// Group size of the broadcast test.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Broadcasts measured (quick 5, full 20).
    #[arg(long)]
    rounds: Option<usize>,
    /// Worker threads of the load client's runtime (default: one per core).
    #[arg(long)]
    client_threads: Option<usize>,
    /// The Ping content (the Pong carries it three times).
    #[arg(long, default_value = "ping-pong bench!")]
    content: String,
    /// Where to write the JSON report (default target/nano-bench/pingpong.json).
    #[arg(long)]
    json: Option<PathBuf>,

    /// Internal: run a server (nano, raw, bcast) in this process.
    #[arg(long, hide = true)]
    serve: Option<String>,
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    tcp: String,
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    ws: String,
    #[arg(long, hide = true, default_value_t = 30)]
    heartbeat: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Bench-name filters passed by `cargo bench NAME`; ignored.
    #[arg(hide = true)]
    filters: Vec<String>,
}

fn main() {
    let args = Args::parse();
    if let Some(kind) = &args.serve {
        let Some(kind) = Kind::parse(kind) else {
            eprintln!("--serve takes nano, raw or bcast");
            std::process::exit(2);
        };
        serve::serve_forever(kind, &args.tcp, &args.ws, args.heartbeat);
    }
    let profile = Profile::choose(args.full, args.quick);
    let client_threads = args.client_threads;
    driver::run_client(client_threads, |nofile, cores, threads| {
        drive(args, profile, nofile, cores, threads)
    })
}

fn resolve(addr: &str) -> SocketAddr {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| {
            eprintln!("cannot resolve {addr}");
            std::process::exit(2)
        })
}

/// Loopback source addresses to spread many connections over (127.0.0.2 … 127.0.0.9), when
/// the target is on loopback; the kernel's choice otherwise.
fn loopback_sources(target: SocketAddr) -> Vec<IpAddr> {
    if !target.ip().is_loopback() || !target.is_ipv4() {
        return Vec::new();
    }
    (2..=9)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

async fn drive(args: Args, profile: Profile, nofile: u64, cores: usize, threads: usize) -> i32 {
    let started = Instant::now();
    let (warmup, duration, segments, hold, rounds) = match profile {
        Profile::Quick => (0.5, 2.0, 4, 4.0, 5),
        Profile::Full => (2.0, 10.0, 10, 30.0, 20),
    };
    let segments = args.segments.unwrap_or(segments);
    let warmup = Duration::from_secs_f64(args.warmup.unwrap_or(warmup));
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(duration));
    let hold = Duration::from_secs_f64(args.hold.unwrap_or(hold));
    let rounds = args.rounds.unwrap_or(rounds);
    let external = args.addr.is_some();
    let sections: Vec<String> = if args.only.is_empty() {
        if external {
            vec!["load".into()]
        } else {
            vec!["load".into(), "scale".into(), "broadcast".into()]
        }
    } else {
        args.only.clone()
    };
    let want = |s: &str| sections.iter().any(|x| x == s);
    let modes = match load::parse_modes(&args.mode, &args.transport) {
        Ok(modes) => modes,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let machine = Machine {
        cpu_model: procfs::cpu_model(),
        cores,
        client_threads: threads,
    };
    println!(
        "nano pingpong bench — {} mode · {} · {} cores · client {} threads · fd limit {}",
        if profile == Profile::Quick {
            "quick"
        } else {
            "full"
        },
        machine.cpu_model,
        cores,
        threads,
        nofile
    );

    // The external target, if any, and an external baseline.
    let (ext_tcp, ext_ws) = external_targets(
        args.addr.as_deref(),
        args.ws_addr.as_deref(),
        args.ws_path.as_deref(),
    );
    let (ext_base_tcp, ext_base_ws) = external_targets(
        args.baseline_addr.as_deref(),
        args.baseline_ws_addr.as_deref(),
        args.ws_path.as_deref(),
    );
    let ours_name = if external { "external" } else { "nano" };

    let mut cases = Vec::new();
    if want("load") {
        let ours = if external {
            None
        } else {
            match ServerProc::spawn(Kind::Nano, 30) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            }
        };
        let variant: &'static str = if args.variant == "resume" {
            "resume"
        } else {
            "metrics"
        };
        let with_metrics = if external || args.no_metrics {
            None
        } else {
            let kind = match args.variant.as_str() {
                "metrics" => Kind::NanoMetrics,
                "resume" => Kind::NanoResume,
                other => {
                    eprintln!("unknown --variant {other}: metrics or resume");
                    return 2;
                }
            };
            match ServerProc::spawn(kind, 30) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            }
        };
        let external_base = args.baseline_addr.is_some() || args.baseline_ws_addr.is_some();
        let base = if args.no_baseline || external_base {
            None
        } else {
            match ServerProc::spawn(Kind::Raw, 30) {
                Ok(s) => Some(s),
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            }
        };
        let ours_pid = ours.as_ref().map(|s| s.pid).or(args.server_pid);
        let total = args.transport.len() * modes.len() * args.conns.len();
        let mut n = 0;
        for via in &args.transport {
            let ours_target = match (&ours, via.as_str()) {
                (Some(s), _) => Some(s.target(via)),
                (None, "tcp") => ext_tcp.clone(),
                (None, _) => ext_ws.clone(),
            };
            let Some(ours_target) = ours_target else {
                eprintln!("no {via} target given: skipping {via}");
                continue;
            };
            let base_target = match (&base, via.as_str()) {
                (Some(s), _) => Some(s.target(via)),
                (None, "tcp") => ext_base_tcp.clone(),
                (None, _) => ext_base_ws.clone(),
            };
            let base_pid = base.as_ref().map(|b| b.pid).or(args.baseline_pid);
            for &mode in &modes {
                for &conns in &args.conns {
                    n += 1;
                    let case = CaseSpec {
                        label: format!("[{n}/{total}]"),
                        mode,
                        conns,
                        warmup,
                        duration,
                        segments,
                        content: args.content.clone(),
                    };
                    let mut specs = vec![LoadSpec {
                        label: ours_name.into(),
                        target: ours_target.clone(),
                        server_pids: ours_pid.into_iter().collect(),
                    }];
                    if let Some(t) = &base_target {
                        specs.push(LoadSpec {
                            label: "baseline".into(),
                            target: t.clone(),
                            server_pids: base_pid.into_iter().collect(),
                        });
                    }
                    if let Some(m) = &with_metrics {
                        specs.push(LoadSpec {
                            label: format!("nano+{variant}"),
                            target: m.target(via),
                            server_pids: vec![m.pid],
                        });
                    }
                    let mut results = load::run(&case, &specs).await.into_iter();
                    let ours_r = results.next().expect("one result per server");
                    let base_r = base_target.as_ref().and_then(|_| results.next());
                    let metrics_r = results.next();
                    let metrics_cost = metrics_r.as_ref().map(|m| Ratios::of(m, &ours_r));
                    let ratios = base_r.as_ref().map(|b| Ratios::of(&ours_r, b));
                    eprintln!(
                        "  {} {} c={}: {ours_name} {:.0} ops/s p99 {:.0}µs err {}{}",
                        mode.name(),
                        via,
                        conns,
                        ours_r.ops_per_sec,
                        ours_r.p99_us,
                        ours_r.errors.total,
                        match (&base_r, &ratios) {
                            (Some(b), Some(r)) => format!(
                                " | baseline {:.0} ops/s p99 {:.0}µs err {} | ratio {:.2}× cpu/op {}",
                                b.ops_per_sec,
                                b.p99_us,
                                b.errors.total,
                                r.throughput,
                                r.cpu_per_op.map_or("-".into(), |c| format!("{c:.2}×"))
                            ),
                            _ => String::new(),
                        }
                    );
                    if let (Some(m), Some(r)) = (&metrics_r, &metrics_cost) {
                        eprintln!(
                            "  {} {} c={}: nano+{variant} {:.0} ops/s err {} | {variant} on÷off {:.2}× cpu/op {}",
                            mode.name(),
                            via,
                            conns,
                            m.ops_per_sec,
                            m.errors.total,
                            r.throughput,
                            r.cpu_per_op.map_or("-".into(), |c| format!("{c:.2}×"))
                        );
                    }
                    cases.push(CaseReport {
                        mode: mode.name().into(),
                        transport: via.clone(),
                        conns,
                        ours: ours_r,
                        baseline: base_r,
                        ratios,
                        variant_name: variant,
                        variant: metrics_r,
                        variant_cost: metrics_cost,
                    });
                }
            }
        }
    }

    let mut scale_results = Vec::new();
    if want("scale") {
        let need = args.idle_conns.max(args.members) as u64 + 256;
        if nofile < need {
            eprintln!(
                "warning: the open-file limit is {nofile}; {need} are needed for the scale and broadcast tests (raise the hard limit: ulimit -Hn)"
            );
        }
        for via in &args.transport {
            let mut kinds: Vec<Option<Kind>> = if external {
                vec![None]
            } else {
                vec![Some(Kind::Nano)]
            };
            if !args.no_baseline && !external {
                kinds.push(Some(Kind::Raw));
            }
            for kind in kinds {
                // A fresh server per run, heartbeat every second, so the RSS delta is the
                // connections' and the heartbeats are exercised during the hold.
                let proc_ = match kind {
                    Some(k) => match ServerProc::spawn(k, 1) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            eprintln!("{e}");
                            return 1;
                        }
                    },
                    None => None,
                };
                let target = match (&proc_, via.as_str()) {
                    (Some(p), _) => Some(p.target(via)),
                    (None, "tcp") => ext_tcp.clone(),
                    (None, _) => ext_ws.clone(),
                };
                let Some(target) = target else { continue };
                tokio::time::sleep(Duration::from_millis(300)).await;
                let pid = proc_.as_ref().map(|p| p.pid).or(args.server_pid);
                let name = match kind {
                    Some(Kind::Raw) => "baseline",
                    Some(_) => "nano",
                    None => "external",
                };
                let sources = loopback_sources(target.addr());
                let r = scale::run(name, target, args.idle_conns, hold, sources, pid).await;
                eprintln!(
                    "  scale {name} {via}: {}/{} alive, {} per connection",
                    r.alive,
                    r.conns,
                    r.bytes_per_conn
                        .map_or("-".into(), |b| format!("{:.2} KiB", b / 1024.0))
                );
                scale_results.push(r);
                drop(proc_);
                // Let the closed connections' sockets drain before the next run.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    let mut bcast = None;
    if want("broadcast") && !external {
        match ServerProc::spawn(Kind::Bcast, 30) {
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
            Ok(p) => {
                let target = Target::Tcp(p.tcp);
                let sources = loopback_sources(p.tcp);
                bcast = Some(
                    broadcast::run(
                        std::slice::from_ref(&target),
                        &target,
                        args.members,
                        rounds,
                        sources,
                        Some(p.pid),
                    )
                    .await,
                );
            }
        }
    }

    report::print_load(&cases, ours_name, "baseline");
    report::print_scale(&scale_results);
    if let Some(b) = &bcast {
        println!();
        report::print_broadcast(b);
    }
    report::print_targets(&cases, &scale_results);
    let report = Report {
        bench: "pingpong",
        profile: if profile == Profile::Quick {
            "quick"
        } else {
            "full"
        }
        .into(),
        machine,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        warmup_secs: warmup.as_secs_f64(),
        duration_secs: duration.as_secs_f64(),
        segments,
        load: cases,
        scale: scale_results,
        broadcast: bcast,
    };
    match report::write_json(&report, "pingpong", args.json.clone()) {
        Ok(p) => println!("\nJSON report: {}", p.display()),
        Err(e) => eprintln!("could not write the JSON report: {e}"),
    }
    println!("total time {:.0}s", started.elapsed().as_secs_f64());
    0
}

/// The TCP and WebSocket targets named by `--addr`/`--ws-addr`/`--ws-path` (or their
/// `--baseline-` forms): `addr` is a TCP target unless only a WebSocket path was given for it.
fn external_targets(
    addr: Option<&str>,
    ws_addr: Option<&str>,
    ws_path: Option<&str>,
) -> (Option<Target>, Option<Target>) {
    let tcp = addr
        .filter(|_| ws_path.is_none() || ws_addr.is_some())
        .map(|a| Target::Tcp(resolve(a)));
    let ws = match (addr, ws_addr, ws_path) {
        (_, Some(w), p) => Some(Target::Ws {
            addr: resolve(w),
            path: p.map_or_else(|| WS_PATH.into(), str::to_owned),
        }),
        (Some(a), None, Some(p)) => Some(Target::Ws {
            addr: resolve(a),
            path: p.to_owned(),
        }),
        _ => None,
    };
    (tcp, ws)
}
