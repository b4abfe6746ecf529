//! What this worker knows about the cluster: its own addresses (to recognise files whose
//! source is this node) and the storages of each group as the trackers list them (cmd 91
//! + 92), the only storages a file missing here is fetched from.
//!
//! The list is needed only for files this node does not have, so it is fetched on demand:
//! a background thread fetches it when a request needs it and the last listing is older
//! than `tracker_refresh_interval` (or there is none yet). Files served from the local
//! disk never cause tracker traffic, and no request talks to a tracker itself. A request
//! that finds the listing out of date waits for the new one (at most [`WAIT_MAX`]),
//! unless a fetch was already tried within the interval and failed: with the trackers
//! down, misses are answered from the last listing instead of waiting each time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use fdfs_proto::cmd;
use fdfs_proto::header::{Header, HEADER_LEN};
use fdfs_proto::http::modconf::ModConf;
use fdfs_proto::http::peers::{is_member, list_storage_request, parse_list_storage, Peer};
use fdfs_proto::tracker_msg::GroupStat;
use ngx::ffi::*;
use ngx::http::HttpModuleMainConf;

use crate::FastdfsModule;

/// Longest a request waits for a listing it asked for.
pub const WAIT_MAX: Duration = Duration::from_secs(3);
/// Fetches start at least this far apart (a name naming a storage no tracker lists asks
/// for a new listing, in case that storage just joined).
const MIN_GAP: Duration = Duration::from_secs(1);
/// Most groups and storages per group kept from a listing.
const MAX_GROUPS: usize = 1024;
const MAX_PEERS: usize = 256;

static LOCAL_IPS: OnceLock<Vec<String>> = OnceLock::new();

/// The storage lists of this worker and the state of their fetching.
struct Members {
    /// Whether the fetching thread runs (trackers are configured).
    enabled: bool,
    /// Group -> storages, from the last listing a tracker answered.
    groups: BTreeMap<String, Vec<Peer>>,
    /// When that listing was taken.
    loaded_at: Option<Instant>,
    /// When the last fetch began, whether it succeeded or not.
    tried_at: Option<Instant>,
    /// Fetches finished (answered or failed).
    done: u64,
    /// A fetch is under way.
    running: bool,
    /// A request asked for a fetch.
    wanted: bool,
}

static MEMBERS: Mutex<Members> = Mutex::new(Members {
    enabled: false,
    groups: BTreeMap::new(),
    loaded_at: None,
    tried_at: None,
    done: 0,
    running: false,
    wanted: false,
});
static CHANGED: Condvar = Condvar::new();

fn members() -> MutexGuard<'static, Members> {
    MEMBERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// This host's IPv4 addresses (interfaces filtered by `if_alias_prefix`) plus 127.0.0.1.
pub fn local_ips() -> &'static [String] {
    LOCAL_IPS.get().map(Vec::as_slice).unwrap_or(&[])
}

/// The storages of `group` as the trackers list them (empty when unknown), for a file
/// this node does not have. `source` is the storage the file's name claims it came from:
/// when the listing does not hold it, a new listing is asked for (without waiting) in
/// case it joined since.
pub fn group_members(group: &str, source: Option<Ipv4Addr>, conf: &ModConf) -> Vec<Peer> {
    let mut m = members();
    if !m.enabled {
        return Vec::new();
    }
    let interval = Duration::from_secs(conf.tracker_refresh_interval);
    let fresh = m.loaded_at.is_some_and(|t| t.elapsed() < interval);
    let failed_lately = !m.running && m.tried_at.is_some_and(|t| t.elapsed() < interval);
    if !fresh && !failed_lately {
        m.wanted = true;
        CHANGED.notify_all();
        let seen = m.done;
        m = CHANGED
            .wait_timeout_while(m, WAIT_MAX, |m| m.done == seen)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    let peers = m.groups.get(group).cloned().unwrap_or_default();
    if source.is_some_and(|s| !is_member(s, &peers)) && !m.running {
        m.wanted = true;
        CHANGED.notify_all();
    }
    peers
}

fn interface_ips(prefixes: &[String]) -> Vec<String> {
    let mut out = vec!["127.0.0.1".to_string()];
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
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string();
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        libc::freeifaddrs(ifap);
    }
    out
}

fn call(addr: &str, conf: &ModConf, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let sa = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(conf.connect_timeout))?;
    s.set_read_timeout(Some(Duration::from_secs(conf.network_timeout)))?;
    s.set_write_timeout(Some(Duration::from_secs(conf.network_timeout)))?;
    s.write_all(request)?;
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h)?;
    let h = Header::decode(&h);
    let len = h
        .body_len(16 << 20)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body)?;
    if h.status != 0 {
        return Err(std::io::Error::other(format!(
            "tracker status {}",
            h.status
        )));
    }
    Ok(body)
}

fn refresh(conf: &ModConf) -> Option<BTreeMap<String, Vec<Peer>>> {
    for tracker in &conf.tracker_servers {
        let req = Header::request(cmd::SERVER_LIST_ALL_GROUPS, 0).encode();
        let Ok(body) = call(tracker, conf, &req) else {
            continue;
        };
        let Ok(groups) = GroupStat::decode_list(&body) else {
            continue;
        };
        let mut map = BTreeMap::new();
        for g in groups.into_iter().take(MAX_GROUPS) {
            if let Ok(body) = call(tracker, conf, &list_storage_request(&g.group)) {
                if let Ok(mut peers) = parse_list_storage(&body) {
                    peers.truncate(MAX_PEERS);
                    map.insert(g.group, peers);
                }
            }
        }
        return Some(map);
    }
    None
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

/// The fetching thread: one listing each time a request asks for one, [`MIN_GAP`] apart.
fn fetcher(conf: Arc<ModConf>) {
    block_signals();
    let mut m = members();
    loop {
        while !m.wanted {
            m = CHANGED.wait(m).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(since) = m.tried_at.map(|t| t.elapsed()) {
            if since < MIN_GAP {
                drop(m);
                std::thread::sleep(MIN_GAP - since);
                m = members();
            }
        }
        m.wanted = false;
        m.running = true;
        m.tried_at = Some(Instant::now());
        drop(m);
        let listing = refresh(&conf);
        m = members();
        if let Some(groups) = listing {
            m.groups = groups;
            m.loaded_at = m.tried_at;
        }
        m.running = false;
        m.done += 1;
        CHANGED.notify_all();
    }
}

fn start_fetcher(conf: Arc<ModConf>) {
    if conf.tracker_servers.is_empty() {
        return;
    }
    let started = std::thread::Builder::new()
        .name("fdfs-peers".into())
        .spawn(move || fetcher(conf));
    if started.is_ok() {
        members().enabled = true;
    }
}

pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
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
