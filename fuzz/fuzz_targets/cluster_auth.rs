//! The `cluster_secret` handshake as a responder sees it: any sequence of requests
//! (status byte, body) from a peer that does not know the secret. Besides "no panic":
//! the peer is never taken as proven, and every challenge has the documented length.
#![no_main]

use fdfs_proto::cluster_auth::{Answer, Responder, CHALLENGE_LEN, NONCE_LEN};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"the secret the fuzzer never sees";

fuzz_target!(|data: &[u8]| {
    let mut r = Responder::default();
    // Requests: [status, len, body...] repeated.
    let mut rest = data;
    let mut n = 0u8;
    while rest.len() >= 2 {
        let (status, len) = (rest[0], rest[1] as usize);
        let body = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        n = n.wrapping_add(1);
        match r.handle(SECRET, status, body, [n; NONCE_LEN]) {
            Answer::Reply(reply) => {
                assert!(reply.is_empty() || reply.len() == CHALLENGE_LEN);
                assert!(reply.len() == CHALLENGE_LEN || r.proven());
            }
            Answer::Refuse(_) => {}
        }
        assert!(!r.proven(), "proven without the secret");
    }
});
