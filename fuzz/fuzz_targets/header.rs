//! The 10-byte packet header: decode, re-encode, and the body length check.
#![no_main]

use fdfs_proto::header::{Header, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER_LEN {
        return;
    }
    let raw: [u8; HEADER_LEN] = data[..HEADER_LEN].try_into().unwrap();
    let h = Header::decode(&raw);
    // Every 10 bytes are a header, and the layout is canonical.
    assert_eq!(h.encode(), raw);
    // The limit comes from the rest of the input (the daemons pass their buffer size).
    let (max, _) = fdfs_fuzz::take_u64(&data[HEADER_LEN..]);
    match h.body_len(max) {
        Ok(n) => {
            assert!(h.pkg_len >= 0);
            assert_eq!(n, h.pkg_len as u64);
            assert!(n <= max);
        }
        Err(_) => assert!(h.pkg_len < 0 || h.pkg_len as u64 > max),
    }
    assert_eq!(Header::request(h.cmd, 0).status, 0);
});
