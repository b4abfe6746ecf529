//! `allow_hosts`: which client addresses a daemon accepts, in FastDFS's notation.
//!
//! Each value is `*` (everyone), an address (`10.0.0.5`, `::1`), a CIDR block
//! (`192.168.1.0/24`), or an IPv4 address with bracketed ranges in any octet
//! (`10.0.1.[1-15,17]`, `10.[0-3].0.[1-254]`). Several values (repeated keys) add up.
//! Host names are not resolved: an entry that is not an address is refused at start-up,
//! so a typo cannot silently let nobody (or everybody) in.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Any,
    Exact(IpAddr),
    Cidr(IpAddr, u8),
    /// One set of allowed values per octet.
    Ranges(Box<[[bool; 256]; 4]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowHosts {
    rules: Vec<Rule>,
}

impl Default for AllowHosts {
    /// Upstream's default: everyone.
    fn default() -> Self {
        AllowHosts {
            rules: vec![Rule::Any],
        }
    }
}

fn parse_octet_set(text: &str) -> Option<[bool; 256]> {
    let mut set = [false; 256];
    let inner = match text.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?,
        None => text,
    };
    for part in inner.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u8>().ok()?, b.trim().parse::<u8>().ok()?),
            None => {
                let v = part.trim().parse::<u8>().ok()?;
                (v, v)
            }
        };
        if lo > hi {
            return None;
        }
        for v in lo..=hi {
            set[v as usize] = true;
        }
    }
    Some(set)
}

fn parse_rule(text: &str) -> Result<Rule, String> {
    let t = text.trim();
    if t == "*" {
        return Ok(Rule::Any);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(Rule::Exact(ip));
    }
    if let Some((addr, bits)) = t.split_once('/') {
        let ip: IpAddr = addr.parse().map_err(|_| format!("{t:?}: not an address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("{t:?}: prefix length must be 0..={max}"))?;
        return Ok(Rule::Cidr(ip, bits));
    }
    let octets: Vec<&str> = t.split('.').collect();
    if octets.len() == 4 && t.contains('[') {
        let mut sets = Box::new([[false; 256]; 4]);
        for (i, o) in octets.iter().enumerate() {
            sets[i] = parse_octet_set(o).ok_or_else(|| format!("{t:?}: bad range {o:?}"))?;
        }
        return Ok(Rule::Ranges(sets));
    }
    Err(format!(
        "{t:?}: expected *, an IP address, a CIDR block or ranges like 10.0.0.[1-15]"
    ))
}

fn prefix_match(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[full] ^ b[full]) & (0xFFu8 << (8 - rest)) == 0
}

impl AllowHosts {
    /// Builds the matcher from every `allow_hosts` value; no values means everyone.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<AllowHosts, String> {
        let rules = values
            .into_iter()
            .filter(|v| !v.trim().is_empty())
            .map(parse_rule)
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Ok(AllowHosts::default());
        }
        Ok(AllowHosts { rules })
    }

    pub fn allows_all(&self) -> bool {
        self.rules.contains(&Rule::Any)
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen on an IPv6 socket matches IPv4 rules.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.rules.iter().any(|r| match (r, ip) {
            (Rule::Any, _) => true,
            (Rule::Exact(a), _) => *a == ip,
            (Rule::Cidr(IpAddr::V4(net), bits), IpAddr::V4(v4)) => {
                prefix_match(&net.octets(), &v4.octets(), *bits)
            }
            (Rule::Cidr(IpAddr::V6(net), bits), IpAddr::V6(v6)) => {
                prefix_match(&net.octets(), &v6.octets(), *bits)
            }
            (Rule::Ranges(sets), IpAddr::V4(v4)) => v4
                .octets()
                .iter()
                .zip(sets.iter())
                .all(|(o, s)| s[*o as usize]),
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn upstream_forms() {
        let a = AllowHosts::parse(["10.0.1.[1-15,17]", "192.168.0.0/16", "127.0.0.1"]).unwrap();
        assert!(a.allows(ip("10.0.1.1")) && a.allows(ip("10.0.1.15")) && a.allows(ip("10.0.1.17")));
        assert!(!a.allows(ip("10.0.1.16")) && !a.allows(ip("10.0.2.1")));
        assert!(a.allows(ip("192.168.77.3")) && !a.allows(ip("192.169.0.1")));
        assert!(a.allows(ip("127.0.0.1")) && !a.allows(ip("127.0.0.2")));
        assert!(a.allows(ip("::ffff:10.0.1.3")));
        assert!(!a.allows_all());
    }

    #[test]
    fn everyone_by_default_and_with_star() {
        assert!(AllowHosts::parse([]).unwrap().allows(ip("8.8.8.8")));
        assert!(AllowHosts::parse(["*"]).unwrap().allows_all());
        assert!(AllowHosts::parse([""]).unwrap().allows_all());
    }

    #[test]
    fn odd_prefixes_and_v6() {
        let a = AllowHosts::parse(["127.0.0.0/25", "fd00::/8"]).unwrap();
        assert!(a.allows(ip("127.0.0.127")) && !a.allows(ip("127.0.0.128")));
        assert!(a.allows(ip("fd12::1")) && !a.allows(ip("fe80::1")));
        assert!(AllowHosts::parse(["0.0.0.0/0"])
            .unwrap()
            .allows(ip("1.2.3.4")));
    }

    #[test]
    fn mistakes_are_refused() {
        for bad in [
            "host[01-08].domain.com",
            "10.0.0.[5-1]",
            "10.0.0.0/33",
            "10.0.0.[1-300]",
            "nope",
        ] {
            assert!(AllowHosts::parse([bad]).is_err(), "{bad} accepted");
        }
    }
}
