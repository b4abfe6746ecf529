//! The cluster secret handshake: an optional extension that lets trackers and storages
//! prove to each other that they know the same `cluster_secret` before a storage may
//! join, report to a tracker or send and receive replicas.
//!
//! Two round trips on the connection that is about to carry cluster commands, both
//! using command [`crate::cmd::CLUSTER_AUTH`]:
//!
//! 1. initiator → responder, status [`HELLO`]: its nonce `a` (16 bytes).
//!    Reply: the responder's nonce `b` (16 bytes) and
//!    `HMAC-SHA256(secret, "fdfs-cluster-responder" | a | b)`.
//! 2. The initiator checks that proof (a responder that does not know the secret learns
//!    nothing and receives nothing), then sends, status [`PROOF`],
//!    `HMAC-SHA256(secret, "fdfs-cluster-initiator" | a | b)`. The responder answers
//!    status 0 when it is right, EACCES (and closes) when it is not.
//!
//! Fresh nonces on both sides make a recorded exchange useless for a replay. A server
//! without a secret answers EINVAL (unknown command, as upstream would) to step 1.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const NONCE_LEN: usize = 16;
pub const MAC_LEN: usize = 32;
/// Header status of step 1.
pub const HELLO: u8 = 0;
/// Header status of step 2.
pub const PROOF: u8 = 1;
/// Length of the reply to step 1.
pub const CHALLENGE_LEN: usize = NONCE_LEN + MAC_LEN;
/// Shortest secret accepted in a config file.
pub const MIN_SECRET_LEN: usize = 16;

pub type Nonce = [u8; NONCE_LEN];

const RESPONDER: &[u8] = b"fdfs-cluster-responder";
const INITIATOR: &[u8] = b"fdfs-cluster-initiator";

fn keyed(secret: &[u8], role: &[u8], a: &Nonce, b: &Nonce) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(role);
    mac.update(a);
    mac.update(b);
    mac
}

/// The responder's proof for step 1's reply.
pub fn responder_proof(secret: &[u8], a: &Nonce, b: &Nonce) -> [u8; MAC_LEN] {
    keyed(secret, RESPONDER, a, b)
        .finalize()
        .into_bytes()
        .into()
}

/// The initiator's proof for step 2.
pub fn initiator_proof(secret: &[u8], a: &Nonce, b: &Nonce) -> [u8; MAC_LEN] {
    keyed(secret, INITIATOR, a, b)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a responder's proof (in constant time).
pub fn check_responder(secret: &[u8], a: &Nonce, b: &Nonce, proof: &[u8]) -> bool {
    keyed(secret, RESPONDER, a, b).verify_slice(proof).is_ok()
}

/// Checks an initiator's proof (in constant time).
pub fn check_initiator(secret: &[u8], a: &Nonce, b: &Nonce, proof: &[u8]) -> bool {
    keyed(secret, INITIATOR, a, b).verify_slice(proof).is_ok()
}

/// Reads a `cluster_secret` config value: empty means none (the default: everything
/// as upstream); otherwise at least [`MIN_SECRET_LEN`] bytes.
pub fn parse_secret(text: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.len() < MIN_SECRET_LEN => Err(format!(
            "at least {MIN_SECRET_LEN} characters (a long random string)"
        )),
        Some(s) => Ok(Some(s.as_bytes().to_vec())),
    }
}

/// Splits step 1's reply into the responder's nonce and proof.
pub fn split_challenge(reply: &[u8]) -> Option<(Nonce, &[u8])> {
    if reply.len() != CHALLENGE_LEN {
        return None;
    }
    let b: Nonce = reply[..NONCE_LEN].try_into().ok()?;
    Some((b, &reply[NONCE_LEN..]))
}

/// The responder's side of one connection.
#[derive(Debug, Default)]
pub struct Responder {
    /// Nonces of a step 1 answered on this connection, awaiting step 2.
    pending: Option<(Nonce, Nonce)>,
    proven: bool,
}

/// What a responder answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Status 0 with this body.
    Reply(Vec<u8>),
    /// This errno; the connection should be closed.
    Refuse(u8),
}

impl Responder {
    /// Has the peer proven the secret on this connection?
    pub fn proven(&self) -> bool {
        self.proven
    }

    /// Handles one CLUSTER_AUTH request. `fresh` is this side's new random nonce.
    pub fn handle(&mut self, secret: &[u8], status: u8, body: &[u8], fresh: Nonce) -> Answer {
        use crate::errno::{EACCES, EINVAL};
        match status {
            HELLO => {
                let Ok(a) = <Nonce>::try_from(body) else {
                    return Answer::Refuse(EINVAL);
                };
                self.pending = Some((a, fresh));
                let mut out = Vec::with_capacity(CHALLENGE_LEN);
                out.extend_from_slice(&fresh);
                out.extend_from_slice(&responder_proof(secret, &a, &fresh));
                Answer::Reply(out)
            }
            PROOF => match self.pending.take() {
                Some((a, b)) if check_initiator(secret, &a, &b, body) => {
                    self.proven = true;
                    Answer::Reply(Vec::new())
                }
                _ => Answer::Refuse(EACCES),
            },
            _ => Answer::Refuse(EINVAL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_with_the_same_secret_agree() {
        let secret = b"a shared cluster secret";
        let a = [1u8; NONCE_LEN];
        let mut r = Responder::default();
        let Answer::Reply(challenge) = r.handle(secret, HELLO, &a, [2u8; NONCE_LEN]) else {
            panic!("hello refused");
        };
        let (b, proof) = split_challenge(&challenge).unwrap();
        assert!(check_responder(secret, &a, &b, proof));
        let mine = initiator_proof(secret, &a, &b);
        assert_eq!(
            r.handle(secret, PROOF, &mine, [3u8; NONCE_LEN]),
            Answer::Reply(vec![])
        );
        assert!(r.proven());
    }

    #[test]
    fn a_wrong_secret_is_refused_either_way() {
        let a = [7u8; NONCE_LEN];
        let mut r = Responder::default();
        let Answer::Reply(challenge) = r.handle(b"right secret", HELLO, &a, [9u8; NONCE_LEN])
        else {
            panic!("hello refused");
        };
        let (b, proof) = split_challenge(&challenge).unwrap();
        // An initiator with another secret sees the responder does not share it...
        assert!(!check_responder(b"wrong secret", &a, &b, proof));
        // ...and its own proof is refused.
        let bad = initiator_proof(b"wrong secret", &a, &b);
        assert_eq!(
            r.handle(b"right secret", PROOF, &bad, [0u8; NONCE_LEN]),
            Answer::Refuse(crate::errno::EACCES)
        );
        assert!(!r.proven());
    }

    #[test]
    fn a_proof_without_a_hello_or_replayed_is_refused() {
        let secret = b"s";
        let mut r = Responder::default();
        let a = [4u8; NONCE_LEN];
        assert_eq!(
            r.handle(secret, PROOF, &[0u8; MAC_LEN], [0u8; NONCE_LEN]),
            Answer::Refuse(crate::errno::EACCES)
        );
        let Answer::Reply(c) = r.handle(secret, HELLO, &a, [5u8; NONCE_LEN]) else {
            panic!()
        };
        let (b, _) = split_challenge(&c).unwrap();
        let proof = initiator_proof(secret, &a, &b);
        // A second connection answers with a new nonce: the old proof is worthless.
        let mut other = Responder::default();
        other.handle(secret, HELLO, &a, [6u8; NONCE_LEN]);
        assert_eq!(
            other.handle(secret, PROOF, &proof, [0u8; NONCE_LEN]),
            Answer::Refuse(crate::errno::EACCES)
        );
        assert_eq!(
            r.handle(secret, PROOF, &proof, [0u8; NONCE_LEN]),
            Answer::Reply(vec![])
        );
        assert_eq!(
            r.handle(secret, HELLO, &[1u8; 3], [0u8; NONCE_LEN]),
            Answer::Refuse(crate::errno::EINVAL)
        );
    }
}
