//! FLV pseudo-streaming (`start`/`end` query arguments against a file size) and counting
//! the parts of a `Range` header.
#![no_main]

use fdfs_proto::http::range::{flv_slice, range_count, FlvSlice, FLV_HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (size, rest) = fdfs_fuzz::take_u64(data);
    // A file size is an off_t: at most i64::MAX.
    let size = size & (i64::MAX as u64);
    let text = fdfs_fuzz::lossy(rest);
    let mut parts = text.splitn(3, '\n');
    let start = parts.next();
    let end = parts.next();
    let header = parts.next().unwrap_or("");

    for (s, e) in [(start, end), (start, None), (end, start)] {
        match flv_slice(s, e, size) {
            FlvSlice::Slice { start, end } => {
                assert!(start <= end && end < size);
                let len = FlvSlice::Slice { start, end }.content_length(size);
                let header_len = if start > 0 {
                    FLV_HEADER.len() as u64
                } else {
                    0
                };
                assert_eq!(len, end - start + 1 + header_len);
                assert!(len <= size + FLV_HEADER.len() as u64);
            }
            whole_or_invalid => assert_eq!(whole_or_invalid.content_length(size), size),
        }
    }
    let n = range_count(header);
    assert!(n <= header.matches(',').count() + 1);
    if n > 0 {
        assert!(header
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("bytes="));
    }
});
