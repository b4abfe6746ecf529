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

/// The command's name in metrics and logs: the constant's name in lower case.
pub fn name(code: u8) -> &'static str {
    match code {
        TRACKER_JOIN_LEADER => "tracker_join_leader",
        TRACKER_GET_SYS_FILES_START => "tracker_get_sys_files_start",
        TRACKER_GET_SYS_FILES_END => "tracker_get_sys_files_end",
        TRACKER_GET_ONE_SYS_FILE => "tracker_get_one_sys_file",
        TRACKER_GET_STATUS => "tracker_get_status",
        TRACKER_PING_LEADER => "tracker_ping_leader",
        TRACKER_NOTIFY_NEXT_LEADER => "tracker_notify_next_leader",
        TRACKER_COMMIT_NEXT_LEADER => "tracker_commit_next_leader",
        TRACKER_NOTIFY_RESELECT_LEADER => "tracker_notify_reselect_leader",
        STORAGE_CHANGE_STATUS => "storage_change_status",
        STORAGE_GET_MY_IP => "storage_get_my_ip",
        STORAGE_FETCH_STORAGE_IDS => "storage_fetch_storage_ids",
        STORAGE_GET_SERVER_ID => "storage_get_server_id",
        STORAGE_GET_STATUS => "storage_get_status",
        STORAGE_FETCH_TRUNK_FID => "storage_fetch_trunk_fid",
        STORAGE_REPORT_TRUNK_FID => "storage_report_trunk_fid",
        STORAGE_REPORT_TRUNK_FREE => "storage_report_trunk_free",
        STORAGE_PARAMETER_REQ => "storage_parameter_req",
        STORAGE_REPORT_STATUS => "storage_report_status",
        STORAGE_CHANGELOG_REQ => "storage_changelog_req",
        STORAGE_REPORT_IP_CHANGED => "storage_report_ip_changed",
        STORAGE_SYNC_DEST_QUERY => "storage_sync_dest_query",
        STORAGE_JOIN => "storage_join",
        STORAGE_BEAT => "storage_beat",
        STORAGE_REPORT_DISK_USAGE => "storage_report_disk_usage",
        STORAGE_REPLICA_CHG => "storage_replica_chg",
        STORAGE_SYNC_SRC_REQ => "storage_sync_src_req",
        STORAGE_SYNC_DEST_REQ => "storage_sync_dest_req",
        STORAGE_SYNC_NOTIFY => "storage_sync_notify",
        STORAGE_SYNC_REPORT => "storage_sync_report",
        STORAGE_GET_GROUP_NAME => "storage_get_group_name",
        SERVER_LIST_ONE_GROUP => "server_list_one_group",
        SERVER_LIST_ALL_GROUPS => "server_list_all_groups",
        SERVER_LIST_STORAGE => "server_list_storage",
        SERVER_DELETE_STORAGE => "server_delete_storage",
        SERVER_SET_TRUNK_SERVER => "server_set_trunk_server",
        SERVER_GET_LEADER => "server_get_leader",
        SERVER_TRACKER_CLUSTER_STAT => "server_tracker_cluster_stat",
        SERVER_STORAGE_CLUSTER_STAT => "server_storage_cluster_stat",
        SERVER_STORAGE_VOLUMN_STAT => "server_storage_volumn_stat",
        SERVER_DELETE_GROUP => "server_delete_group",
        QUERY_STORE_WITHOUT_GROUP_ONE => "query_store_without_group_one",
        QUERY_FETCH_ONE => "query_fetch_one",
        QUERY_UPDATE => "query_update",
        QUERY_STORE_WITH_GROUP_ONE => "query_store_with_group_one",
        QUERY_FETCH_ALL => "query_fetch_all",
        QUERY_STORE_WITHOUT_GROUP_ALL => "query_store_without_group_all",
        QUERY_STORE_WITH_GROUP_ALL => "query_store_with_group_all",
        STORAGE_REPORT_SERVER_ID => "storage_report_server_id",
        UPLOAD_FILE => "upload_file",
        DELETE_FILE => "delete_file",
        SET_METADATA => "set_metadata",
        DOWNLOAD_FILE => "download_file",
        GET_METADATA => "get_metadata",
        SYNC_CREATE_FILE => "sync_create_file",
        SYNC_DELETE_FILE => "sync_delete_file",
        SYNC_UPDATE_FILE => "sync_update_file",
        SYNC_CREATE_LINK => "sync_create_link",
        CREATE_LINK => "create_link",
        UPLOAD_SLAVE_FILE => "upload_slave_file",
        QUERY_FILE_INFO => "query_file_info",
        UPLOAD_APPENDER_FILE => "upload_appender_file",
        APPEND_FILE => "append_file",
        SYNC_APPEND_FILE => "sync_append_file",
        FETCH_ONE_PATH_BINLOG => "fetch_one_path_binlog",
        TRUNK_ALLOC_SPACE => "trunk_alloc_space",
        TRUNK_ALLOC_CONFIRM => "trunk_alloc_confirm",
        TRUNK_FREE_SPACE => "trunk_free_space",
        TRUNK_SYNC_BINLOG => "trunk_sync_binlog",
        TRUNK_GET_BINLOG_SIZE => "trunk_get_binlog_size",
        TRUNK_DELETE_BINLOG_MARKS => "trunk_delete_binlog_marks",
        TRUNK_TRUNCATE_BINLOG_FILE => "trunk_truncate_binlog_file",
        MODIFY_FILE => "modify_file",
        SYNC_MODIFY_FILE => "sync_modify_file",
        TRUNCATE_FILE => "truncate_file",
        SYNC_TRUNCATE_FILE => "sync_truncate_file",
        REGENERATE_APPENDER_FILENAME => "regenerate_appender_filename",
        SYNC_RENAME_FILE => "sync_rename_file",
        QUIT => "quit",
        RESP => "resp",
        ACTIVE_TEST => "active_test",
        CLUSTER_AUTH => "cluster_auth",
        _ => "unknown",
    }
}
