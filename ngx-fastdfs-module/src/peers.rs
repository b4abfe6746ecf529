//! What this worker knows about the cluster: its own addresses (to recognise files whose
//! source is this node) and the storages of each group as the trackers list them (cmd 91
//! + 92), the only storages a file missing here is fetched from.
//!
//! A background thread per worker does all tracker traffic; no request ever waits for a
//! tracker, and nothing here blocks the event loop (the lock below is held only to read
//! or swap a few fields).
//!
//! * At worker start the thread takes a first listing.
//! * A request for a missing file that finds the listing older than
//!   `tracker_refresh_interval` is answered from it as it is, and asks the thread for a
//!   new one; a failed fetch is not tried again within the interval either.
//! * A name whose source the listing does not hold asks for its group's list again (one
//!   cmd 92), in case that storage joined since: only when the name was created after
//!   the listing was taken (less [`SLACK`]), and at most once per interval per group.
//!   A name of a group the listing does not hold asks, on the same terms, for a whole
//!   listing, at most once per interval for all such groups. Made-up names thus cost
//!   the trackers a bounded number of requests.
//! * A group whose list a tracker failed to send keeps its previous list.
//!
//! Until the first listing is in, [`group_members`] answers [`Lookup::Pending`]; the
//! handler then parks the request on a timer (see `park.rs`), never the worker.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fdfs_proto::addr::HostPort;
use fdfs_proto::cmd;
use fdfs_proto::header::{Header, HEADER_LEN};
use fdfs_proto::http::modconf::ModConf;
use fdfs_proto::http::peers::{list_storage_request, parse_list_storage, Peer};
use fdfs_proto::msg::GroupStat;
use ngx::ffi::*;
use ngx::http::HttpModuleMainConf;
use ngx_fastdfs_serve::{Cluster, Lookup};

use crate::FastdfsModule;

/// Longest a request for a missing file waits for this worker's first listing.
pub const WAIT_MAX: Duration = Duration::from_secs(3);
/// Fetches start at least this far apart.
const MIN_GAP: Duration = Duration::from_secs(1);
/// A name created up to this many seconds before a listing was taken may still come from
/// a storage that listing missed (clocks differ, a join takes a beat to be listed).
pub const SLACK: i64 = 60;
/// Most groups and storages per group kept from a listing.
const MAX_GROUPS: usize = 1024;
const MAX_PEERS: usize = 256;

static LOCAL_IPS: OnceLock<Vec<Ipv4Addr>> = OnceLock::new();
/// The first fetch of this worker has ended (with a listing or without).
static FIRST_DONE: AtomicBool = AtomicBool::new(false);

/// The storage lists of this worker and the state of their fetching.
struct Members {
    /// Whether the fetching thread runs (trackers are configured).
    enabled: bool,
    /// Group -> storages, from the listings trackers answered.
    groups: BTreeMap<String, Arc<[Peer]>>,
    /// When the last whole listing was taken (this host's clock), in unix seconds.
    listed_unix: Option<i64>,
    /// When the last whole fetch began, whether it succeeded or not.
    tried_at: Option<Instant>,
    /// A whole fetch is under way.
    running: bool,
    /// A whole listing is asked for.
    want_all: bool,
    /// Groups whose list is asked for again (cmd 92 only).
    want_groups: BTreeSet<String>,
    /// Per listed group: when a name with an unlisted source last asked for its list.
    asked: BTreeMap<String, Instant>,
    /// When a name of an unlisted group last asked for a whole listing.
    asked_unknown: Option<Instant>,
    /// Per listed group ("" for all the others) and report: when it was last logged
    /// loudly.
    reported: BTreeMap<(Report, String), Instant>,
}

static MEMBERS: Mutex<Members> = Mutex::new(Members {
    enabled: false,
    groups: BTreeMap::new(),
    listed_unix: None,
    tried_at: None,
    running: false,
    want_all: false,
    want_groups: BTreeSet::new(),
    asked: BTreeMap::new(),
    asked_unknown: None,
    reported: BTreeMap::new(),
});
/// Wakes the fetching thread.
static WANTED: Condvar = Condvar::new();

fn members() -> MutexGuard<'static, Members> {
    MEMBERS.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn elapsed_since(t: Option<Instant>, now: Instant, d: Duration) -> bool {
    t.map_or(true, |t| now.saturating_duration_since(t) >= d)
}

/// This host's IPv4 addresses (interfaces filtered by `if_alias_prefix`) plus 127.0.0.1.
pub fn local_ips() -> &'static [Ipv4Addr] {
    LOCAL_IPS.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Whether this worker's first fetch has ended.
pub fn first_fetch_done() -> bool {
    FIRST_DONE.load(Ordering::Acquire)
}

/// The storages of `group`, for a file this node does not have, created at `created`
/// (unix seconds, from its name). Never waits: a listing older than the interval is
/// used as it is while the thread fetches a new one.
pub fn group_members(group: &str, created: i64, conf: &ModConf) -> Lookup {
    let mut m = members();
    if !m.enabled {
        return Lookup::Ready(Arc::from([]));
    }
    let now = Instant::now();
    let interval = Duration::from_secs(conf.tracker_refresh_interval);
    if !m.running && elapsed_since(m.tried_at, now, interval) {
        m.want_all = true;
        WANTED.notify_one();
    }
    if m.listed_unix.is_none() && !first_fetch_done() {
        return Lookup::Pending;
    }
    if let Some(peers) = m.groups.get(group) {
        return Lookup::Ready(peers.clone());
    }
    // A group the listing does not hold: perhaps one created since.
    if after_listing(&m, created) && !m.running && elapsed_since(m.asked_unknown, now, interval) {
        m.asked_unknown = Some(now);
        m.want_all = true;
        WANTED.notify_one();
    }
    Lookup::Ready(Arc::from([]))
}

fn after_listing(m: &Members, created: i64) -> bool {
    m.listed_unix.map_or(true, |at| created > at - SLACK)
}

/// A file of `group` created at `created` names a source the listing does not hold:
/// asks for the group's list again when that storage may have joined since. Returns
/// whether this is the first such name of the group within the interval (to be logged
/// loudly).
pub fn source_unlisted(group: &str, created: i64, conf: &ModConf) -> bool {
    let mut m = members();
    if !m.enabled {
        return false;
    }
    let now = Instant::now();
    let interval = Duration::from_secs(conf.tracker_refresh_interval);
    if m.groups.contains_key(group)
        && after_listing(&m, created)
        && elapsed_since(m.asked.get(group).copied(), now, interval)
    {
        m.asked.insert(group.to_string(), now);
        m.want_groups.insert(group.to_string());
        WANTED.notify_one();
    }
    first_report(&mut m, Report::UnlistedSource, group, now, interval)
}

/// This worker's listing, as the serving logic asks for it.
pub struct Listing;

impl Cluster for Listing {
    fn local_ips(&self) -> &[Ipv4Addr] {
        local_ips()
    }

    fn group_members(&self, group: &str, created: i64, conf: &ModConf) -> Lookup {
        group_members(group, created, conf)
    }

    fn source_unlisted(&self, group: &str, created: i64, conf: &ModConf) -> bool {
        source_unlisted(group, created, conf)
    }

    fn no_candidate(&self, group: &str, conf: &ModConf) -> bool {
        report(Report::NoCandidate, group, conf)
    }
}

/// Something worth a warning that made-up names can cause at will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Report {
    UnlistedSource,
    NoCandidate,
}

/// Whether `what` about `group` is the first within the interval (to be logged loudly,
/// the others quietly).
pub fn report(what: Report, group: &str, conf: &ModConf) -> bool {
    let mut m = members();
    let interval = Duration::from_secs(conf.tracker_refresh_interval);
    first_report(&mut m, what, group, Instant::now(), interval)
}

fn first_report(
    m: &mut Members,
    what: Report,
    group: &str,
    now: Instant,
    interval: Duration,
) -> bool {
    // Keys only for listed groups: made-up group names share one.
    let key = if m.groups.contains_key(group) {
        group
    } else {
        ""
    };
    let k = (what, key.to_string());
    if elapsed_since(m.reported.get(&k).copied(), now, interval) {
        m.reported.insert(k, now);
        true
    } else {
        false
    }
}

fn interface_ips(prefixes: &[String]) -> Vec<Ipv4Addr> {
    let mut out = vec![Ipv4Addr::LOCALHOST];
    // SAFETY: getifaddrs/freeifaddrs as documented; we only read the list.
    unsafe {
        let mut ifap: *mut libc::ifaddrs = core::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut p = ifap;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || (*ifa.ifa_addr).sa_family as i32 != libc::AF_INET {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if !prefixes.is_empty() && !prefixes.iter().any(|pre| name.starts_with(pre.as_str())) {
                continue;
            }
            let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// One connection to a tracker, for every request of a fetch.
struct Tracker(TcpStream);

impl Tracker {
    fn connect(addr: &HostPort, conf: &ModConf) -> std::io::Result<Self> {
        let sa = (addr.host(), addr.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let s = TcpStream::connect_timeout(&sa, Duration::from_secs(conf.connect_timeout))?;
        s.set_read_timeout(Some(Duration::from_secs(conf.network_timeout)))?;
        s.set_write_timeout(Some(Duration::from_secs(conf.network_timeout)))?;
        Ok(Tracker(s))
    }

    /// Sends `request`, reads the reply: `Ok(Err(status))` for a refusal (the connection
    /// stays usable), `Err` when the connection is not.
    fn call(&mut self, request: &[u8]) -> std::io::Result<Result<Vec<u8>, u8>> {
        self.0.write_all(request)?;
        let mut h = [0u8; HEADER_LEN];
        self.0.read_exact(&mut h)?;
        let h = Header::decode(&h);
        let len = h
            .body_len(16 << 20)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut body = vec![0u8; len as usize];
        self.0.read_exact(&mut body)?;
        Ok(if h.status == 0 {
            Ok(body)
        } else {
            Err(h.status)
        })
    }

    /// One group's storages; `None` when the tracker would not say.
    fn group(&mut self, group: &str) -> std::io::Result<Option<Vec<Peer>>> {
        Ok(match self.call(&list_storage_request(group))? {
            Ok(body) => parse_list_storage(&body).ok().map(|mut peers| {
                peers.truncate(MAX_PEERS);
                peers
            }),
            Err(_) => None,
        })
    }
}

/// A whole listing from the first tracker that answers cmd 91, on one connection: each
/// group with its storages, or `None` for a group whose list that tracker did not send.
fn fetch_all(conf: &ModConf) -> Option<BTreeMap<String, Option<Vec<Peer>>>> {
    for addr in &conf.tracker_servers {
        let Ok(mut t) = Tracker::connect(addr, conf) else {
            continue;
        };
        let req = Header::request(cmd::SERVER_LIST_ALL_GROUPS, 0).encode();
        let Ok(Ok(body)) = t.call(&req) else {
            continue;
        };
        let Ok(groups) = GroupStat::decode_list(&body) else {
            continue;
        };
        let mut map = BTreeMap::new();
        let mut up = true;
        for g in groups.into_iter().take(MAX_GROUPS) {
            let peers = if up {
                t.group(&g.group).unwrap_or_else(|_| {
                    up = false;
                    None
                })
            } else {
                None
            };
            map.insert(g.group, peers);
        }
        return Some(map);
    }
    None
}

/// The lists of `groups`, from the first trackers that answer, one connection each.
fn fetch_groups(conf: &ModConf, groups: &BTreeSet<String>) -> Vec<(String, Vec<Peer>)> {
    let mut out = Vec::new();
    let mut left: Vec<&String> = groups.iter().collect();
    for addr in &conf.tracker_servers {
        if left.is_empty() {
            break;
        }
        let Ok(mut t) = Tracker::connect(addr, conf) else {
            continue;
        };
        let mut failed = Vec::new();
        for (i, g) in left.iter().enumerate() {
            match t.group(g) {
                Ok(Some(peers)) => out.push(((*g).clone(), peers)),
                Ok(None) => failed.push(*g),
                Err(_) => {
                    failed.extend_from_slice(&left[i..]);
                    break;
                }
            }
        }
        left = failed;
    }
    out
}

fn block_signals() {
    // nginx's signal handlers must run on the worker's main thread.
    // SAFETY: plain libc calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
    }
}

/// The fetching thread: a listing (whole, or of some groups) each time one is asked for,
/// [`MIN_GAP`] apart.
fn fetcher(conf: Arc<ModConf>) {
    block_signals();
    let mut last: Option<Instant> = None;
    let mut m = members();
    loop {
        while !m.want_all && m.want_groups.is_empty() {
            m = WANTED.wait(m).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(since) = last.map(|t| t.elapsed()) {
            if since < MIN_GAP {
                drop(m);
                std::thread::sleep(MIN_GAP - since);
                m = members();
            }
        }
        let now = Instant::now();
        last = Some(now);
        let groups = std::mem::take(&mut m.want_groups);
        if std::mem::take(&mut m.want_all) {
            m.running = true;
            m.tried_at = Some(now);
            drop(m);
            let taken = unix_now();
            let listing = fetch_all(&conf);
            m = members();
            if let Some(listing) = listing {
                let mut groups = BTreeMap::new();
                for (g, peers) in listing {
                    // a group whose list did not come keeps the one it had
                    let peers = match peers {
                        Some(p) => Some(Arc::from(p)),
                        None => m.groups.get(&g).cloned(),
                    };
                    if let Some(p) = peers {
                        groups.insert(g, p);
                    }
                }
                m.groups = groups;
                m.listed_unix = Some(taken);
                let Members {
                    groups,
                    asked,
                    reported,
                    ..
                } = &mut *m;
                asked.retain(|g, _| groups.contains_key(g));
                reported.retain(|(_, g), _| g.is_empty() || groups.contains_key(g));
            }
            m.running = false;
            FIRST_DONE.store(true, Ordering::Release);
        } else {
            drop(m);
            let lists = fetch_groups(&conf, &groups);
            m = members();
            for (g, peers) in lists {
                // only groups still listed: the whole listing decides which exist
                if let Some(slot) = m.groups.get_mut(&g) {
                    *slot = Arc::from(peers);
                }
            }
        }
    }
}

fn start_fetcher(conf: Arc<ModConf>) {
    if conf.tracker_servers.is_empty() {
        return;
    }
    // the first listing, at once
    members().want_all = true;
    let started = std::thread::Builder::new()
        .name("fdfs-peers".into())
        .spawn(move || fetcher(conf));
    if started.is_ok() {
        members().enabled = true;
    }
}

pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // Workers only (not the cache manager and loader, which serve no request).
    // SAFETY: nginx sets ngx_process before calling init_process.
    let process = unsafe { ngx_process } as u32;
    if process != NGX_PROCESS_WORKER && process != NGX_PROCESS_SINGLE {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: nginx passes the current cycle.
    let Some(mcf) = FastdfsModule::main_conf(unsafe { &*cycle }) else {
        return NGX_OK as ngx_int_t;
    };
    let Some(conf) = mcf.conf.clone() else {
        return NGX_OK as ngx_int_t;
    };
    let _ = LOCAL_IPS.set(interface_ips(&conf.if_alias_prefix));
    start_fetcher(conf);
    NGX_OK as ngx_int_t
}
