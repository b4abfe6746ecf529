//! The anti-steal token check: `ts` comes from the URL (any i64 the query parses to), `now`
//! from the clock, `ttl` from the config; the strings are arbitrary.
#![no_main]

use fdfs_proto::token::{check_token, make_token, TokenError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ts_raw, rest) = fdfs_fuzz::take_u64(data);
    let (now_raw, rest) = fdfs_fuzz::take_u64(rest);
    let (ttl_raw, rest) = fdfs_fuzz::take_u64(rest);
    let text = fdfs_fuzz::lossy(rest);
    let mut parts = text.splitn(4, '\0');
    let remote = parts.next().unwrap_or("");
    let secret = parts.next().unwrap_or("");
    let token = parts.next().unwrap_or("");
    let ts_text = parts.next().unwrap_or("");
    // As the module reads it: `ts.trim().parse().unwrap_or(0)`; or raw bits.
    let ts = if ts_text.is_empty() {
        ts_raw as i64
    } else {
        ts_text.trim().parse().unwrap_or(0)
    };
    let (now, ttl) = (now_raw as i64, ttl_raw as i64);

    let good = make_token(remote, secret, ts);
    assert_eq!(good.len(), 32);
    assert!(good
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

    let expired = ts != 0 && i128::from(now) - i128::from(ts) > i128::from(ttl);
    let want = |t: &str| {
        if t.len() != 32 {
            Err(TokenError::Malformed)
        } else if expired {
            Err(TokenError::Expired)
        } else if !good.eq_ignore_ascii_case(t) {
            Err(TokenError::Mismatch)
        } else {
            Ok(())
        }
    };
    assert_eq!(
        check_token(remote, secret, token, ts, now, ttl),
        want(token)
    );
    assert_eq!(
        check_token(remote, secret, &good, ts, now, ttl),
        want(&good)
    );
    let upper = good.to_ascii_uppercase();
    assert_eq!(
        check_token(remote, secret, &upper, ts, now, ttl),
        want(&upper)
    );
});
