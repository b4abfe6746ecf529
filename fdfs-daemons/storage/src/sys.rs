//! The system calls of this crate that have no safe wrapper, each behind a safe
//! function: `sync_file_range(2)` (not in `rustix`). Everything else goes through
//! `rustix`. The only module of the crate where `unsafe` is allowed.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Starts the writeback of all of `file`'s dirty pages without waiting for it
/// (`sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`): a later `sync_data` then has
/// less to wait for, and several files started together are written together.
pub(crate) fn start_writeback(file: impl AsFd) -> io::Result<()> {
    let fd = file.as_fd();
    // SAFETY: `fd` is borrowed, so it stays open for the whole call; the call takes
    // plain integers and touches no memory of ours.
    let rc = unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
