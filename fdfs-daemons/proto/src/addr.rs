//! Server addresses as FastDFS writes them in configuration files and protocol text:
//! `host:port`, `[v6]:port`, the dual-address form `ip1,ip2:port` of a server reachable
//! on two networks, and a bare host where a default port applies. Parsed once, where a
//! configuration is read; nothing here resolves names (that is I/O, left to the caller).

use std::fmt;
use std::net::IpAddr;

/// A server's address: its host(s) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Every address of the entry (`ip1,ip2:port` has two); the first is the one used.
    pub hosts: Vec<String>,
    pub port: u16,
}

/// Splits `host:port`, `[v6]:port`, a bare host or a bare IPv6 address into the host
/// text and the port, if one is given (not checked further).
pub fn split(text: &str) -> (&str, Option<&str>) {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':'));
        }
    }
    match text.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') && !host.contains(',') => (text, None),
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    }
}

impl HostPort {
    /// Parses an entry; without a port in the text, `default_port` applies (an error
    /// when there is none). The error says what was expected.
    pub fn parse(text: &str, default_port: Option<u16>) -> Result<HostPort, String> {
        let (host, port) = split(text);
        if let Some(rest) = text.trim().strip_prefix('[') {
            let after = rest.split_once(']').map_or("", |(_, a)| a);
            if !after.is_empty() && !after.starts_with(':') {
                return Err("host:port, [v6]:port or a host".into());
            }
        }
        let port =
            match (port, default_port) {
                (Some(p), _) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| {
                    format!("host:port with a port between 1 and 65535, not {p:?}")
                })?,
                (None, Some(d)) => d,
                (None, None) => return Err("host:port (the port is required)".into()),
            };
        let hosts: Vec<String> = host
            .split(',')
            .map(|h| {
                h.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim()
            })
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect();
        if hosts.is_empty() {
            return Err("host:port with a non-empty host".into());
        }
        Ok(HostPort { hosts, port })
    }

    pub fn from_ip(ip: IpAddr, port: u16) -> HostPort {
        HostPort {
            hosts: vec![ip.to_canonical().to_string()],
            port,
        }
    }

    /// The address used to connect (the first of a dual-address entry).
    pub fn host(&self) -> &str {
        &self.hosts[0]
    }

    /// The first host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host().parse().ok()
    }
}

/// `ip:port`, or `[v6]:port`, of the first host: how FastDFS prints a server.
impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host().contains(':') {
            write!(f, "[{}]:{}", self.host(), self.port)
        } else {
            write!(f, "{}:{}", self.host(), self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(hosts: &[&str], port: u16) -> HostPort {
        HostPort {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            port,
        }
    }

    #[test]
    fn every_form_of_an_entry() {
        assert_eq!(
            HostPort::parse("10.0.0.1:22122", None),
            Ok(hp(&["10.0.0.1"], 22122))
        );
        assert_eq!(
            HostPort::parse(" tracker.example:22122 ", None),
            Ok(hp(&["tracker.example"], 22122))
        );
        assert_eq!(
            HostPort::parse("[::1]:23000", None),
            Ok(hp(&["::1"], 23000))
        );
        assert_eq!(
            HostPort::parse("10.0.0.1,192.168.0.1:22122", None),
            Ok(hp(&["10.0.0.1", "192.168.0.1"], 22122))
        );
        assert_eq!(
            HostPort::parse("10.0.0.1", Some(22122)),
            Ok(hp(&["10.0.0.1"], 22122))
        );
        assert_eq!(HostPort::parse("::1", Some(80)), Ok(hp(&["::1"], 80)));
        for bad in [
            "10.0.0.1",
            "10.0.0.1:0",
            "10.0.0.1:x",
            ":22122",
            "[::1]x",
            "[::1",
            "",
        ] {
            assert!(HostPort::parse(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn printed_as_fastdfs_prints_servers() {
        assert_eq!(
            hp(&["10.0.0.1", "10.0.0.2"], 22122).to_string(),
            "10.0.0.1:22122"
        );
        assert_eq!(hp(&["::1"], 23000).to_string(), "[::1]:23000");
        let v4_mapped: IpAddr = "::ffff:127.0.0.5".parse().unwrap();
        assert_eq!(HostPort::from_ip(v4_mapped, 1).to_string(), "127.0.0.5:1");
    }

    #[test]
    fn split_keeps_an_absent_port_absent() {
        assert_eq!(split("10.0.0.7"), ("10.0.0.7", None));
        assert_eq!(split("10.0.0.7:23000"), ("10.0.0.7", Some("23000")));
        assert_eq!(split("[fe80::1]:1"), ("fe80::1", Some("1")));
        assert_eq!(split("fe80::1"), ("fe80::1", None));
    }
}
