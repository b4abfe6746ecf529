//! What `ngx_fastdfs_module` answers for a request, decided without nginx: a local file
//! (whole, or from an FLV `start` offset), the anti-steal token's verdict, a 302 or the
//! proxy location for a file that is not here yet, or a bare status.
//!
//! The module reads the request into an [`Incoming`] and acts on the plain values
//! returned here ([`decide`], then [`on_miss`] for a file it does not have). The rules
//! themselves (URL, token, ranges, forwarding) are `fdfs_proto::http`'s; this crate
//! applies them in the module's order. It is a crate of its own so that `cargo test`
//! reaches it: the module is a cdylib whose nginx symbols resolve only inside nginx.

mod forward;
pub mod metrics;
mod note;
mod send;

use std::borrow::Cow;

use fdfs_proto::fileid::FileKind;
use fdfs_proto::http::disposition::content_disposition;
use fdfs_proto::http::range::range_count;
use fdfs_proto::http::{parse_query, FileRequest, ModConf, Query, UrlError};
use fdfs_proto::token::{check_token, TokenError};
use fdfs_proto::trunk::{SlotHeader, SLOT_HEADER_LEN};

pub use forward::{on_miss, Arrival, Cluster, Forward, ForwardState, Lookup, Next};
pub use metrics::{
    holds_counters, Counters, Finished, RangeKind, Served, TokenCheck, HEADER_WORDS,
};
pub use note::{Level, Note};
pub use send::{Body, InvalidFlvSlice, Reply, SendFile};

/// What the module reads from a request (borrowed from it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Incoming<'a> {
    /// The decoded path (`r->uri`).
    pub uri: &'a [u8],
    /// The raw query string (`r->args`).
    pub args: &'a [u8],
    /// The `Range` header, when present and UTF-8.
    pub range: Option<&'a str>,
    /// The value of the header `anti_steal_bypass_header_name` names, when configured
    /// and present.
    pub bypass: Option<&'a str>,
}

/// A request answered with a status alone (nginx's own page).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal<'a> {
    pub status: u16,
    /// Logged first.
    pub note: Option<Note<'a>>,
    /// The anti-steal token's verdict, when it was checked.
    pub token: Option<TokenCheck>,
}

impl Refusal<'_> {
    fn bare(status: u16) -> Self {
        Refusal {
            status,
            note: None,
            token: None,
        }
    }
}

/// A request that names a file, and what to do about it.
#[derive(Debug)]
pub struct Found<'a> {
    pub file: FileRequest<'a>,
    pub query: Query,
    /// Logged first.
    pub note: Option<Note<'a>>,
    /// The anti-steal token's verdict, when it was checked.
    pub token: Option<TokenCheck>,
    pub action: Action<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send the file at `path` (its pieces joined as they are). When it is not there (404
    /// before any header is sent), ask [`on_miss`].
    Local { path: [&'a [u8]; 3], send: SendFile },
    /// Send a file a C storage packed into a trunk file: the slot of the trunk file at
    /// `path` (its pieces joined), if it still holds the file ([`TrunkSlot::check`]); a
    /// freed or reused slot is a miss, as a missing file is.
    Slot {
        path: [&'a [u8]; 3],
        trunk_file: String,
        slot: TrunkSlot,
        send: SendFile,
    },
    /// The token was refused and `token_check_fail` names a file: answer with that file
    /// (a 404 for it is the answer).
    TokenFailFile { path: &'a [u8], send: SendFile },
    /// A file of a group this node does not serve: ask [`on_miss`].
    Elsewhere,
}

const BAD_REQUEST: u16 = 400;
const NOT_FOUND: u16 = 404;
const RANGE_NOT_SATISFIABLE: u16 = 416;

/// Decides what to answer for `req` at unix time `now`, before looking at the disk.
pub fn decide<'a>(
    conf: &'a ModConf,
    req: &Incoming<'a>,
    now: i64,
) -> Result<Found<'a>, Refusal<'a>> {
    // A path that is not UTF-8 names no file.
    let Ok(uri) = std::str::from_utf8(req.uri) else {
        return Err(Refusal::bare(BAD_REQUEST));
    };
    let args = match std::str::from_utf8(req.args) {
        Ok(a) => Cow::Borrowed(a),
        Err(_) => String::from_utf8_lossy(req.args),
    };
    let file = match FileRequest::parse(uri, conf) {
        Ok(f) => f,
        // a metadata file: served neither from here nor from another storage
        Err(UrlError::NotDataFile) => return Err(Refusal::bare(NOT_FOUND)),
        Err(error) => {
            let note = Some(Note::BadUrl { uri, error });
            return Err(Refusal {
                status: BAD_REQUEST,
                note,
                token: None,
            });
        }
    };
    let query = parse_query(&args);

    let bypass = conf
        .bypass_header
        .as_ref()
        .is_some_and(|(_, value)| req.bypass == Some(value.as_str()));
    let checks_token = conf.http.check_token && !conf.http.disabled;
    let mut token_check = (checks_token && bypass).then_some(TokenCheck::Bypass);
    if checks_token && !bypass {
        let (Some(token), Some(ts)) = (query.get("token"), query.get("ts")) else {
            return Err(Refusal {
                token: Some(TokenCheck::Missing),
                ..Refusal::bare(BAD_REQUEST)
            });
        };
        let ts: i64 = ts.trim().parse().unwrap_or(0);
        let secret = &conf.http.secret_key;
        token_check = Some(TokenCheck::Ok);
        if let Err(error) = check_token(file.remote, secret, token, ts, now, conf.http.token_ttl) {
            let token = Some(match error {
                TokenError::Expired => TokenCheck::Expired,
                TokenError::Malformed | TokenError::Mismatch => TokenCheck::Bad,
            });
            let note = Some(Note::TokenRefused {
                remote: file.remote,
                error,
            });
            let Some(path) = &conf.http.token_check_fail else {
                return Err(Refusal {
                    status: BAD_REQUEST,
                    note,
                    token,
                });
            };
            let send = SendFile {
                last_modified: None,
                content_type: Some(
                    conf.http
                        .content_type_of(&path.to_string_lossy())
                        .to_string(),
                ),
                disposition: None,
                body: Body::Whole { ranges: false },
                cached: true,
            };
            let path = path.as_os_str().as_encoded_bytes();
            return Ok(Found {
                file,
                query,
                note,
                token,
                action: Action::TokenFailFile { path, send },
            });
        }
    }

    let Some(path) = file.local_pieces() else {
        return Ok(Found {
            file,
            query,
            note: None,
            token: token_check,
            action: Action::Elsewhere,
        });
    };
    if req
        .range
        .is_some_and(|h| !conf.http.multi_range_enabled && range_count(h) > 1)
    {
        return Err(Refusal {
            token: token_check,
            ..Refusal::bare(RANGE_NOT_SATISFIABLE)
        });
    }
    let is_flv = conf.flv_support
        && req.range.is_none()
        && file
            .remote
            .rsplit_once('.')
            .is_some_and(|(_, e)| e == conf.flv_extension);
    let (last_modified, body) = if is_flv {
        // The slice is resolved once the size is known; the file's own mtime.
        let body = Body::Flv {
            start: query.get("start").map(str::to_string),
            end: query.get("end").map(str::to_string),
        };
        (None, body)
    } else {
        // Upstream's Last-Modified for normal files: the creation time in the file id,
        // the same on every storage of the group (so ETags agree too).
        let created = i64::from(file.info.timestamp);
        let last_modified = (file.info.kind == FileKind::Normal && created != 0).then_some(created);
        (last_modified, Body::Whole { ranges: true })
    };
    let send = SendFile {
        last_modified,
        content_type: None,
        disposition: query.get("filename").and_then(content_disposition),
        body,
        cached: file.info.kind != FileKind::Appender,
    };
    let action = match trunk_slot(&file) {
        Some(Ok((trunk_file, slot))) => {
            // The trunk file is in the directory the name gives: `XX/YY/`.
            let dir = &path[2][..6];
            Action::Slot {
                path: [path[0], path[1], dir],
                trunk_file,
                slot,
                send,
            }
        }
        // A trunk file name whose location does not decode names nothing.
        Some(Err(())) => {
            return Err(Refusal {
                token: token_check,
                ..Refusal::bare(NOT_FOUND)
            })
        }
        None => Action::Local { path, send },
    };
    Ok(Found {
        file,
        query,
        note: None,
        token: token_check,
        action,
    })
}

/// Where a trunk-stored file is, and what its slot must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrunkSlot {
    /// The slot header's offset in the trunk file.
    pub offset: u64,
    pub expected: SlotHeader,
}

impl TrunkSlot {
    /// Checks the slot header read from the trunk file: `Some((start, size, mtime))` of
    /// the content when the slot holds the file, `None` when it was freed or reused.
    pub fn check(&self, header: &[u8; SLOT_HEADER_LEN]) -> Option<(i64, i64, i64)> {
        let on_disk = SlotHeader::decode(header);
        on_disk.holds(&self.expected).then(|| {
            (
                (self.offset + SLOT_HEADER_LEN as u64) as i64,
                i64::from(on_disk.file_size),
                i64::from(on_disk.mtime),
            )
        })
    }
}

/// For a trunk-stored file: the trunk file's name and the slot.
fn trunk_slot(file: &FileRequest<'_>) -> Option<Result<(String, TrunkSlot), ()>> {
    if file.info.kind != FileKind::Trunk {
        return None;
    }
    let name = fdfs_proto::fileid::RemoteName::parse(file.remote).ok()?;
    let location = fdfs_proto::trunk::location_of(&name)?;
    Some((|| {
        let location = location.map_err(|_| ())?;
        let expected = SlotHeader::expected(&name).map_err(|_| ())?;
        Ok((
            location.trunk_file_name(),
            TrunkSlot {
                offset: u64::from(location.offset),
                expected,
            },
        ))
    })())
}

#[cfg(test)]
mod tests;
