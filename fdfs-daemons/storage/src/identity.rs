//! Who this storage is in its cluster, settled with the trackers before anything is
//! served, as upstream storages do at start-up:
//!
//! 1. a `storage.conf` without `group_name` asks for its group (109 GET_GROUP_NAME,
//!    answered from the trackers' `storage_ids.conf`);
//! 2. the trackers' parameters (75) say whether storages are named by server id
//!    (`use_storage_id`) and whether file names carry that id or the IP
//!    (`id_type_in_filename`);
//! 3. with server ids, the table (69 FETCH_STORAGE_IDS) and our own id: the
//!    `server_id` of `storage.conf` when the trackers trust storages to declare it
//!    (`trust_storage_server_id`, for a storage behind NAT), else the one the trackers
//!    give our address and port (70 GET_SERVER_ID).
//!
//! A storage that settled once keeps what it learnt in `data/.storage_identity`, so it
//! can start while no tracker answers; a first start waits for one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fdfs_proto::config::IniFile;
use fdfs_proto::fileid::Source;
use fdfs_proto::msg::{FetchStorageIds, GetGroupName, GetServerId, GroupHost, ParameterReq};
use fdfs_proto::storage_ids::{valid_server_id, ServerIds};
use fdfs_runtime::Error;
use tracing::{info, warn};

use crate::config::StorageConfig;
use crate::state::Storage;

/// How this storage is named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `use_storage_id`: storages are named by server id.
    pub by_server_id: bool,
    /// `id_type_in_filename = id`: new file names carry the server id.
    pub id_in_filename: bool,
    /// Our server id (with `by_server_id`).
    pub server_id: Option<String>,
    /// The trackers' `storage_ids.conf` (with `by_server_id`; not kept across restarts).
    pub ids: Option<Arc<ServerIds>>,
}

/// The naming settings of a tracker's 75 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Naming {
    pub by_server_id: bool,
    pub id_in_filename: bool,
    pub trust_declared_id: bool,
}

impl Naming {
    pub fn from_parameters(ini: &IniFile) -> Naming {
        let g = ini.global();
        let by_server_id = g.bool("use_storage_id", false).unwrap_or(false);
        Naming {
            by_server_id,
            id_in_filename: by_server_id && g.str("id_type_in_filename") == Some("id"),
            trust_declared_id: g.bool("trust_storage_server_id", false).unwrap_or(false),
        }
    }
}

impl Identity {
    /// The source field of new file names: our server id, or our IPv4 address.
    pub fn source(&self) -> Option<Source> {
        if !self.id_in_filename {
            return None;
        }
        let id = self.server_id.as_ref()?.parse().ok()?;
        Some(Source::ServerId(id))
    }

    /// The address of a file's source, as file-info replies give it.
    pub fn source_ip(&self, source: &Source) -> String {
        match source {
            Source::Ip(ip) => ip.to_string(),
            Source::ServerId(id) => self
                .ids
                .as_ref()
                .and_then(|t| t.by_id(&id.to_string()))
                .map(|s| s.ip().to_string())
                .unwrap_or_default(),
        }
    }

    /// Where it is kept between runs.
    pub fn file(base_path: &Path) -> PathBuf {
        base_path.join("data").join(".storage_identity")
    }

    /// What an earlier run settled, if it did.
    pub fn load(base_path: &Path) -> Option<Identity> {
        let ini = IniFile::load(Self::file(base_path)).ok()?;
        let g = ini.global();
        let by_server_id = g.bool("use_storage_id", false).ok()?;
        let server_id = g
            .str("server_id")
            .filter(|id| valid_server_id(id))
            .map(String::from);
        if by_server_id && server_id.is_none() {
            return None;
        }
        Some(Identity {
            by_server_id,
            id_in_filename: by_server_id && g.bool("id_in_filename", false).ok()?,
            server_id,
            ids: None,
        })
    }

    pub fn save(&self, base_path: &Path) -> std::io::Result<()> {
        let text = format!(
            "use_storage_id={}\nid_in_filename={}\nserver_id={}\n",
            self.by_server_id as u8,
            self.id_in_filename as u8,
            self.server_id.as_deref().unwrap_or("")
        );
        let target = Self::file(base_path);
        let tmp = target.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, &target)?;
        crate::durability::sync_dir(target.parent().expect("in data/"))
    }
}

/// The pause between two rounds over the trackers while none answers.
const RETRY: Duration = Duration::from_secs(1);

/// Fills in `group_name` when `storage.conf` leaves it out (109). Waits for a tracker;
/// an answer that the trackers cannot tell (no storage ids, or we are not in their
/// table) is an error.
pub async fn settle_group(cfg: &mut StorageConfig) -> Result<(), String> {
    if !cfg.group_name.is_empty() {
        return Ok(());
    }
    let ask = GetGroupName {
        ip: cfg.bind_addr.map(|ip| ip.to_string()).unwrap_or_default(),
        port: cfg.port as u32,
    };
    let mut warned = false;
    loop {
        for t in &cfg.tracker_servers {
            match crate::outbound::cfg_tracker_call(cfg, t, &ask).await {
                Ok(name) => {
                    info!("group_name is {} (from tracker {t})", name.0);
                    cfg.group_name = name.0;
                    return Ok(());
                }
                Err(Error::Status(e)) => {
                    return Err(format!(
                        "group_name is not set and tracker {t} cannot tell it (errno {e}): \
                         it needs use_storage_id = true and this storage ({}:{}) in its \
                         storage_ids.conf",
                        if ask.ip.is_empty() {
                            "this address"
                        } else {
                            &ask.ip
                        },
                        cfg.port
                    ))
                }
                Err(e) if !warned => {
                    warn!("tracker {t}: {e}; waiting for a tracker to learn the group name");
                    warned = true;
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Settles our identity with the first tracker that answers; without an answer, takes
/// what an earlier run settled, and on a first start waits for one.
pub async fn settle(st: &Storage) -> Result<(), String> {
    let saved = Identity::load(&st.cfg.base_path);
    let mut warned = false;
    loop {
        for t in &st.cfg.tracker_servers {
            match ask(st, t).await {
                Ok(identity) => {
                    if saved.as_ref().is_some_and(|s| {
                        (s.by_server_id, s.id_in_filename, &s.server_id)
                            != (
                                identity.by_server_id,
                                identity.id_in_filename,
                                &identity.server_id,
                            )
                    }) {
                        warn!(
                            "the trackers name this storage otherwise than before: \
                             use_storage_id {}, file names by {}, server id {}",
                            identity.by_server_id,
                            if identity.id_in_filename { "id" } else { "ip" },
                            identity.server_id.as_deref().unwrap_or("-")
                        );
                    }
                    if let Err(e) = identity.save(&st.cfg.base_path) {
                        warn!(
                            "cannot save {}: {e}",
                            Identity::file(&st.cfg.base_path).display()
                        );
                    }
                    log_identity(&identity);
                    st.set_identity(identity);
                    return Ok(());
                }
                Err(Fatal(why)) => return Err(why),
                Err(Retry(e)) => {
                    if let Some(saved) = &saved {
                        warn!("tracker {t}: {e}; starting as an earlier run was named");
                        log_identity(saved);
                        st.set_identity(saved.clone());
                        return Ok(());
                    }
                    if !warned {
                        warn!("tracker {t}: {e}; waiting for a tracker to learn how storages are named");
                        warned = true;
                    }
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

fn log_identity(identity: &Identity) {
    match &identity.server_id {
        Some(id) if identity.by_server_id => info!(
            "storage id {id}; file names carry the {}",
            if identity.id_in_filename {
                "id"
            } else {
                "IP address"
            }
        ),
        _ => info!("storages are named by IP address"),
    }
}

/// Why settling with one tracker failed.
pub(crate) enum Failure {
    /// The tracker answered, and what it said stops the storage.
    Fatal(String),
    /// No answer: try another tracker, or later.
    Retry(Error),
}
use Failure::{Fatal, Retry};

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal(why) => f.write_str(why),
            Retry(e) => write!(f, "{e}"),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Retry(e)
    }
}

async fn ask(st: &Storage, tracker: &fdfs_proto::addr::HostPort) -> Result<Identity, Failure> {
    let params = crate::outbound::tracker_call(st, tracker, &ParameterReq).await?;
    let ini = IniFile::parse(&String::from_utf8_lossy(&params), "tracker-parameters")
        .map_err(|e| Fatal(format!("tracker {tracker} sent unreadable parameters: {e}")))?;
    crate::tracker_link::refuse_unsupported(&ini).map_err(Fatal)?;
    let naming = Naming::from_parameters(&ini);
    if !naming.by_server_id {
        return Ok(Identity::default());
    }
    let ids = fetch_ids(st, tracker).await?;
    let declared = st
        .cfg
        .server_id
        .clone()
        .filter(|_| naming.trust_declared_id);
    let server_id = match declared {
        Some(id) => id,
        None => {
            let ip = st
                .my_ip()
                .ok_or_else(|| Retry(Error::Other("own address unknown".into())))?;
            let host = fdfs_proto::addr::HostPort::from_ip(ip, st.cfg.port).to_string();
            let req = GetServerId(GroupHost {
                group: st.cfg.group_name.clone(),
                host,
            });
            match crate::outbound::tracker_call(st, tracker, &req).await {
                Ok(id) => String::from_utf8_lossy(&id).trim_matches('\0').to_string(),
                Err(Error::Status(e)) => {
                    return Err(Fatal(format!(
                        "tracker {tracker} knows no server id for {ip}:{} in group {} \
                         (errno {e}): add it to storage_ids.conf, or set server_id",
                        st.cfg.port, st.cfg.group_name
                    )))
                }
                Err(e) => return Err(Retry(e)),
            }
        }
    };
    let Some(mine) = ids.by_id(&server_id) else {
        return Err(Fatal(format!(
            "server id {server_id:?} is not in the storage_ids.conf of tracker {tracker}"
        )));
    };
    if mine.group != st.cfg.group_name {
        return Err(Fatal(format!(
            "server id {server_id} belongs to group {} in storage_ids.conf, this storage \
             is in {}",
            mine.group, st.cfg.group_name
        )));
    }
    Ok(Identity {
        by_server_id: true,
        id_in_filename: naming.id_in_filename,
        server_id: Some(server_id),
        ids: Some(Arc::new(ids)),
    })
}

/// The whole table, page by page (69).
pub(crate) async fn fetch_ids(
    st: &Storage,
    tracker: &fdfs_proto::addr::HostPort,
) -> Result<ServerIds, Failure> {
    let mut lines: Vec<String> = Vec::new();
    loop {
        let page = crate::outbound::tracker_call(
            st,
            tracker,
            &FetchStorageIds {
                start: lines.len() as u32,
                allow_empty: false,
            },
        )
        .await?;
        if page.lines.is_empty() {
            break;
        }
        lines.extend(page.lines);
        if lines.len() >= page.total as usize {
            break;
        }
    }
    ServerIds::from_lines(lines.iter().map(String::as_str)).map_err(|why| {
        Fatal(format!(
            "tracker {tracker} sent a bad storage id table: {why}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_identity_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        assert_eq!(Identity::load(dir.path()), None);
        let by_id = Identity {
            by_server_id: true,
            id_in_filename: true,
            server_id: Some("100001".into()),
            ids: None,
        };
        by_id.save(dir.path()).unwrap();
        assert_eq!(Identity::load(dir.path()), Some(by_id.clone()));
        assert_eq!(by_id.source(), Some(Source::ServerId(100_001)));
        let by_ip = Identity::default();
        by_ip.save(dir.path()).unwrap();
        assert_eq!(Identity::load(dir.path()), Some(by_ip.clone()));
        assert_eq!(by_ip.source(), None);
    }

    #[test]
    fn naming_follows_the_parameters() {
        let parse = |text: &str| Naming::from_parameters(&IniFile::parse(text, "t").unwrap());
        let n = parse("use_storage_id=1\nid_type_in_filename=id\ntrust_storage_server_id=1\n");
        assert!(n.by_server_id && n.id_in_filename && n.trust_declared_id);
        let n = parse("use_storage_id=0\nid_type_in_filename=id\n");
        assert!(!n.by_server_id && !n.id_in_filename);
        let n = parse("use_storage_id=1\nid_type_in_filename=ip\n");
        assert!(n.by_server_id && !n.id_in_filename);
    }
}
