//! A file that is not on this node: answer 404, or send the request on to a storage of
//! the file's group (302 in redirect mode, the module's proxy location otherwise).

use std::net::Ipv4Addr;
use std::sync::Arc;

use fdfs_proto::http::peers::{self, Miss, Peer};
use fdfs_proto::http::url::forward_uri;
use fdfs_proto::http::{FileRequest, ModConf, Query, ResponseMode};

use crate::Note;

/// What the storage listing says about a group.
pub enum Lookup {
    /// Its storages as the trackers list them (empty when it is not listed, or when no
    /// tracker is configured).
    Ready(Arc<[Peer]>),
    /// This worker has no listing yet and its first fetch is still under way.
    Pending,
}

/// This node's view of the cluster (the module's `peers`). The calls may ask the
/// trackers for a fresh listing in the background; none waits for one.
pub trait Cluster {
    /// This host's addresses.
    fn local_ips(&self) -> &[Ipv4Addr];
    /// The storages of `group`, for a file created at `created` (unix seconds).
    fn group_members(&self, group: &str, created: i64, conf: &ModConf) -> Lookup;
    /// A file names a source its group's listing does not hold; whether this is the first
    /// such report of the group within the interval.
    fn source_unlisted(&self, group: &str, created: i64, conf: &ModConf) -> bool;
    /// No storage to fetch a file of `group` from; whether this is the first such report
    /// within the interval.
    fn no_candidate(&self, group: &str, conf: &ModConf) -> bool;
}

/// How the request reached this node.
pub struct Arrival<'a> {
    /// Address and port of the connection (the address when it is IPv4).
    pub local_addr: Option<Ipv4Addr>,
    pub local_port: u16,
    /// The request URI as the client sent it (`r->unparsed_uri`).
    pub unparsed_uri: &'a [u8],
    /// The request waited for the first listing already (it does not wait again).
    pub waited: bool,
}

/// What to answer for a file that is not here.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward {
    NotFound,
    /// Wait for this worker's first storage listing, then serve the request again.
    Wait,
    /// 302 to this URL.
    Redirect {
        location: String,
    },
    /// Through the module's proxy location, trying these storages in turn.
    Proxy(ForwardState),
}

/// The storages to try for a request, kept by the request while the proxy location
/// works through them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardState {
    candidates: Vec<Ipv4Addr>,
    next: usize,
    port: u16,
    uri: String,
}

/// The storage the proxy location asks next.
pub struct Next<'a> {
    /// `ip:port/uri?args&redirect=1`, for `proxy_pass http://$target`.
    pub target: String,
    /// Set when this is not the first storage asked.
    pub note: Option<Note<'a>>,
}

impl ForwardState {
    /// The next storage to ask; `None` when every one has failed (502).
    pub fn next_target(&mut self) -> Option<Next<'_>> {
        let ip = self.candidates.get(self.next).copied()?;
        self.next += 1;
        let note = (self.next > 1).then_some(Note::TryingStorage { ip, uri: &self.uri });
        Some(Next {
            target: format!("{}:{}{}", ip, self.port, self.uri),
            note,
        })
    }
}

/// Decides for `file` (of `query`), which is not on this node or not of its groups.
/// Returns the answer and what to log first.
pub fn on_miss<'a>(
    conf: &ModConf,
    file: &FileRequest<'a>,
    query: &Query,
    arrival: &Arrival<'_>,
    cluster: &impl Cluster,
    now: i64,
) -> (Forward, Vec<Note<'a>>) {
    let mut notes = Vec::new();
    if query.has("redirect") {
        // Already forwarded once: do not forward again (upstream answers 400 here).
        return (Forward::NotFound, notes);
    }
    let is_local =
        |ip: Ipv4Addr| Some(ip) == arrival.local_addr || cluster.local_ips().contains(&ip);
    let source = peers::source_ip(&file.info, conf.storage_ids.as_ref());
    let source_is_local = source.is_some_and(is_local);
    let same_group = file.local.is_some();
    let miss = peers::on_local_miss(
        same_group,
        &file.info,
        source_is_local,
        now,
        conf.storage_sync_file_max_delay,
    );
    if miss == Miss::NotFound {
        return (Forward::NotFound, notes);
    }
    // Only storages the trackers list for the file's group: the source in the name is
    // whatever the requester wrote there.
    let created = i64::from(file.info.timestamp);
    let members = match cluster.group_members(file.group, created, conf) {
        Lookup::Ready(members) => members,
        Lookup::Pending if !arrival.waited => return (Forward::Wait, notes),
        Lookup::Pending => {
            notes.push(Note::NoListing {
                file_id: file.file_id(),
            });
            return (Forward::NotFound, notes);
        }
    };
    let found = peers::candidates(source, &members, is_local);
    if let Some(source) = source.filter(|_| !found.source_listed) {
        notes.push(Note::SourceUnlisted {
            loud: cluster.source_unlisted(file.group, created, conf),
            source,
            file_id: file.file_id(),
            group: file.group,
        });
    }
    let candidates = found.ips;
    if candidates.is_empty() {
        notes.push(Note::NoCandidate {
            loud: cluster.no_candidate(file.group, conf),
            file_id: file.file_id(),
        });
        return (Forward::NotFound, notes);
    }
    let port = if conf.storage_http_port != 0 {
        conf.storage_http_port
    } else {
        arrival.local_port
    };
    let uri = forward_uri(&String::from_utf8_lossy(arrival.unparsed_uri));

    if conf.response_mode == ResponseMode::Redirect {
        let host = if port == 80 {
            candidates[0].to_string()
        } else {
            format!("{}:{}", candidates[0], port)
        };
        let location = format!("http://{host}{uri}");
        return (Forward::Redirect { location }, notes);
    }
    let state = ForwardState {
        candidates,
        next: 0,
        port,
        uri,
    };
    (Forward::Proxy(state), notes)
}
