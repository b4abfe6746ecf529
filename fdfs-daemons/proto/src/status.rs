//! Storage server statuses as the tracker keeps and reports them.

pub const INIT: u8 = 0;
pub const WAIT_SYNC: u8 = 1;
pub const SYNCING: u8 = 2;
pub const IP_CHANGED: u8 = 3;
pub const DELETED: u8 = 4;
pub const OFFLINE: u8 = 5;
pub const ONLINE: u8 = 6;
pub const ACTIVE: u8 = 7;
pub const RECOVERY: u8 = 9;
pub const NONE: u8 = 99;

/// The upstream name of a status, as `fdfs_monitor` prints it.
pub fn name(status: u8) -> &'static str {
    match status {
        INIT => "INIT",
        WAIT_SYNC => "WAIT_SYNC",
        SYNCING => "SYNCING",
        IP_CHANGED => "IP_CHANGED",
        DELETED => "DELETED",
        OFFLINE => "OFFLINE",
        ONLINE => "ONLINE",
        ACTIVE => "ACTIVE",
        RECOVERY => "RECOVERY",
        NONE => "NONE",
        _ => "UNKNOWN",
    }
}
