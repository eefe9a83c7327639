//! Per-IP limits at accept: concurrent connections per client address and a connection-rate
//! token bucket per client address, in one bounded table.
//!
//! Clients are keyed by IPv4 address, and by /64 network for IPv6 (one IPv6 host usually owns a
//! whole /64, so a per-address key would be no limit at all). On a PROXY-protocol listener the
//! key is the address the header names, not the load balancer's.
//!
//! The table holds an entry only while it matters: an entry goes as soon as its client has no
//! connection left and its bucket is full again (at once when there is no rate limit; at the
//! next sweep otherwise). It never holds more than [`PerIpLimits::max_tracked`] entries: when
//! it is full, a sweep (at most every [`SWEEP_EVERY`]) drops the entries that no longer
//! matter, and a new client that still finds no room is refused (counted as `table_full`).
//! The map is std's `HashMap` with its per-process random keys, so colliding addresses cannot
//! be chosen from outside.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A connection-rate limit: a token bucket of `burst` connections, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionRate {
    /// Connections per second allowed on average.
    pub per_second: f64,
    /// Connections allowed at once after a quiet period (at least 1).
    pub burst: u32,
}

/// Per-IP limits at accept (all off by default).
///
/// Off by default because a limit per address refuses legitimate players whenever many of
/// them share one: mobile carriers' NAT, a campus, and every connection through a load
/// balancer that does not send the PROXY protocol. Turn them on with
/// [`App::max_connections_per_ip`](crate::App::max_connections_per_ip) and
/// [`App::connection_rate_per_ip`](crate::App::connection_rate_per_ip), with numbers that
/// fit your players.
#[derive(Debug, Clone, PartialEq)]
pub struct PerIpLimits {
    /// Connections served at once per client address; `None`: no cap (default).
    pub max_connections: Option<u32>,
    /// New connections per client address over time; `None`: no limit (default).
    pub rate: Option<ConnectionRate>,
    /// Client addresses tracked at once (default 65 536, a few MiB at most); a new client
    /// finding the table full is refused.
    pub max_tracked: usize,
}

impl Default for PerIpLimits {
    fn default() -> Self {
        PerIpLimits {
            max_connections: None,
            rate: None,
            max_tracked: 65_536,
        }
    }
}

impl PerIpLimits {
    fn enabled(&self) -> bool {
        self.max_connections.is_some() || self.rate.is_some()
    }
}

/// Connections refused by the per-IP limits since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerIpRefusals {
    /// Refused: the client already had its maximum of connections open.
    pub over_cap: u64,
    /// Refused: the client opened connections faster than its rate.
    pub over_rate: u64,
    /// Refused: a new client found the table of tracked clients full.
    pub table_full: u64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    OverCap,
    OverRate,
    TableFull,
}

impl Refused {
    /// The reason as a metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::OverCap => "per ip cap",
            Refused::OverRate => "per ip rate",
            Refused::TableFull => "per ip table full",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Refused::OverCap => "too many connections from this address",
            Refused::OverRate => "connection rate from this address exceeded",
            Refused::TableFull => "per-IP table full",
        }
    }
}

/// How often a full table may be swept (a flood of new addresses must not turn every accept
/// into a walk of the whole table).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// Refusals are traced at most this often; the ones in between are counted in the next line.
const LOG_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    conns: u32,
    tokens: f64,
    last: Instant,
}

struct Table {
    map: HashMap<IpAddr, Entry>,
    next_sweep: Instant,
    next_log: Instant,
    unlogged: u64,
}

/// The per-IP table of one server (shared by its listeners).
pub(crate) struct PerIp {
    max_connections: Option<u32>,
    rate: Option<ConnectionRate>,
    max_tracked: usize,
    table: Mutex<Table>,
    over_cap: AtomicU64,
    over_rate: AtomicU64,
    table_full: AtomicU64,
}

/// A connection's place in the table: released when dropped.
pub(crate) struct IpGuard {
    table: Arc<PerIp>,
    key: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        self.table.release(self.key, Instant::now());
    }
}

/// The table key of a client address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by /64.
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl PerIp {
    /// The table for `limits`, `None` when every limit is off (then nothing is tracked).
    pub(crate) fn new(limits: &PerIpLimits) -> Option<Arc<Self>> {
        if !limits.enabled() {
            return None;
        }
        let now = Instant::now();
        let rate = limits.rate.map(|r| ConnectionRate {
            per_second: if r.per_second.is_finite() && r.per_second > 0.0 {
                r.per_second
            } else {
                f64::MIN_POSITIVE
            },
            burst: r.burst.max(1),
        });
        Some(Arc::new(PerIp {
            max_connections: limits.max_connections.map(|n| n.max(1)),
            rate,
            max_tracked: limits.max_tracked.max(1),
            table: Mutex::new(Table {
                map: HashMap::new(),
                next_sweep: now,
                next_log: now,
                unlogged: 0,
            }),
            over_cap: AtomicU64::new(0),
            over_rate: AtomicU64::new(0),
            table_full: AtomicU64::new(0),
        }))
    }

    /// Admits a connection from `ip`, or refuses it (counted, traced at most once a second).
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpGuard, Refused> {
        let r = self.admit_at(ip, Instant::now());
        if let Err(why) = r {
            self.refused(ip, why);
        }
        r
    }

    pub(crate) fn admit_at(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<IpGuard, Refused> {
        let key = key(ip);
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !t.map.contains_key(&key) && t.map.len() >= self.max_tracked {
            if now >= t.next_sweep {
                t.next_sweep = now + SWEEP_EVERY;
                t.map.retain(|_, e| !self.idle(e, now));
            }
            if t.map.len() >= self.max_tracked {
                return Err(Refused::TableFull);
            }
        }
        let burst = self.rate.map_or(0.0, |r| f64::from(r.burst));
        let e = t.map.entry(key).or_insert(Entry {
            conns: 0,
            tokens: burst,
            last: now,
        });
        self.refill(e, now);
        if self.max_connections.is_some_and(|max| e.conns >= max) {
            return Err(Refused::OverCap);
        }
        if self.rate.is_some() {
            if e.tokens < 1.0 {
                return Err(Refused::OverRate);
            }
            e.tokens -= 1.0;
        }
        e.conns += 1;
        Ok(IpGuard {
            table: self.clone(),
            key,
        })
    }

    fn release(&self, key: IpAddr, now: Instant) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = t.map.get_mut(&key) {
            e.conns = e.conns.saturating_sub(1);
            if self.idle(e, now) {
                t.map.remove(&key);
            }
        }
    }

    fn refill(&self, e: &mut Entry, now: Instant) {
        if let Some(r) = self.rate {
            let elapsed = now.saturating_duration_since(e.last).as_secs_f64();
            e.tokens = (e.tokens + elapsed * r.per_second).min(f64::from(r.burst));
        }
        e.last = now;
    }

    /// No connection and a full bucket: the entry says nothing a fresh one would not.
    fn idle(&self, e: &mut Entry, now: Instant) -> bool {
        if e.conns > 0 {
            return false;
        }
        self.refill(e, now);
        match self.rate {
            None => true,
            Some(r) => e.tokens >= f64::from(r.burst),
        }
    }

    fn refused(&self, ip: IpAddr, why: Refused) {
        let counter = match why {
            Refused::OverCap => &self.over_cap,
            Refused::OverRate => &self.over_rate,
            Refused::TableFull => &self.table_full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let suppressed = {
            let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
            if now < t.next_log {
                t.unlogged += 1;
                return;
            }
            t.next_log = now + LOG_EVERY;
            std::mem::take(&mut t.unlogged)
        };
        tracing::warn!(
            %ip,
            reason = why.as_str(),
            suppressed,
            "per-IP limit: connection refused"
        );
    }

    /// The refusal counters.
    pub(crate) fn refusals(&self) -> PerIpRefusals {
        PerIpRefusals {
            over_cap: self.over_cap.load(Ordering::Relaxed),
            over_rate: self.over_rate.load(Ordering::Relaxed),
            table_full: self.table_full.load(Ordering::Relaxed),
        }
    }

    /// Entries held (tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().unwrap().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(n.into())
    }

    fn limits(cap: Option<u32>, rate: Option<(f64, u32)>, max_tracked: usize) -> Arc<PerIp> {
        PerIp::new(&PerIpLimits {
            max_connections: cap,
            rate: rate.map(|(per_second, burst)| ConnectionRate { per_second, burst }),
            max_tracked,
        })
        .unwrap()
    }

    #[test]
    fn off_by_default() {
        assert!(PerIp::new(&PerIpLimits::default()).is_none());
    }

    #[test]
    fn the_cap_counts_live_connections_and_forgets_idle_addresses() {
        let t = limits(Some(2), None, 100);
        let now = Instant::now();
        let a = t.admit_at(ip(1), now).unwrap();
        let b = t.admit_at(ip(1), now).unwrap();
        assert_eq!(t.admit_at(ip(1), now).err(), Some(Refused::OverCap));
        let _other = t.admit_at(ip(2), now).unwrap();
        drop(a);
        let c = t.admit_at(ip(1), now).unwrap();
        assert_eq!(t.tracked(), 2);
        drop((b, c));
        assert_eq!(
            t.tracked(),
            1,
            "an address with no connection is dropped at once"
        );
    }

    #[test]
    fn the_rate_is_a_token_bucket() {
        let t = limits(None, Some((2.0, 3)), 100);
        let now = Instant::now();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(t.admit_at(ip(1), now).unwrap());
        }
        assert_eq!(t.admit_at(ip(1), now).err(), Some(Refused::OverRate));
        // Closing does not give tokens back: the rate is of new connections.
        held.clear();
        assert_eq!(t.admit_at(ip(1), now).err(), Some(Refused::OverRate));
        // Half a second at 2/s brings one token back, not two.
        let later = now + Duration::from_millis(500);
        let _one = t.admit_at(ip(1), later).unwrap();
        assert_eq!(t.admit_at(ip(1), later).err(), Some(Refused::OverRate));
        // Other addresses have their own bucket.
        assert!(t.admit_at(ip(2), now).is_ok());
    }

    #[test]
    fn the_table_is_bounded_and_swept_when_full() {
        let t = limits(None, Some((10.0, 1)), 4);
        let now = Instant::now();
        for n in 0..4 {
            drop(t.admit_at(ip(n), now).unwrap()); // bucket empty: the entry stays
        }
        assert_eq!(t.tracked(), 4);
        assert_eq!(t.admit_at(ip(99), now).err(), Some(Refused::TableFull));
        assert_eq!(t.tracked(), 4);
        // A fifth of a second later (10/s) every bucket is full again: the sweep makes room.
        let later = now + Duration::from_millis(200);
        assert!(t.admit_at(ip(99), later).is_ok());
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn a_flood_of_addresses_never_grows_the_table_past_its_bound() {
        let t = limits(Some(1), None, 1000);
        let now = Instant::now();
        let mut held = Vec::new();
        let mut full = 0;
        for n in 0..5000 {
            match t.admit_at(ip(n), now) {
                Ok(g) => held.push(g),
                Err(Refused::TableFull) => full += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(held.len(), 1000);
        assert_eq!(full, 4000);
        assert_eq!(t.tracked(), 1000);
        held.clear();
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
        let t = limits(Some(1), None, 10);
        let _g = t.admit_at(a, Instant::now()).unwrap();
        assert_eq!(t.admit_at(b, Instant::now()).err(), Some(Refused::OverCap));
    }

    #[test]
    fn refusals_are_counted() {
        let t = limits(Some(1), None, 10);
        let _g = t.admit(ip(1)).unwrap();
        for _ in 0..5 {
            assert!(t.admit(ip(1)).is_err());
        }
        assert_eq!(t.refusals().over_cap, 5);
    }
}
