//! Every request and reply body of the protocol, by who talks to whom:
//!
//! - [`client_tracker`]: where to upload, where a file is, what the cluster looks like;
//! - [`storage_tracker`]: a storage joining, beating and reporting;
//! - [`tracker_tracker`]: leader election and followers;
//! - [`client_storage`]: file operations on a storage;
//! - [`storage_storage`]: replication inside a group.
//!
//! Every request a client, a storage or a tracker sends implements [`Request`]: the
//! command code in its header, its body, and the type its successful reply decodes to.
//! `fdfs_runtime::Connection::call` takes any request and returns that reply type, so a
//! request sent under the wrong command, or a reply decoded as the wrong type, does not
//! compile. Servers read requests with each type's `decode` and answer with the reply
//! types' `encode` (replies that carry storage addresses take the width the tracker is
//! configured with). Requests whose content is streamed (uploads, appends, copies between
//! storages) have their fixed heads here; the server reads the content from the socket as
//! it arrives. Every type is also exported here, flat.

use crate::codec::{ProtoError, Reader, Writer};
use crate::fileid::{ends_like_metadata, REMOTE_NAME_MAX_LEN};
use crate::{
    cmd, valid_name_part, IpSize, EXT_NAME_MAX_LEN, GROUP_NAME_LEN, IP_ADDRESS_SIZE,
    PREFIX_MAX_LEN, STORAGE_ID_LEN, VERSION_SIZE,
};

/// A request: its command, its body, and what its successful reply decodes to.
pub trait Request {
    type Reply: Reply;
    /// The command code of the header.
    fn cmd(&self) -> u8;
    /// The body, as the server expects it.
    fn body(&self) -> Vec<u8>;
}

/// What the body of a successful reply decodes to.
pub trait Reply: Sized {
    fn from_body(body: &[u8]) -> Result<Self, ProtoError>;
}

/// A reply that says only its status: a body, if the server sends one, is not looked at.
impl Reply for () {
    fn from_body(_: &[u8]) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// Replies whose text the caller reads as it is (the tracker's parameters, its leader).
impl Reply for Vec<u8> {
    fn from_body(body: &[u8]) -> Result<Vec<u8>, ProtoError> {
        Ok(body.to_vec())
    }
}

/// `Request` for a type with `encode(&self) -> Vec<u8>`: its command and reply type.
macro_rules! request {
    ($($ty:ty => $cmd:expr, $reply:ty;)*) => {$(
        impl Request for $ty {
            type Reply = $reply;
            fn cmd(&self) -> u8 {
                $cmd
            }
            fn body(&self) -> Vec<u8> {
                self.encode()
            }
        }
    )*};
}

/// `Reply` for a type with `decode(&[u8]) -> Result<Self, ProtoError>`.
macro_rules! reply {
    ($($ty:ty),* $(,)?) => {$(
        impl Reply for $ty {
            fn from_body(body: &[u8]) -> Result<Self, ProtoError> {
                <$ty>::decode(body)
            }
        }
    )*};
}

/// A request with no body.
macro_rules! bodiless {
    ($($(#[$doc:meta])* $name:ident => $cmd:expr, $reply:ty;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name;
        impl Request for $name {
            type Reply = $reply;
            fn cmd(&self) -> u8 {
                $cmd
            }
            fn body(&self) -> Vec<u8> {
                Vec::new()
            }
        }
    )*};
}

macro_rules! file_ref_request {
    ($($ty:ident => $cmd:expr, $reply:ty;)*) => {$(
        impl Request for $ty {
            type Reply = $reply;
            fn cmd(&self) -> u8 {
                $cmd
            }
            fn body(&self) -> Vec<u8> {
                self.0.encode()
            }
        }
    )*};
}

/// The length field of a file name in a request head: at most a remote name long, at
/// least `min`.
fn filename_len(r: &mut Reader<'_>, min: i64) -> Result<usize, ProtoError> {
    let n = r.len_field("file name length", REMOTE_NAME_MAX_LEN as i64)?;
    if (n as i64) < min {
        return Err(ProtoError::field("file name length", n.to_string()));
    }
    Ok(n as usize)
}

pub mod client_storage;
pub mod client_tracker;
pub mod storage_storage;
pub mod storage_tracker;
pub mod tracker_tracker;

pub use client_storage::*;
pub use client_tracker::*;
pub use storage_storage::*;
pub use storage_tracker::*;
pub use tracker_tracker::*;

/// Group names in most tracker structs take 17 bytes (16 + NUL).
pub const GROUP_FIELD_17: usize = GROUP_NAME_LEN + 1;

/// Reads a 16-byte group field and checks it is a valid group name.
pub fn get_group(r: &mut Reader<'_>) -> Result<String, ProtoError> {
    let g = r.fixed_str(GROUP_NAME_LEN, "group name")?;
    if !crate::valid_group_name(&g) {
        return Err(ProtoError::field("group name", format!("{g:?}")));
    }
    Ok(g)
}

reply!(
    StoreTarget,
    JoinReply,
    BeatReply,
    TrackerStatus,
    TrunkAssignments,
    SysFileChunk,
    StorageClusterStat,
    VolumeStat,
    FileInfoReply,
    StoredFile,
    StorageIdsPage,
    GroupName,
    TrunkFileId,
    Count64,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_fetch_replies_of_both_widths() {
        let target = |ip: &str| ServerAddr {
            ip: ip.into(),
            port: 23000,
        };
        for size in [IpSize::V4, IpSize::V6] {
            let all = StoreTargets {
                group: "group1".into(),
                servers: vec![target("10.0.0.1"), target("10.0.0.2")],
                store_path_index: 2,
            };
            assert_eq!(StoreTargets::from_body(&all.encode(size)).unwrap(), all);
            let fetch = FetchTargets {
                group: "group1".into(),
                servers: vec![target("10.0.0.1"), target("10.0.0.2"), target("::1")],
            };
            assert_eq!(FetchTargets::from_body(&fetch.encode(size)).unwrap(), fetch);
        }
        assert!(FetchTargets::from_body(&[0; 16]).is_err());
        assert!(StoreTargets::from_body(&[0; 20]).is_err());
    }

    #[test]
    fn commands_follow_the_request() {
        assert_eq!(QueryStore { group: None }.cmd(), 101);
        let in_group = QueryStore {
            group: Some("group2".into()),
        };
        assert_eq!(in_group.cmd(), 104);
        assert_eq!(&in_group.body()[..6], b"group2");
        assert_eq!(in_group.body().len(), 16);
        assert!(QueryStore { group: None }.body().is_empty());
        let file = FileRef {
            group: "group1".into(),
            filename: "M00/00/00/x".into(),
        };
        let fetch = |kind| QueryFetch {
            kind,
            file: file.clone(),
        };
        assert_eq!(
            [Fetch::One, Fetch::Update, Fetch::All].map(|k| fetch(k).cmd()),
            [102, 103, 105]
        );
        assert_eq!(DeleteFile(file.clone()).body(), file.encode());
    }

    #[test]
    fn stray_layouts_round_trip() {
        let del = DeleteStorage {
            group: "group1".into(),
            storage_id: "100001".into(),
        };
        assert_eq!(del.encode().len(), 22);
        assert_eq!(DeleteStorage::decode(&del.encode()).unwrap(), del);
        assert!(DeleteStorage::decode(&[b'g'; 16]).is_err());
        let src = SyncSrcReq {
            group: "group1".into(),
            dest_id: "127.0.0.5".into(),
        };
        assert_eq!(SyncSrcReq::decode(&src.encode()).unwrap(), src);
        let host = GroupHost {
            group: "group1".into(),
            host: "10.0.0.7:23000".into(),
        };
        let mut padded = host.encode();
        padded.extend_from_slice(&[0, 0]);
        assert_eq!(GroupHost::decode(&padded).unwrap(), host);
    }
}
