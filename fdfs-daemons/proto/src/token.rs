//! The HTTP anti-steal token: `md5hex(remote filename + secret + timestamp)`.

use md5::{Digest, Md5};

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not 32 characters.
    Malformed,
    /// Older than the allowed time to live (upstream answers ETIMEDOUT).
    Expired,
    /// Does not match (upstream answers EPERM).
    Mismatch,
}

/// The token for `remote_filename` (without the group) at unix time `ts`.
pub fn make_token(remote_filename: &str, secret: &str, ts: i64) -> String {
    let mut h = Md5::new();
    h.update(remote_filename.as_bytes());
    h.update(secret.as_bytes());
    h.update(ts.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a token the way the nginx module does: a non-zero `ts` older than `ttl` seconds
/// before `now` has expired; otherwise it must match exactly.
pub fn check_token(
    remote_filename: &str,
    secret: &str,
    token: &str,
    ts: i64,
    now: i64,
    ttl: i64,
) -> Result<(), TokenError> {
    if token.len() != 32 {
        return Err(TokenError::Malformed);
    }
    // In i128: `ts` comes from the URL, and `now - ts` overflows i64 for a `ts` near
    // i64::MIN (found by fuzzing: a panic in a debug build, a wrong answer in release).
    if ts != 0 && i128::from(now) - i128::from(ts) > i128::from(ttl) {
        return Err(TokenError::Expired);
    }
    if !make_token(remote_filename, secret, ts).eq_ignore_ascii_case(token) {
        return Err(TokenError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";

    #[test]
    fn reference_example() {
        assert_eq!(
            make_token(NAME, "FastDFS1234567890", 1_795_475_304),
            "0d0b6c40ab21968ee0f077414c1da269"
        );
    }

    #[test]
    fn expiry_and_mismatch() {
        let t = make_token(NAME, "s", 1000);
        assert_eq!(check_token(NAME, "s", &t, 1000, 1500, 600), Ok(()));
        assert_eq!(
            check_token(NAME, "s", &t, 1000, 1601, 600),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check_token(NAME, "other", &t, 1000, 1001, 600),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            check_token(NAME, "s", "abc", 1000, 1001, 600),
            Err(TokenError::Malformed)
        );
    }

    /// Fuzz regression (fuzz/fuzz_targets/token.rs, input `80`): `ts = i64::MIN` from a
    /// `?ts=-9223372036854775808` query overflowed `now - ts`.
    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let t = make_token(NAME, "s", i64::MIN);
        assert_eq!(
            check_token(NAME, "s", &t, i64::MIN, 0, 600),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check_token(NAME, "s", &t, i64::MIN, 1_800_000_000, i64::MAX),
            Err(TokenError::Expired)
        );
        let t = make_token(NAME, "s", i64::MAX);
        // From the future: not expired, checked as usual.
        assert_eq!(check_token(NAME, "s", &t, i64::MAX, i64::MIN, 600), Ok(()));
        assert_eq!(
            check_token(NAME, "s", &t, i64::MAX, 1_800_000_000, 600),
            Ok(())
        );
    }
}
