//! What the module writes to nginx's error log while answering: each message in one
//! place, with its level.

use std::fmt;
use std::net::Ipv4Addr;

use fdfs_proto::http::UrlError;
use fdfs_proto::token::TokenError;

/// nginx log level of a [`Note`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Warn,
    Info,
}

/// A log line about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note<'a> {
    /// The URL names no file (answered 400).
    BadUrl { uri: &'a str, error: UrlError },
    /// The anti-steal token was refused.
    TokenRefused { remote: &'a str, error: TokenError },
    /// The first storage listing has not come in: the file is not fetched (404).
    NoListing { file_id: String },
    /// The file's source is not a storage of its group as the trackers list it. `loud`:
    /// the first such report of the group within the interval.
    SourceUnlisted {
        source: Ipv4Addr,
        file_id: String,
        group: &'a str,
        loud: bool,
    },
    /// No storage to fetch the file from (404). `loud` as above.
    NoCandidate { file_id: String, loud: bool },
    /// The proxy location moves on to the next storage after one failed.
    TryingStorage { ip: Ipv4Addr, uri: &'a str },
}

/// The level of a report that is a warning the first time in an interval and
/// information after that (so a flood of bad requests does not flood the log).
fn warn_first(loud: bool) -> Level {
    if loud {
        Level::Warn
    } else {
        Level::Info
    }
}

impl Note<'_> {
    pub fn level(&self) -> Level {
        match self {
            Note::BadUrl { .. } | Note::TokenRefused { .. } | Note::NoListing { .. } => Level::Info,
            Note::SourceUnlisted { loud, .. } | Note::NoCandidate { loud, .. } => warn_first(*loud),
            Note::TryingStorage { .. } => Level::Warn,
        }
    }
}

impl fmt::Display for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::BadUrl { uri, error } => write!(f, "fastdfs: {uri}: {error}"),
            Note::TokenRefused { remote, error } => {
                write!(f, "fastdfs: token of {remote} refused: {error:?}")
            }
            Note::NoListing { file_id } => write!(
                f,
                "fastdfs: no storage list from the trackers yet: {file_id} not fetched"
            ),
            Note::SourceUnlisted {
                source,
                file_id,
                group,
                ..
            } => write!(
                f,
                "fastdfs: source {source} of {file_id} is not a storage of {group} as the \
                 trackers list it: not asked"
            ),
            Note::NoCandidate { file_id, .. } => {
                write!(f, "fastdfs: no storage to fetch {file_id} from")
            }
            Note::TryingStorage { ip, uri } => write!(f, "fastdfs: trying storage {ip} for {uri}"),
        }
    }
}
