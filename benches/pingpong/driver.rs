//! What the bench binaries share around their measurements: quick or full windows, and the
//! load client's runtime.

use std::future::Future;
use std::time::Duration;

/// Quick or full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Quick,
    Full,
}

impl Profile {
    /// `--full`, else `--quick`, else `NANO_BENCH` (quick by default).
    pub fn choose(full: bool, quick: bool) -> Profile {
        if full {
            return Profile::Full;
        }
        if quick {
            return Profile::Quick;
        }
        match std::env::var("NANO_BENCH").as_deref() {
            Ok("full") => Profile::Full,
            Ok("quick") | Ok("") | Err(_) => Profile::Quick,
            Ok(other) => {
                eprintln!("NANO_BENCH={other}: expected quick or full; running quick");
                Profile::Quick
            }
        }
    }

    #[allow(dead_code)] // the cluster bench prints it
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }
}

/// Raises the open-file limit, then runs `drive(nofile, cores, threads)` on the load client's
/// runtime (`threads` workers, one per core unless given) and exits with its code.
pub fn run_client<F, Fut>(client_threads: Option<usize>, drive: F) -> !
where
    F: FnOnce(u64, usize, usize) -> Fut,
    Fut: Future<Output = i32>,
{
    let nofile = crate::procfs::raise_nofile_limit();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = client_threads.unwrap_or(cores).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("client runtime");
    let code = rt.block_on(drive(nofile, cores, threads));
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}
