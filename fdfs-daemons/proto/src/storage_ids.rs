//! `storage_ids.conf`: the table that names each storage server by a number instead of
//! its IP address (`use_storage_id = true`). One server per line:
//!
//! ```text
//! # id     group   address[:port]           [rw=both|read|write|none]
//! 100001   group1  192.168.0.196
//! 100002   group1  192.168.0.197:23001      rw=read
//! 100003   group2  10.0.0.5,172.16.0.5
//! 100004   group2  [fe80::1,fe80::2]:23000
//! ```
//!
//! An id is a decimal number from 1 to 16 777 215 written without leading zeros; the
//! port defaults to 23000; a server reachable on two networks lists both addresses. The
//! same table is read by trackers, storages and clients, and sent by trackers to whoever
//! asks (69 FETCH_STORAGE_IDS), one line per server in the form parsed here.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::addr::HostPort;
use crate::fileid::Source;
use crate::{valid_group_name, DEFAULT_STORAGE_PORT};

/// `rw_mode` bits (R_OK | W_OK), as 92 lists them: what a server may be chosen for.
pub mod rw {
    /// Only receives copies: never chosen for an upload or a read.
    pub const NONE: u8 = 0;
    /// Chosen for uploads.
    pub const WRITE: u8 = 2;
    /// Chosen for reads.
    pub const READ: u8 = 4;
    pub const BOTH: u8 = READ | WRITE;

    /// The word `storage_ids.conf` and 69 use; `both` is never written there.
    pub fn name(mode: u8) -> &'static str {
        match mode {
            NONE => "none",
            READ => "read",
            WRITE => "write",
            _ => "both",
        }
    }
}

/// One server of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerId {
    /// The id as written (decimal, no leading zeros).
    pub id: String,
    pub group: String,
    /// One address, or two for a server on two networks; the first is the one used.
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub rw_mode: u8,
}

impl ServerId {
    /// The id as a number (checked when the table was read).
    pub fn number(&self) -> u32 {
        self.id.parse().expect("checked by the parser")
    }

    /// The address peers connect to.
    pub fn ip(&self) -> IpAddr {
        self.addrs[0]
    }

    /// Whether `ip` is one of the server's addresses.
    pub fn has_ip(&self, ip: &str) -> bool {
        match ip.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                self.addrs.contains(&ip)
            }
            Err(_) => false,
        }
    }

    /// The addresses as `ip1,ip2` (upstream's multi-address text, answered by 60).
    pub fn addrs_text(&self) -> String {
        let list: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        list.join(",")
    }
}

/// The line of 69 FETCH_STORAGE_IDS and of the file: `id group address:port[ rw=mode]`,
/// IPv6 addresses in brackets.
impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs = self.addrs_text();
        if self.addrs.iter().any(IpAddr::is_ipv6) {
            write!(f, "{} {} [{}]:{}", self.id, self.group, addrs, self.port)?;
        } else {
            write!(f, "{} {} {}:{}", self.id, self.group, addrs, self.port)?;
        }
        if self.rw_mode != rw::BOTH {
            write!(f, " rw={}", rw::name(self.rw_mode))?;
        }
        Ok(())
    }
}

/// The whole table, sorted by id text (the order 69 lists it in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerIds {
    servers: Vec<ServerId>,
}

/// Checks a server id: decimal, 1 to 16 777 215, no leading zeros or signs.
pub fn valid_server_id(id: &str) -> bool {
    id.parse::<u32>()
        .is_ok_and(|n| n > 0 && n <= Source::MAX_SERVER_ID && n.to_string() == id)
}

impl ServerIds {
    /// Parses the table. `resolve` turns a host name into an address (addresses are
    /// taken as they are). Errors name the line and say what is wrong.
    pub fn parse(
        text: &str,
        mut resolve: impl FnMut(&str) -> Option<IpAddr>,
    ) -> Result<ServerIds, String> {
        let mut servers: Vec<ServerId> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
            let mut words = line.split_whitespace();
            let (Some(id), Some(group), Some(host)) = (words.next(), words.next(), words.next())
            else {
                return Err(at("expected an id, a group name and an address".into()));
            };
            if !valid_server_id(id) {
                return Err(at(format!(
                    "invalid server id {id:?}: a number from 1 to {} without leading zeros",
                    Source::MAX_SERVER_ID
                )));
            }
            if !valid_group_name(group) {
                return Err(at(format!("invalid group name {group:?}")));
            }
            let hp = HostPort::parse(host, Some(DEFAULT_STORAGE_PORT)).map_err(&at)?;
            if hp.hosts.len() > 2 {
                return Err(at("at most two addresses per server".into()));
            }
            let mut addrs = Vec::with_capacity(hp.hosts.len());
            for h in &hp.hosts {
                let ip = match h.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => resolve(h).ok_or_else(|| at(format!("cannot resolve {h:?}")))?,
                };
                addrs.push(ip.to_canonical());
            }
            let rw_mode = match words.next() {
                None => rw::BOTH,
                Some(option) => parse_rw(option).ok_or_else(|| {
                    at(format!(
                        "invalid option {option:?}: rw=both, read, write or none"
                    ))
                })?,
            };
            if let Some(extra) = words.next() {
                return Err(at(format!("unexpected {extra:?} after the options")));
            }
            servers.push(ServerId {
                id: id.to_string(),
                group: group.to_string(),
                addrs,
                port: hp.port,
                rw_mode,
            });
        }
        if servers.is_empty() {
            return Err("no storage id in the file".into());
        }
        servers.sort_by(|a, b| a.id.cmp(&b.id));
        for pair in servers.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(format!("duplicate storage id {}", pair[0].id));
            }
        }
        for (i, a) in servers.iter().enumerate() {
            for b in &servers[i + 1..] {
                if a.port == b.port && a.addrs.iter().any(|ip| b.addrs.contains(ip)) {
                    return Err(format!(
                        "duplicate storage {}:{} (ids {} and {})",
                        a.ip(),
                        a.port,
                        a.id,
                        b.id
                    ));
                }
            }
        }
        Ok(ServerIds { servers })
    }

    /// Builds the table from the lines a tracker sent (69), without resolving names.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<ServerIds, String> {
        let text: Vec<&str> = lines.into_iter().collect();
        Self::parse(&text.join("\n"), |_| None)
    }

    pub fn all(&self) -> &[ServerId] {
        &self.servers
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub fn by_id(&self, id: &str) -> Option<&ServerId> {
        self.servers
            .binary_search_by(|s| s.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.servers[i])
    }

    /// The server with address `ip` (either of two) and `port`.
    pub fn by_addr(&self, ip: &str, port: u16) -> Option<&ServerId> {
        self.servers.iter().find(|s| s.port == port && s.has_ip(ip))
    }

    /// As [`by_addr`](Self::by_addr), within one group.
    pub fn by_group_addr(&self, group: &str, ip: &str, port: u16) -> Option<&ServerId> {
        self.servers
            .iter()
            .find(|s| s.group == group && s.port == port && s.has_ip(ip))
    }

    /// Whether any server has an IPv6 address (then replies use 46-byte addresses).
    pub fn has_ipv6(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.addrs.iter().any(IpAddr::is_ipv6))
    }
}

/// Reads `name` (relative to the directory of `config`, the file that names it, as
/// upstream resolves it), resolving host names. The error names the file.
pub fn load(config: &Path, name: &str) -> Result<ServerIds, String> {
    let path = match config.parent() {
        Some(dir) if Path::new(name).is_relative() => dir.join(name),
        _ => PathBuf::from(name),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ServerIds::parse(&text, |host| {
        (host, 0)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip())
    })
    .map_err(|why| format!("{}: {why}", path.display()))
}

fn parse_rw(option: &str) -> Option<u8> {
    let lower = option.to_ascii_lowercase();
    let value = lower.strip_prefix("rw=")?;
    Some(match value {
        "none" => rw::NONE,
        "read" | "readonly" => rw::READ,
        "write" | "writeonly" => rw::WRITE,
        "both" | "all" => rw::BOTH,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# <id> <group> <ip_or_hostname[:port]> [options]
100001   group1  192.168.0.196
100002   group1  192.168.0.197:23001\trw=READ
100003   group2  10.0.0.5,172.16.0.5  rw=none
100004   group2  [fe80::1,fe80::2]:23002 rw=writeonly
100010   group3  storage.example
";

    fn table() -> ServerIds {
        ServerIds::parse(SAMPLE, |h| {
            (h == "storage.example").then(|| "10.1.1.1".parse().unwrap())
        })
        .unwrap()
    }

    #[test]
    fn every_form_of_a_line() {
        let t = table();
        assert_eq!(t.len(), 5);
        let s = t.by_id("100001").unwrap();
        assert_eq!(
            (s.group.as_str(), s.port, s.rw_mode),
            ("group1", 23000, rw::BOTH)
        );
        assert_eq!(t.by_id("100002").unwrap().rw_mode, rw::READ);
        assert_eq!(t.by_id("100002").unwrap().port, 23001);
        let dual = t.by_id("100003").unwrap();
        assert_eq!(dual.addrs_text(), "10.0.0.5,172.16.0.5");
        assert_eq!(dual.rw_mode, rw::NONE);
        let v6 = t.by_id("100004").unwrap();
        assert_eq!((v6.port, v6.rw_mode), (23002, rw::WRITE));
        assert_eq!(t.by_id("100010").unwrap().addrs_text(), "10.1.1.1");
        assert!(t.has_ipv6());
        // Sorted by id text, as upstream lists them.
        let ids: Vec<&str> = t.all().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["100001", "100002", "100003", "100004", "100010"]);
    }

    #[test]
    fn lookups_by_address_take_either_address_and_the_port() {
        let t = table();
        assert_eq!(t.by_addr("172.16.0.5", 23000).unwrap().id, "100003");
        assert_eq!(t.by_addr("10.0.0.5", 23000).unwrap().id, "100003");
        assert!(t.by_addr("10.0.0.5", 23001).is_none());
        assert_eq!(t.by_addr("fe80::2", 23002).unwrap().id, "100004");
        assert_eq!(
            t.by_addr("::ffff:192.168.0.196", 23000).unwrap().id,
            "100001"
        );
        assert!(t.by_group_addr("group2", "192.168.0.196", 23000).is_none());
        assert_eq!(
            t.by_group_addr("group1", "192.168.0.197", 23001)
                .unwrap()
                .id,
            "100002"
        );
    }

    #[test]
    fn lines_as_a_tracker_sends_them_read_back() {
        let t = table();
        let lines: Vec<String> = t.all().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "100001 group1 192.168.0.196:23000",
                "100002 group1 192.168.0.197:23001 rw=read",
                "100003 group2 10.0.0.5,172.16.0.5:23000 rw=none",
                "100004 group2 [fe80::1,fe80::2]:23002 rw=write",
                "100010 group3 10.1.1.1:23000",
            ]
        );
        let back = ServerIds::from_lines(lines.iter().map(String::as_str)).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn bad_tables_are_refused_with_the_line() {
        let bad = |text: &str| ServerIds::parse(text, |_| None).unwrap_err();
        assert!(bad("").contains("no storage id"));
        assert!(bad("0100 group1 10.0.0.1").contains("line 1"));
        assert!(bad("16777216 group1 10.0.0.1").contains("invalid server id"));
        assert!(bad("1 group1").contains("expected"));
        assert!(bad("1 group/1 10.0.0.1").contains("group name"));
        assert!(bad("1 group1 10.0.0.1 rw=maybe").contains("rw="));
        assert!(bad("1 group1 nowhere.invalid").contains("resolve"));
        assert!(bad("1 g 10.0.0.1\n1 g 10.0.0.2").contains("duplicate storage id 1"));
        assert!(bad("1 g 10.0.0.1\n2 g 10.0.0.1:23000").contains("duplicate storage"));
        // Same address, other ports: two instances on one host.
        assert!(ServerIds::parse("1 g 10.0.0.1:23001\n2 g 10.0.0.1:23002", |_| None).is_ok());
        assert!(valid_server_id("16777215") && !valid_server_id("+5") && !valid_server_id("0"));
    }
}
