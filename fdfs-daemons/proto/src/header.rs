//! The 10-byte header in front of every request and reply.

use crate::cmd;
use crate::codec::ProtoError;

pub const HEADER_LEN: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the body that follows (the header itself excluded).
    pub pkg_len: i64,
    pub cmd: u8,
    /// 0 in most requests (a few commands use it as flags); errno in replies.
    pub status: u8,
}

impl Header {
    pub fn request(cmd: u8, body_len: usize) -> Self {
        Header {
            pkg_len: body_len as i64,
            cmd,
            status: 0,
        }
    }

    pub fn response(status: u8, body_len: u64) -> Self {
        Header {
            pkg_len: body_len as i64,
            cmd: cmd::RESP,
            status,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&self.pkg_len.to_be_bytes());
        out[8] = self.cmd;
        out[9] = self.status;
        out
    }

    pub fn decode(raw: &[u8; HEADER_LEN]) -> Self {
        Header {
            pkg_len: i64::from_be_bytes(raw[..8].try_into().unwrap()),
            cmd: raw[8],
            status: raw[9],
        }
    }

    /// The body length, refusing negative values and bodies longer than `max`.
    pub fn body_len(&self, max: u64) -> Result<u64, ProtoError> {
        if self.pkg_len < 0 || self.pkg_len as u64 > max {
            return Err(ProtoError::PackageLength(self.pkg_len));
        }
        Ok(self.pkg_len as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_query_store_request_and_reply() {
        // From the reference capture: cmd 101 with an empty body, reply with 40 bytes.
        let req = Header::request(cmd::QUERY_STORE_WITHOUT_GROUP_ONE, 0).encode();
        assert_eq!(req, [0, 0, 0, 0, 0, 0, 0, 0, 0x65, 0]);
        let reply = Header::decode(&[0, 0, 0, 0, 0, 0, 0, 0x28, 0x64, 0]);
        assert_eq!(reply, Header::response(0, 40));
    }

    #[test]
    fn negative_and_huge_lengths_are_refused() {
        let h = Header::decode(&[0xff; 10]);
        assert_eq!(h.pkg_len, -1);
        assert!(h.body_len(1 << 20).is_err());
        let h = Header::request(cmd::UPLOAD_FILE, 1 << 30);
        assert!(h.body_len(1 << 20).is_err());
        assert_eq!(h.body_len(u64::MAX).unwrap(), 1 << 30);
    }
}
