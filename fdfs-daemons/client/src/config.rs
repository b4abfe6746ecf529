//! `client.conf`: where the trackers are and how long to wait for them.
//!
//! Only the keys a client acts on are interpreted (`tracker_server`, `connect_timeout`,
//! `network_timeout`, `base_path`); every other key upstream knows (`log_level`,
//! `use_connection_pool`, `load_fdfs_parameters_from_tracker`, `http.*`, ...) is accepted
//! and ignored, so operators keep their files unchanged.

use std::net::{SocketAddr, ToSocketAddrs};

use fdfs_proto::addr::HostPort;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fdfs_proto::config::{ConfigError, Entry, IniFile};
use fdfs_proto::DEFAULT_TRACKER_PORT;

/// Default `connect_timeout`, seconds.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 10;
/// Default `network_timeout`, seconds.
pub const DEFAULT_NETWORK_TIMEOUT: u64 = 30;
/// Upstream refuses more trackers than this.
pub const MAX_TRACKERS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Trackers, sorted by address text then port (the order upstream clients use).
    pub trackers: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    pub network_timeout: Duration,
    /// Where upstream writes its logs; kept for callers that want it.
    pub base_path: Option<PathBuf>,
}

impl ClientConfig {
    /// Reads and checks a `client.conf`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_ini(&IniFile::load(path)?)
    }

    /// Parses `text` as if it were the file at `path`.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_ini(&IniFile::parse(text, path)?)
    }

    pub fn from_ini(ini: &IniFile) -> Result<Self, ConfigError> {
        let g = ini.global();
        let entries = g.entries("tracker_server");
        // require_str gives the "missing key" error naming the file.
        if entries.iter().all(|e| e.value.is_empty()) {
            g.require_str("tracker_server")?;
        }
        let mut trackers = Vec::new();
        for e in entries.iter().filter(|e| !e.value.is_empty()) {
            let addr = parse_tracker_entry(e)?;
            if !trackers.contains(&addr) {
                trackers.push(addr);
            }
        }
        if trackers.len() > MAX_TRACKERS {
            return Err(g.invalid(
                "tracker_server",
                &format!("at most {MAX_TRACKERS} tracker servers"),
            ));
        }
        sort_trackers(&mut trackers);
        let timeout = |key: &str, default: u64| -> Result<Duration, ConfigError> {
            let v = g.int(key, default as i64)?;
            // Upstream falls back to the default for zero or negative values.
            Ok(Duration::from_secs(if v <= 0 { default } else { v as u64 }))
        };
        Ok(ClientConfig {
            trackers,
            connect_timeout: timeout("connect_timeout", DEFAULT_CONNECT_TIMEOUT)?,
            network_timeout: timeout("network_timeout", DEFAULT_NETWORK_TIMEOUT)?,
            base_path: g
                .str("base_path")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        })
    }
}

/// Sorts trackers the way upstream does: by address text, then port.
pub fn sort_trackers(trackers: &mut [SocketAddr]) {
    trackers.sort_by(|a, b| {
        a.ip()
            .to_string()
            .cmp(&b.ip().to_string())
            .then(a.port().cmp(&b.port()))
    });
}

fn parse_tracker_entry(e: &Entry) -> Result<SocketAddr, ConfigError> {
    parse_host_port(&e.value, None).map_err(|why| ConfigError::Invalid {
        file: e.file.clone(),
        line: e.line,
        key: e.key.clone(),
        value: e.value.clone(),
        expected: why,
    })
}

/// Parses `host:port`, `[v6]:port`, or (when `default_port` is given) a bare host.
/// A dual-address entry `ip1,ip2:port` uses its first address. Host names are resolved.
pub fn parse_host_port(text: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    let entry = HostPort::parse(text, default_port)?;
    if let Some(ip) = entry.ip() {
        return Ok(SocketAddr::new(ip, entry.port));
    }
    let host = entry.host();
    (host, entry.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| format!("host:port with a resolvable host, cannot resolve {host:?}"))
}

/// `host[:port]` as `fdfs_monitor -h` takes it (tracker default port 22122).
pub fn parse_tracker_arg(text: &str) -> Result<SocketAddr, String> {
    parse_host_port(text, Some(DEFAULT_TRACKER_PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientConfig, ConfigError> {
        ClientConfig::parse(text, "/etc/fdfs/client.conf")
    }

    #[test]
    fn several_trackers_sorted_and_defaults() {
        let c = parse(
            "# client\nbase_path = /tmp/fdfs\ntracker_server = 127.0.0.9:22122\n\
             tracker_server=127.0.0.10:22122\ntracker_server = 127.0.0.9:22000\n\
             log_level = info\nuse_connection_pool = false\n\
             http.anti_steal.check_token = no\n",
        )
        .unwrap();
        let got: Vec<String> = c.trackers.iter().map(|a| a.to_string()).collect();
        // Sorted by address text: "127.0.0.10" < "127.0.0.9".
        assert_eq!(
            got,
            ["127.0.0.10:22122", "127.0.0.9:22000", "127.0.0.9:22122"]
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.network_timeout, Duration::from_secs(30));
        assert_eq!(c.base_path, Some(PathBuf::from("/tmp/fdfs")));
    }

    #[test]
    fn timeouts_and_duplicates() {
        let c = parse(
            "tracker_server = 127.0.0.1:22122\ntracker_server = 127.0.0.1:22122\n\
             connect_timeout = 3\nnetwork_timeout = 0\n",
        )
        .unwrap();
        assert_eq!(c.trackers.len(), 1);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.network_timeout, Duration::from_secs(30));
    }

    #[test]
    fn ipv6_and_dual_addresses() {
        let c =
            parse("tracker_server = [::1]:22122\ntracker_server = 10.0.0.1,192.168.0.1:22122\n")
                .unwrap();
        let got: Vec<String> = c.trackers.iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["10.0.0.1:22122", "[::1]:22122"]);
    }

    #[test]
    fn missing_tracker_is_an_error_naming_the_file() {
        let err = parse("base_path = /tmp\n").unwrap_err().to_string();
        assert!(err.contains("client.conf"), "{err}");
        assert!(err.contains("tracker_server"), "{err}");
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let err = parse("tracker_server = 127.0.0.1:22122\ntracker_server = 127.0.0.1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("client.conf:2"), "{err}");
        assert!(err.contains("tracker_server"), "{err}");

        let err = parse("tracker_server = 127.0.0.1:99999\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1"), "{err}");

        let err = parse("tracker_server = 127.0.0.1:22122\nconnect_timeout = soon\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("client.conf:2"), "{err}");
        assert!(err.contains("connect_timeout"), "{err}");
    }

    #[test]
    fn monitor_host_argument() {
        assert_eq!(
            parse_tracker_arg("127.0.0.5").unwrap().to_string(),
            "127.0.0.5:22122"
        );
        assert_eq!(
            parse_tracker_arg("127.0.0.5:1234").unwrap().to_string(),
            "127.0.0.5:1234"
        );
        assert_eq!(parse_tracker_arg("::1").unwrap().to_string(), "[::1]:22122");
        assert!(parse_tracker_arg("127.0.0.5:x").is_err());
    }
}
