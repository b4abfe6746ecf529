//! Why a request is answered with an errno instead of a body.

use std::fmt;

use fdfs_proto::{errno, ProtoError};

/// An errno for the reply header plus a reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub errno: u8,
    pub reason: String,
}

impl Refusal {
    pub fn new(errno: u8, reason: impl Into<String>) -> Self {
        Refusal {
            errno,
            reason: reason.into(),
        }
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        Refusal::new(errno::EINVAL, reason)
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        Refusal::new(errno::ENOENT, reason)
    }
}

impl From<ProtoError> for Refusal {
    fn from(e: ProtoError) -> Self {
        Refusal::new(e.errno(), e.to_string())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (errno {} {})",
            self.reason,
            self.errno,
            errno::describe(self.errno)
        )
    }
}

/// What a command handler produces: a reply body, or an errno.
pub type Reply = Result<Vec<u8>, Refusal>;
