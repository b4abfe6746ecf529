//! FastDFS client library (wire-compatible with FastDFS 6.16.1) and the `fdfs_*` tools.
//!
//! * [`ClientConfig`] reads `client.conf`.
//! * [`TrackerClient`] asks the trackers (round robin, failover on connection errors).
//! * [`StorageClient`] is one session with a storage: uploads and downloads stream
//!   the content in bounded pieces, so memory does not grow with the file size.
//! * [`Client`] combines them the way the C client does.
//! * [`cli`], [`tools`], [`format`](mod@format) and [`report`] make up the command-line tools.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod config;
pub mod format;
pub mod report;
pub mod storage;
pub mod tools;
pub mod tracker;

pub use client::{Client, FileDetails};
pub use config::ClientConfig;
pub use fdfs_runtime::Error;
pub use storage::StorageClient;
pub use tracker::TrackerClient;

/// A local argument the protocol cannot carry (bad file id, ext, prefix, group):
/// reported as EINVAL, without claiming a server sent something malformed.
pub(crate) fn invalid_input(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("invalid {what}: {detail}"),
    ))
}

/// Splits and checks a file id, as [`fdfs_proto::fileid::split_file_id`], with a local
/// EINVAL error.
pub(crate) fn split_file_id(file_id: &str) -> Result<(&str, &str), Error> {
    fdfs_proto::fileid::split_file_id(file_id).map_err(|e| invalid_input("file id", e))
}
