//! The FastDFS 6.x wire protocol, file IDs and configuration files.
//!
//! No sockets and no async runtime: bodies are encoded into and decoded from byte
//! slices ([`msg`], [`header`], [`codec`]), and the only I/O is reading the
//! configuration files a reader is pointed at, with the files they `#include`
//! ([`config`], [`http::modconf`], [`storage_ids`]), and resolving the host names
//! `storage_ids.conf` may list. The daemons, the client tools and the nginx module
//! all build on these types, so every byte layout lives in exactly one place.

#![forbid(unsafe_code)]

pub mod addr;
pub mod allow_hosts;
pub mod cluster_auth;
pub mod cmd;
pub mod codec;
pub mod config;
pub mod errno;
pub mod fileid;
pub mod header;
pub mod http;
pub mod metadata;
pub mod msg;
pub mod status;
pub mod storage_ids;
pub mod token;
pub mod trunk;

pub use codec::{ProtoError, Reader, Writer};
pub use header::Header;

/// Width of a group name on the wire.
pub const GROUP_NAME_LEN: usize = 16;
/// Width of a storage id on the wire (15 characters plus NUL).
pub const STORAGE_ID_LEN: usize = 16;
/// Width of the IP fields in fixed structures of 6.11+ (join body, storage brief).
pub const IP_ADDRESS_SIZE: usize = 46;
/// Width of the version text field (6.12+).
pub const VERSION_SIZE: usize = 8;
/// Longest extension name a file can carry, without the dot.
pub const EXT_NAME_MAX_LEN: usize = 6;
/// Longest slave prefix.
pub const PREFIX_MAX_LEN: usize = 16;
/// Version this implementation announces.
pub const VERSION_TEXT: &str = "6.16.1";
/// Default tracker port.
pub const DEFAULT_TRACKER_PORT: u16 = 22122;
/// Default storage port.
pub const DEFAULT_STORAGE_PORT: u16 = 23000;

/// IP field width used in replies to clients (query, list storage, file info): the
/// tracker's `response_ip_addr_size` picks 16 (IPv4 era clients) or 46 (IPv6-aware).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSize {
    V4 = 16,
    V6 = 46,
}

impl IpSize {
    pub fn width(self) -> usize {
        self as usize
    }
}

/// Checks a group name: 1..16 characters from `[A-Za-z0-9]`.
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= GROUP_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks an extension or slave prefix: characters from `[A-Za-z0-9._-]`.
pub fn valid_name_part(part: &str) -> bool {
    // A table lookup per byte: the nginx module checks every requested name.
    const ALLOWED: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-';
            b += 1;
        }
        t
    };
    part.bytes().all(|b| ALLOWED[b as usize])
}

/// CRC32 as FastDFS computes it (IEEE, the same as zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}
