//! What this worker knows about the cluster: its own addresses (to recognise files whose
//! source is this node) and the storages of each group, learnt from the trackers by a
//! background thread (cmd 91 + 92, refreshed every `tracker_refresh_interval`) so that
//! request handling never waits on the network.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fdfs_proto::cmd;
use fdfs_proto::header::{Header, HEADER_LEN};
use fdfs_proto::http::modconf::ModConf;
use fdfs_proto::http::peers::{list_storage_request, parse_list_storage, Peer};
use fdfs_proto::tracker_msg::GroupStat;
use ngx::ffi::*;
use ngx::http::HttpModuleMainConf;

use crate::FastdfsModule;

static LOCAL_IPS: OnceLock<Vec<String>> = OnceLock::new();
static GROUPS: Mutex<Option<HashMap<String, Vec<Peer>>>> = Mutex::new(None);

/// This host's IPv4 addresses (interfaces filtered by `if_alias_prefix`) plus 127.0.0.1.
pub fn local_ips() -> &'static [String] {
    LOCAL_IPS.get().map(Vec::as_slice).unwrap_or(&[])
}

/// The storages of `group` as last listed by a tracker (empty if unknown).
pub fn group_peers(group: &str) -> Vec<Peer> {
    GROUPS
        .lock()
        .ok()
        .and_then(|g| g.as_ref().and_then(|m| m.get(group).cloned()))
        .unwrap_or_default()
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

fn refresh(conf: &ModConf) -> Option<HashMap<String, Vec<Peer>>> {
    for tracker in &conf.tracker_servers {
        let req = Header::request(cmd::SERVER_LIST_ALL_GROUPS, 0).encode();
        let Ok(body) = call(tracker, conf, &req) else {
            continue;
        };
        let Ok(groups) = GroupStat::decode_list(&body) else {
            continue;
        };
        let mut map = HashMap::new();
        for g in groups {
            if let Ok(body) = call(tracker, conf, &list_storage_request(&g.group)) {
                if let Ok(peers) = parse_list_storage(&body) {
                    map.insert(g.group.clone(), peers);
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

fn start_refresher(conf: Arc<ModConf>) {
    if conf.tracker_servers.is_empty() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("fdfs-peers".into())
        .spawn(move || {
            block_signals();
            loop {
                if let Some(map) = refresh(&conf) {
                    if let Ok(mut g) = GROUPS.lock() {
                        *g = Some(map);
                    }
                }
                std::thread::sleep(Duration::from_secs(conf.tracker_refresh_interval));
            }
        });
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
    start_refresher(conf);
    NGX_OK as ngx_int_t
}
