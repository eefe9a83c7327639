//! `cargo bench --bench cluster`: what a gate → backend hop costs, and how a group broadcast
//! crosses gates.
//!
//! 1. **Echo through a gate vs a single node**: `TestHandler.Echo` (the pingpong component,
//!    protobuf) in closed loop over TCP with 1 and 100 connections, against (a) a single-node
//!    pingpong server and (b) a cluster of three processes — a master, a backend hosting
//!    `TestHandler`, and a gate hosting nothing that serves the clients and forwards to the
//!    backend. The two take turns in interleaved slices (the pingpong bench's load), so
//!    whatever else runs on the machine weighs on both alike. Reported: ops/s, p50/p99, and
//!    server CPU per request summed over every process of each side (master + backend + gate
//!    for the cluster), with the ratios cluster ÷ single and the issue's targets (forwarded
//!    throughput ≥ 0.5 × single node at 100 connections, p99 ≤ 3 ×).
//! 2. **Broadcast to 10,000 members over 2 gates**: a backend component with a group; half the
//!    members join through gate 1, half through gate 2; each broadcast is timed until every
//!    member has read its push, and the node-to-node messages the backend sent for it are
//!    counted from its link counters (`Node::link_stats(gate).frames_sent`, before and after):
//!    one per gate, not one per member.
//!
//! Every server and node is its own process (this binary re-executed with the hidden
//! `--serve` flag), so CPU time and memory come from `/proc/<pid>`; all of them share the
//! machine with the load client.
//!
//! ```text
//! cargo bench --bench cluster                        # quick (default), about a minute
//! cargo bench --bench cluster -- --full              # longer windows (or NANO_BENCH=full)
//! cargo bench --bench cluster -- --only echo --conns 100
//! cargo bench --bench cluster -- --only broadcast --members 2000
//! ```
//!
//! The JSON report goes to `target/nano-bench/cluster.json` (`--json PATH` to change it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

#[path = "../examples/pingpong/handler.rs"]
#[allow(dead_code)]
mod handler;

#[path = "pingpong/broadcast.rs"]
#[allow(dead_code)]
mod broadcast;
#[path = "pingpong/conn.rs"]
#[allow(dead_code)]
mod conn;
#[path = "pingpong/driver.rs"]
mod driver;
#[path = "pingpong/load.rs"]
mod load;
#[path = "pingpong/procfs.rs"]
#[allow(dead_code)]
mod procfs;
#[path = "pingpong/raw_server.rs"]
#[allow(dead_code)]
mod raw_server;
#[path = "pingpong/report.rs"]
#[allow(dead_code)]
mod report;
#[path = "pingpong/scale.rs"]
#[allow(dead_code)]
mod scale;
#[path = "pingpong/serve.rs"]
#[allow(dead_code)]
mod serve;
#[path = "pingpong/wire.rs"]
#[allow(dead_code)]
mod wire;

#[path = "cluster/nodes.rs"]
mod nodes;

use broadcast::BroadcastResult;
use conn::Target;
use driver::Profile;
use load::{CaseSpec, LoadResult, LoadSpec, Mode};
use nodes::{NodeArgs, Role};
use report::{CaseReport, Machine, Ratios};
use serve::{Kind, ServerProc, WS_PATH};

/// Forwarded throughput at 100 connections, at least this × the single node's.
const TARGET_THROUGHPUT: f64 = 0.5;
/// Forwarded p99 at 100 connections, at most this × the single node's.
const TARGET_P99: f64 = 3.0;
/// Gates of the broadcast test.
const GATES: usize = 2;

/// Command-line flags. Unknown positional arguments (cargo's bench filter, e.g. `cluster`)
/// and cargo's `--bench` flag are accepted and ignored.
#[derive(Parser, Debug)]
#[command(
    name = "cluster",
    about = "nano cluster benchmark: echo through a gate vs a single node, broadcast over 2 gates"
)]
struct Args {
    /// Short windows (the default; also NANO_BENCH=quick).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Long windows (also NANO_BENCH=full).
    #[arg(long)]
    full: bool,
    /// Connection counts of the echo cases.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    conns: Vec<usize>,
    /// Load modes: echo (request/response), ping (notify → push).
    #[arg(long, value_delimiter = ',', default_value = "echo")]
    mode: Vec<String>,
    /// Transports: tcp, ws.
    #[arg(long, value_delimiter = ',', default_value = "tcp")]
    transport: Vec<String>,
    /// Measured seconds per side and load case (quick 4, full 20).
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds per side and load case (quick 0.5, full 2).
    #[arg(long)]
    warmup: Option<f64>,
    /// Slices the measured time is split into; the cluster and the single node take turns
    /// (quick 8, full 20).
    #[arg(long)]
    segments: Option<usize>,
    /// Sections to run: echo, broadcast (default: both).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Group size of the broadcast test, spread evenly over the 2 gates.
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
    /// Where to write the JSON report (default target/nano-bench/cluster.json).
    #[arg(long)]
    json: Option<PathBuf>,

    /// Internal: run a server (nano, bcast) or a cluster node (master-pb, echo-backend, …).
    #[arg(long, hide = true)]
    serve: Option<String>,
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    tcp: String,
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    ws: String,
    #[arg(long, hide = true, default_value_t = 30)]
    heartbeat: u64,
    /// Internal: the master's cluster address.
    #[arg(long, hide = true, default_value = "")]
    master: String,
    /// Internal: the node id.
    #[arg(long, hide = true, default_value = "")]
    node_id: String,
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
        if let Some(role) = Role::parse(kind) {
            nodes::serve_forever(
                role,
                NodeArgs {
                    id: args.node_id.clone(),
                    master: args.master.clone(),
                    tcp: args.tcp.clone(),
                    ws: args.ws.clone(),
                    heartbeat: Duration::from_secs(args.heartbeat),
                },
            );
        }
        match Kind::parse(kind) {
            Some(kind @ (Kind::Nano | Kind::Bcast)) => {
                serve::serve_forever(kind, &args.tcp, &args.ws, args.heartbeat)
            }
            _ => {
                eprintln!("--serve takes nano, bcast or a cluster role");
                std::process::exit(2);
            }
        }
    }
    let profile = Profile::choose(args.full, args.quick);
    let client_threads = args.client_threads;
    driver::run_client(client_threads, |nofile, cores, threads| {
        drive(args, profile, nofile, cores, threads)
    })
}

/// Loopback source addresses to spread many connections over (127.0.0.2 … 127.0.0.9).
fn loopback_sources() -> Vec<IpAddr> {
    (2..=9)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

/// One cluster child: `--serve <role>` with its id and the master's address.
fn spawn_node(role: Role, id: &str, master: Option<SocketAddr>) -> std::io::Result<ServerProc> {
    let master = master.map(|m| m.to_string()).unwrap_or_default();
    let mut args = vec!["--node-id", id, "--heartbeat", "30"];
    if !master.is_empty() {
        args.extend(["--master", master.as_str()]);
    }
    ServerProc::spawn_with(role.name(), &args)
}

/// The processes of a cluster, kept alive together (killed on drop).
struct ClusterProcs {
    master: ServerProc,
    backend: ServerProc,
    gates: Vec<ServerProc>,
}

impl ClusterProcs {
    /// A master, one backend `backend`, and `gates` gates `gate-1` …, in that order (each
    /// gate is up only once it has discovered the backend's service).
    fn spawn(master: Role, backend: Role, gate: Role, gates: usize) -> std::io::Result<Self> {
        let master = spawn_node(master, "master", None)?;
        let backend = spawn_node(backend, "backend-1", Some(master.tcp))?;
        let gates = (1..=gates)
            .map(|i| spawn_node(gate, &format!("gate-{i}"), Some(master.tcp)))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(ClusterProcs {
            master,
            backend,
            gates,
        })
    }

    /// Every pid: master, backend, gates.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.master.pid, self.backend.pid];
        pids.extend(self.gates.iter().map(|g| g.pid));
        pids
    }
}

/// A target check, as printed and reported.
#[derive(Debug, Clone, Serialize)]
struct Check {
    what: String,
    value: Option<f64>,
    target: String,
    met: bool,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
struct ClusterReport {
    bench: &'static str,
    profile: &'static str,
    machine: Machine,
    unix_time: u64,
    warmup_secs: f64,
    duration_secs: f64,
    segments: usize,
    /// The processes of each side, in the order of `server_cpu_us_per_op_each`.
    cluster_processes: Vec<&'static str>,
    /// Per case: `ours` is the cluster, `baseline` the single node, `ratios` cluster ÷ single.
    load: Vec<CaseReport>,
    broadcast: Option<BroadcastResult>,
    /// The same broadcast on a single node, for scale.
    broadcast_single_node: Option<BroadcastResult>,
    /// Gates of the broadcast cluster (besides its master and backend).
    broadcast_gates: usize,
    targets: Vec<Check>,
}

async fn drive(args: Args, profile: Profile, nofile: u64, cores: usize, threads: usize) -> i32 {
    let started = Instant::now();
    let (warmup, duration, segments, rounds) = match profile {
        Profile::Quick => (0.5, 4.0, 8, 5),
        Profile::Full => (2.0, 20.0, 20, 20),
    };
    let segments = args.segments.unwrap_or(segments);
    let warmup = Duration::from_secs_f64(args.warmup.unwrap_or(warmup));
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(duration));
    let rounds = args.rounds.unwrap_or(rounds);
    let sections: Vec<String> = if args.only.is_empty() {
        vec!["echo".into(), "broadcast".into()]
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
        "nano cluster bench — {} mode · {} · {} cores · client {} threads · fd limit {}",
        profile.name(),
        machine.cpu_model,
        cores,
        threads,
        nofile
    );

    let mut cases = Vec::new();
    if want("echo") {
        match echo_section(&args, &modes, warmup, duration, segments).await {
            Ok(c) => cases = c,
            Err(e) => {
                eprintln!("echo: {e}");
                return 1;
            }
        }
    }

    let mut bcast = None;
    let mut bcast_single = None;
    if want("broadcast") {
        // The client holds every member's socket; each gate half of them.
        let need = args.members as u64 + 256;
        if nofile < need {
            eprintln!(
                "warning: the open-file limit is {nofile}; about {need} are needed for {} members (raise the hard limit: ulimit -Hn)",
                args.members
            );
        }
        let procs =
            match ClusterProcs::spawn(Role::MasterJson, Role::BcastBackend, Role::BcastGate, GATES)
            {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("broadcast cluster: {e}");
                    return 1;
                }
            };
        let via: Vec<Target> = procs.gates.iter().map(|g| Target::Tcp(g.tcp)).collect();
        let firer = Target::Tcp(procs.backend.tcp);
        eprintln!(
            "broadcast: {} members over {GATES} gates ({}), fired on the backend ({})",
            args.members,
            via.iter()
                .map(Target::describe)
                .collect::<Vec<_>>()
                .join(", "),
            firer.describe()
        );
        let r = broadcast::run(
            &via,
            &firer,
            args.members,
            rounds,
            loopback_sources(),
            Some(procs.backend.pid),
        )
        .await;
        bcast = Some(r);
        drop(procs);
        // The same broadcast on one node (the pingpong bench's broadcast server), for scale.
        tokio::time::sleep(Duration::from_millis(500)).await;
        match ServerProc::spawn(Kind::Bcast, 30) {
            Err(e) => eprintln!("single-node broadcast server: {e}"),
            Ok(p) => {
                let target = Target::Tcp(p.tcp);
                eprintln!(
                    "broadcast: the same on a single node ({})",
                    target.describe()
                );
                let r = broadcast::run(
                    std::slice::from_ref(&target),
                    &target,
                    args.members,
                    rounds,
                    loopback_sources(),
                    Some(p.pid),
                )
                .await;
                bcast_single = Some(r);
            }
        }
    }

    report::print_load(&cases, "cluster", "single");
    if !cases.is_empty() {
        println!("(cluster = master + backend + gate processes, CPU summed over the three; ratio = cluster ÷ single)");
        for c in &cases {
            let each: Vec<String> = ["master", "backend", "gate"]
                .iter()
                .zip(&c.ours.server_cpu_us_per_op_each)
                .map(|(name, v)| {
                    format!("{name} {}", v.map_or("-".into(), |v| format!("{v:.1}µs")))
                })
                .collect();
            println!(
                "  {} {} c={}: cluster CPU per request by process: {}",
                c.mode,
                c.transport,
                c.conns,
                each.join(", ")
            );
        }
    }
    if let Some(b) = &bcast {
        println!();
        print!("CLUSTER (master, backend, {GATES} gates; members split over the gates) — ");
        report::print_broadcast(b);
    }
    if let Some(s) = &bcast_single {
        println!();
        print!("SINGLE NODE — ");
        report::print_broadcast(s);
    }
    if let (Some(b), Some(s)) = (&bcast, &bcast_single) {
        println!();
        println!(
            "broadcast reach-all median, cluster ÷ single node: {}",
            fmt_ratio(b.reach_all_ms_median / s.reach_all_ms_median)
        );
    }
    let targets = checks(&cases, bcast.as_ref(), args.members);
    if !targets.is_empty() {
        println!();
        println!("targets (reported, not enforced):");
        for t in &targets {
            println!(
                "  {} {}: {} (target {})",
                if t.met { "ok  " } else { "MISS" },
                t.what,
                t.value
                    .map_or("not measured".into(), |v| if v.fract() == 0.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.2}")
                    }),
                t.target
            );
        }
    }
    let report = ClusterReport {
        bench: "cluster",
        profile: profile.name(),
        machine,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        warmup_secs: warmup.as_secs_f64(),
        duration_secs: duration.as_secs_f64(),
        segments,
        cluster_processes: vec!["master", "backend", "gate"],
        load: cases,
        broadcast: bcast,
        broadcast_single_node: bcast_single,
        broadcast_gates: GATES,
        targets,
    };
    match report::write_json(&report, "cluster", args.json.clone()) {
        Ok(p) => println!("\nJSON report: {}", p.display()),
        Err(e) => eprintln!("could not write the JSON report: {e}"),
    }
    println!("total time {:.0}s", started.elapsed().as_secs_f64());
    0
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "-".into()
    }
}

/// The echo (and ping) cases: the cluster and the single node, interleaved.
async fn echo_section(
    args: &Args,
    modes: &[Mode],
    warmup: Duration,
    duration: Duration,
    segments: usize,
) -> std::io::Result<Vec<CaseReport>> {
    let single = ServerProc::spawn(Kind::Nano, 30)?;
    let cluster = ClusterProcs::spawn(Role::MasterPb, Role::EchoBackend, Role::EchoGate, 1)?;
    let gate = &cluster.gates[0];
    let total = args.transport.len() * modes.len() * args.conns.len();
    let mut n = 0;
    let mut cases = Vec::new();
    for via in &args.transport {
        let target = |p: &ServerProc| match via.as_str() {
            "tcp" => Target::Tcp(p.tcp),
            _ => Target::Ws {
                addr: p.ws,
                path: WS_PATH.into(),
            },
        };
        for &mode in modes {
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
                let specs = [
                    LoadSpec {
                        label: "cluster".into(),
                        target: target(gate),
                        server_pids: cluster.pids(),
                    },
                    LoadSpec {
                        label: "single".into(),
                        target: target(&single),
                        server_pids: vec![single.pid],
                    },
                ];
                let mut results = load::run(&case, &specs).await.into_iter();
                let (Some(c), Some(s)) = (results.next(), results.next()) else {
                    return Err(std::io::Error::other("one result per side expected"));
                };
                let ratios = Ratios::of(&c, &s);
                eprintln!(
                    "  {} {via} c={conns}: cluster {:.0} ops/s p99 {:.0}µs err {} | single {:.0} ops/s p99 {:.0}µs err {} | throughput {:.2}× p99 {:.2}× cpu/op {}",
                    mode.name(),
                    c.ops_per_sec,
                    c.p99_us,
                    c.errors.total,
                    s.ops_per_sec,
                    s.p99_us,
                    s.errors.total,
                    ratios.throughput,
                    ratios.p99,
                    ratios.cpu_per_op.map_or("-".into(), |r| format!("{r:.2}×"))
                );
                cases.push(CaseReport {
                    mode: mode.name().into(),
                    transport: via.clone(),
                    conns,
                    ours: c,
                    baseline: Some(s),
                    ratios: Some(ratios),
                    variant_name: "",
                    variant: None,
                    variant_cost: None,
                });
            }
        }
    }
    drop(cluster);
    drop(single);
    Ok(cases)
}

/// The issue's targets, checked against this run's figures.
fn checks(cases: &[CaseReport], bcast: Option<&BroadcastResult>, members: usize) -> Vec<Check> {
    let mut out = Vec::new();
    let errors_of = |r: &LoadResult| r.errors.total;
    for c in cases.iter().filter(|c| c.conns == 100) {
        let Some(r) = &c.ratios else { continue };
        let clean = errors_of(&c.ours) == 0 && c.baseline.as_ref().map_or(0, errors_of) == 0;
        out.push(Check {
            what: format!(
                "{} {} 100: forwarded throughput ÷ single node ({} errors)",
                c.mode,
                c.transport,
                errors_of(&c.ours)
            ),
            value: Some(r.throughput),
            target: format!("≥ {TARGET_THROUGHPUT}, no errors"),
            met: clean && r.throughput >= TARGET_THROUGHPUT,
        });
        out.push(Check {
            what: format!(
                "{} {} 100: forwarded p99 ÷ single node",
                c.mode, c.transport
            ),
            value: Some(r.p99),
            target: format!("≤ {TARGET_P99}"),
            met: clean && r.p99 <= TARGET_P99,
        });
    }
    if let Some(b) = bcast {
        // The most node messages any round took, over the gates.
        let worst = b
            .node_messages
            .iter()
            .map(|m| m.values().sum::<u64>())
            .max();
        let per_gate_ok = b.rounds > 0
            && b.node_messages.len() == b.rounds
            && b.node_messages.iter().all(|m| {
                (1..=GATES).all(|i| m.get(&format!("gate-{i}")) == Some(&1))
                    && m.values().sum::<u64>() == GATES as u64
            });
        out.push(Check {
            what: format!(
                "broadcast to {} members over {GATES} gates: node-to-node messages per broadcast (max over {} rounds)",
                b.joined, b.rounds
            ),
            value: worst.map(|w| w as f64),
            target: format!("{GATES}, one per gate"),
            met: per_gate_ok,
        });
        out.push(Check {
            what: format!(
                "broadcast: members joined and reached every round ({} errors)",
                b.errors
            ),
            value: Some(b.joined as f64),
            target: format!("{members}, 0 errors"),
            met: b.joined == members && b.errors == 0 && b.rounds > 0,
        });
    }
    out
}
