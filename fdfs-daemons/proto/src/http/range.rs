//! Byte ranges the module computes itself: FLV pseudo-streaming (`start`/`end` query
//! arguments) and counting the parts of a `Range` header (`http.multi_range.enabled`).
//! Ordinary single and multipart ranges are served by nginx's range filter.

/// The 13 bytes sent in front of an FLV slice that does not start at 0: signature, version
/// 1, audio+video, header size 9, previous tag size 0.
pub const FLV_HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0];

fn whole_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What an FLV request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlvSlice {
    /// No usable `start`: serve the whole file as usual.
    Whole,
    /// Serve bytes `start..=end` (inclusive), preceded by [`FLV_HEADER`] when `start > 0`.
    Slice { start: u64, end: u64 },
    /// `start`/`end` name no bytes of the file: 400, as upstream.
    Invalid,
}

/// `start` (and optional `end`, exclusive) against a file of `size` bytes.
pub fn flv_slice(start: Option<&str>, end: Option<&str>, size: u64) -> FlvSlice {
    let Some(start) = start.and_then(whole_number) else {
        return FlvSlice::Whole;
    };
    let last = match end.and_then(whole_number) {
        Some(e) if e > 0 => (e - 1).min(size.saturating_sub(1)),
        _ => size.saturating_sub(1),
    };
    if start >= size || start > last {
        return FlvSlice::Invalid;
    }
    FlvSlice::Slice { start, end: last }
}

impl FlvSlice {
    /// Content-Length of the response for this slice.
    pub fn content_length(&self, size: u64) -> u64 {
        match *self {
            FlvSlice::Whole | FlvSlice::Invalid => size,
            FlvSlice::Slice { start, end } => {
                end - start
                    + 1
                    + if start > 0 {
                        FLV_HEADER.len() as u64
                    } else {
                        0
                    }
            }
        }
    }
}

/// Number of comma-separated ranges in a `Range: bytes=...` header (0 if not `bytes=`).
pub fn range_count(header: &str) -> usize {
    let h = header.trim_start();
    let Some(rest) = h
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("bytes="))
        .map(|_| &h[6..])
    else {
        return 0;
    };
    rest.split(',').filter(|p| !p.trim().is_empty()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flv_slices() {
        assert_eq!(flv_slice(None, None, 100), FlvSlice::Whole);
        assert_eq!(flv_slice(Some("x"), None, 100), FlvSlice::Whole);
        assert_eq!(
            flv_slice(Some("10"), None, 100),
            FlvSlice::Slice { start: 10, end: 99 }
        );
        assert_eq!(
            flv_slice(Some("10"), Some("20"), 100),
            FlvSlice::Slice { start: 10, end: 19 }
        );
        assert_eq!(
            flv_slice(Some("10"), Some("500"), 100),
            FlvSlice::Slice { start: 10, end: 99 }
        );
        assert_eq!(flv_slice(Some("100"), None, 100), FlvSlice::Invalid);
        assert_eq!(flv_slice(Some("50"), Some("20"), 100), FlvSlice::Invalid);
        let s = flv_slice(Some("10"), Some("20"), 100);
        assert_eq!(s.content_length(100), 10 + 13);
        assert_eq!(flv_slice(Some("0"), None, 100).content_length(100), 100);
    }

    #[test]
    fn counts_ranges() {
        assert_eq!(range_count("bytes=0-1"), 1);
        assert_eq!(range_count("bytes=0-1, 4-5,-3"), 3);
        assert_eq!(range_count("items=0-1"), 0);
    }
}
