//! The Linux errno values FastDFS puts in the status byte of a reply.

pub const OK: u8 = 0;
pub const EPERM: u8 = 1;
pub const ENOENT: u8 = 2;
pub const EIO: u8 = 5;
pub const EAGAIN: u8 = 11;
pub const ENOMEM: u8 = 12;
pub const EACCES: u8 = 13;
pub const EFAULT: u8 = 14;
pub const EBUSY: u8 = 16;
pub const EEXIST: u8 = 17;
pub const ENOTDIR: u8 = 20;
pub const EISDIR: u8 = 21;
pub const EINVAL: u8 = 22;
pub const ENOSPC: u8 = 28;
pub const ENAMETOOLONG: u8 = 36;
pub const EOPNOTSUPP: u8 = 95;
pub const ECONNREFUSED: u8 = 111;
pub const ETIMEDOUT: u8 = 110;
pub const EALREADY: u8 = 114;
pub const ENONET: u8 = 64;

/// A short readable text for an errno, for CLI messages and logs.
pub fn describe(code: u8) -> &'static str {
    match code {
        OK => "success",
        EPERM => "operation not permitted",
        ENOENT => "no such file, group or server",
        EIO => "input/output error",
        EAGAIN => "try again later",
        ENOMEM => "out of memory",
        EACCES => "permission denied",
        EFAULT => "bad status",
        EBUSY => "busy",
        EEXIST => "already exists",
        ENOTDIR => "not a directory",
        EISDIR => "is a directory",
        EINVAL => "invalid argument",
        ENONET => "server not active",
        ENOSPC => "no space left on device",
        ENAMETOOLONG => "name too long",
        EOPNOTSUPP => "operation not supported",
        ETIMEDOUT => "timed out",
        ECONNREFUSED => "connection refused",
        EALREADY => "already in progress",
        _ => "unknown error",
    }
}

/// The errno's symbol ("ENOENT"; "OK" for 0), for metric labels; `None` for codes
/// FastDFS does not name.
pub fn symbol(code: u8) -> Option<&'static str> {
    Some(match code {
        OK => "OK",
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        EIO => "EIO",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        ENOTDIR => "ENOTDIR",
        EISDIR => "EISDIR",
        EINVAL => "EINVAL",
        ENONET => "ENONET",
        ENOSPC => "ENOSPC",
        ENAMETOOLONG => "ENAMETOOLONG",
        EOPNOTSUPP => "EOPNOTSUPP",
        ETIMEDOUT => "ETIMEDOUT",
        ECONNREFUSED => "ECONNREFUSED",
        EALREADY => "EALREADY",
        _ => return None,
    })
}

/// Maps an I/O error to the errno FastDFS would send for it.
pub fn from_io(err: &std::io::Error) -> u8 {
    match err.raw_os_error() {
        Some(code) if (1..=255).contains(&code) => code as u8,
        _ => match err.kind() {
            std::io::ErrorKind::NotFound => ENOENT,
            std::io::ErrorKind::AlreadyExists => EEXIST,
            std::io::ErrorKind::PermissionDenied => EACCES,
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => EINVAL,
            std::io::ErrorKind::TimedOut => ETIMEDOUT,
            _ => EIO,
        },
    }
}
