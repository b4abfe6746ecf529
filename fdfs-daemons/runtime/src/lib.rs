//! Run-time pieces shared by `fdfs_trackerd`, `fdfs_storaged` and the client tools.

// No unsafe code but in `sys`, the calls without a safe wrapper.
#![deny(unsafe_code)]

pub mod conn;
pub mod daemon;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod server;
mod sys;

pub use conn::{Connection, Error};

/// Seconds since the unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
