//! The system calls of this crate that have no safe wrapper, each behind a safe
//! function: `fork` for [`daemonize`](crate::daemon::daemonize). Everything else goes
//! through `rustix`. The only module of the crate where `unsafe` is allowed.

#![allow(unsafe_code)]

use std::io;

/// Forks; the parent exits at once with status 0 (`_exit`: no exit handlers, no
/// buffers flushed twice) and the child returns.
///
/// Only for a process that is still single-threaded (before the tokio runtime or any
/// other thread starts): the child of a multi-threaded process may only make
/// async-signal-safe calls.
pub(crate) fn fork_and_leave_parent() -> io::Result<()> {
    // SAFETY: the process is single-threaded (this function's contract), so the child
    // is a whole copy of it and may do anything; the parent only calls `_exit`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(()),
        // SAFETY: `_exit` ends the process at once; nothing of ours runs after it.
        _ => unsafe { libc::_exit(0) },
    }
}
