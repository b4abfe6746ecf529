//! How a file that is found is sent: which bytes, with which headers. Ordinary byte ranges
//! are left to nginx's range filter; FLV pseudo-streaming (`start`/`end` arguments) is the
//! module's own.

use std::ops::Range;

use fdfs_proto::http::range::{flv_slice, FlvSlice};

/// What of the file the body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The whole file. `ranges`: nginx's range filter may answer a `Range` header.
    Whole { ranges: bool },
    /// FLV pseudo-streaming: the `start` and `end` query arguments, applied once the
    /// file's size is known (always 200, never a range).
    Flv {
        start: Option<String>,
        end: Option<String>,
    },
}

/// How to answer with a file, decided before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFile {
    /// `Last-Modified`; `None`: the file's own mtime.
    pub last_modified: Option<i64>,
    /// `None`: nginx's `types` by the URI's extension.
    pub content_type: Option<String>,
    /// `Content-Disposition`, from the `filename` argument.
    pub disposition: Option<String>,
    pub body: Body,
    /// Whether nginx's open file cache may hold the descriptor. Not for appender files:
    /// they grow and shrink in place, and a cached descriptor comes with the size it had
    /// when it was opened (for up to `open_file_cache_valid`).
    pub cached: bool,
}

/// The 200 response for an opened file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub content_length: i64,
    pub last_modified: i64,
    /// Let nginx's range filter answer a `Range` header.
    pub allow_ranges: bool,
    /// [`fdfs_proto::http::range::FLV_HEADER`] goes first.
    pub flv_header: bool,
    /// The bytes of the file sent.
    pub bytes: Range<i64>,
}

/// The `start`/`end` arguments name no bytes of the file: 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidFlvSlice;

impl SendFile {
    /// The response for the file once open: `size` and `mtime` as nginx found them.
    pub fn reply(&self, size: i64, mtime: i64) -> Result<Reply, InvalidFlvSlice> {
        let mut reply = Reply {
            content_length: size,
            last_modified: self.last_modified.unwrap_or(mtime),
            allow_ranges: false,
            flv_header: false,
            bytes: 0..size,
        };
        match &self.body {
            Body::Whole { ranges } => reply.allow_ranges = *ranges,
            Body::Flv { start, end } => {
                match flv_slice(start.as_deref(), end.as_deref(), size as u64) {
                    FlvSlice::Whole => {}
                    FlvSlice::Invalid => return Err(InvalidFlvSlice),
                    slice @ FlvSlice::Slice { start, end } => {
                        reply.content_length = slice.content_length(size as u64) as i64;
                        reply.flv_header = start > 0;
                        reply.bytes = start as i64..end as i64 + 1;
                    }
                }
            }
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdfs_proto::http::range::FLV_HEADER;

    fn send(body: Body, last_modified: Option<i64>) -> SendFile {
        SendFile {
            last_modified,
            content_type: None,
            disposition: None,
            body,
            cached: true,
        }
    }

    fn flv(start: Option<&str>, end: Option<&str>) -> SendFile {
        let body = Body::Flv {
            start: start.map(str::to_string),
            end: end.map(str::to_string),
        };
        send(body, None)
    }

    #[test]
    fn whole_file() {
        let r = send(Body::Whole { ranges: true }, Some(7))
            .reply(100, 9)
            .unwrap();
        assert_eq!(
            r,
            Reply {
                content_length: 100,
                last_modified: 7,
                allow_ranges: true,
                flv_header: false,
                bytes: 0..100,
            }
        );
        let r = send(Body::Whole { ranges: false }, None)
            .reply(0, 9)
            .unwrap();
        assert_eq!((r.allow_ranges, r.last_modified, r.bytes), (false, 9, 0..0));
    }

    #[test]
    fn flv_start_and_end() {
        // no usable start: the whole file, no range filter, the file's mtime
        let r = flv(None, None).reply(100, 9).unwrap();
        assert_eq!(
            (
                r.content_length,
                r.bytes,
                r.flv_header,
                r.allow_ranges,
                r.last_modified
            ),
            (100, 0..100, false, false, 9)
        );
        assert_eq!(flv(Some("x"), None).reply(100, 9).unwrap().bytes, 0..100);
        // from 10 to the end, after the FLV header
        let r = flv(Some("10"), None).reply(100, 9).unwrap();
        assert_eq!(
            (r.content_length, r.bytes, r.flv_header),
            (90 + FLV_HEADER.len() as i64, 10..100, true)
        );
        // end is exclusive; start 0 sends no header
        let r = flv(Some("0"), Some("50")).reply(100, 9).unwrap();
        assert_eq!(
            (r.content_length, r.bytes, r.flv_header),
            (50, 0..50, false)
        );
        assert_eq!(flv(Some("100"), None).reply(100, 9), Err(InvalidFlvSlice));
        assert_eq!(
            flv(Some("60"), Some("50")).reply(100, 9),
            Err(InvalidFlvSlice)
        );
    }
}
