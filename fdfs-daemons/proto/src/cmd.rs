//! Command codes carried in byte 8 of every header.

// Tracker ↔ tracker.
pub const TRACKER_JOIN_LEADER: u8 = 58;
pub const TRACKER_GET_SYS_FILES_START: u8 = 61;
pub const TRACKER_GET_SYS_FILES_END: u8 = 62;
pub const TRACKER_GET_ONE_SYS_FILE: u8 = 63;
pub const TRACKER_GET_STATUS: u8 = 64;
pub const TRACKER_PING_LEADER: u8 = 65;
pub const TRACKER_NOTIFY_NEXT_LEADER: u8 = 66;
pub const TRACKER_COMMIT_NEXT_LEADER: u8 = 67;
pub const TRACKER_NOTIFY_RESELECT_LEADER: u8 = 68;

// Storage → tracker.
pub const STORAGE_CHANGE_STATUS: u8 = 59;
pub const STORAGE_GET_MY_IP: u8 = 60;
pub const STORAGE_FETCH_STORAGE_IDS: u8 = 69;
pub const STORAGE_GET_SERVER_ID: u8 = 70;
pub const STORAGE_GET_STATUS: u8 = 71;
pub const STORAGE_FETCH_TRUNK_FID: u8 = 72;
pub const STORAGE_REPORT_TRUNK_FID: u8 = 73;
pub const STORAGE_REPORT_TRUNK_FREE: u8 = 74;
pub const STORAGE_PARAMETER_REQ: u8 = 75;
pub const STORAGE_REPORT_STATUS: u8 = 76;
pub const STORAGE_CHANGELOG_REQ: u8 = 77;
pub const STORAGE_REPORT_IP_CHANGED: u8 = 78;
pub const STORAGE_SYNC_DEST_QUERY: u8 = 79;
pub const STORAGE_JOIN: u8 = 81;
pub const STORAGE_BEAT: u8 = 83;
pub const STORAGE_REPORT_DISK_USAGE: u8 = 84;
pub const STORAGE_REPLICA_CHG: u8 = 85;
pub const STORAGE_SYNC_SRC_REQ: u8 = 86;
pub const STORAGE_SYNC_DEST_REQ: u8 = 87;
pub const STORAGE_SYNC_NOTIFY: u8 = 88;
pub const STORAGE_SYNC_REPORT: u8 = 89;
pub const STORAGE_GET_GROUP_NAME: u8 = 109;

// Admin / client → tracker.
pub const SERVER_LIST_ONE_GROUP: u8 = 90;
pub const SERVER_LIST_ALL_GROUPS: u8 = 91;
pub const SERVER_LIST_STORAGE: u8 = 92;
pub const SERVER_DELETE_STORAGE: u8 = 93;
pub const SERVER_SET_TRUNK_SERVER: u8 = 94;
pub const SERVER_GET_LEADER: u8 = 95;
pub const SERVER_TRACKER_CLUSTER_STAT: u8 = 96;
pub const SERVER_STORAGE_CLUSTER_STAT: u8 = 97;
pub const SERVER_STORAGE_VOLUMN_STAT: u8 = 98;
pub const SERVER_DELETE_GROUP: u8 = 108;
pub const QUERY_STORE_WITHOUT_GROUP_ONE: u8 = 101;
pub const QUERY_FETCH_ONE: u8 = 102;
pub const QUERY_UPDATE: u8 = 103;
pub const QUERY_STORE_WITH_GROUP_ONE: u8 = 104;
pub const QUERY_FETCH_ALL: u8 = 105;
pub const QUERY_STORE_WITHOUT_GROUP_ALL: u8 = 106;
pub const QUERY_STORE_WITH_GROUP_ALL: u8 = 107;

// Client / peer → storage.
pub const STORAGE_REPORT_SERVER_ID: u8 = 9;
pub const UPLOAD_FILE: u8 = 11;
pub const DELETE_FILE: u8 = 12;
pub const SET_METADATA: u8 = 13;
pub const DOWNLOAD_FILE: u8 = 14;
pub const GET_METADATA: u8 = 15;
pub const SYNC_CREATE_FILE: u8 = 16;
pub const SYNC_DELETE_FILE: u8 = 17;
pub const SYNC_UPDATE_FILE: u8 = 18;
pub const SYNC_CREATE_LINK: u8 = 19;
pub const CREATE_LINK: u8 = 20;
pub const UPLOAD_SLAVE_FILE: u8 = 21;
pub const QUERY_FILE_INFO: u8 = 22;
pub const UPLOAD_APPENDER_FILE: u8 = 23;
pub const APPEND_FILE: u8 = 24;
pub const SYNC_APPEND_FILE: u8 = 25;
pub const FETCH_ONE_PATH_BINLOG: u8 = 26;
/// Trunk files: a storage asks the trunk server of its group for a slot.
pub const TRUNK_ALLOC_SPACE: u8 = 27;
/// Trunk files: the slot was written (status 0) or not (an errno).
pub const TRUNK_ALLOC_CONFIRM: u8 = 28;
/// Trunk files: a slot is free again.
pub const TRUNK_FREE_SPACE: u8 = 29;
/// Trunk files: the trunk server pushes its trunk binlog lines to a peer.
pub const TRUNK_SYNC_BINLOG: u8 = 30;
/// Trunk files: the leader tracker asks a storage how long its trunk binlog is.
pub const TRUNK_GET_BINLOG_SIZE: u8 = 31;
/// Trunk files: the leader tracker tells a new trunk server to forget its peers' marks.
pub const TRUNK_DELETE_BINLOG_MARKS: u8 = 32;
/// Trunk files: the trunk server tells a peer to truncate its trunk binlog.
pub const TRUNK_TRUNCATE_BINLOG_FILE: u8 = 33;
pub const MODIFY_FILE: u8 = 34;
pub const SYNC_MODIFY_FILE: u8 = 35;
pub const TRUNCATE_FILE: u8 = 36;
pub const SYNC_TRUNCATE_FILE: u8 = 37;
pub const REGENERATE_APPENDER_FILENAME: u8 = 38;
pub const SYNC_RENAME_FILE: u8 = 40;

// Any server.
pub const QUIT: u8 = 82;
pub const RESP: u8 = 100;
pub const ACTIVE_TEST: u8 = 111;

// Extension of this implementation (not in upstream FastDFS): the mutual proof of the
// shared `cluster_secret` between trackers and storages; see `cluster_auth`.
pub const CLUSTER_AUTH: u8 = 200;
