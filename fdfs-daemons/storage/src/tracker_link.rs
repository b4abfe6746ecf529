//! The storage's side of the tracker protocol: one long-lived connection per configured
//! tracker, carrying join, heartbeat, disk usage and the first-start sync decision.
//!
//! The leader tracker names itself in its beat replies (flag 0x01). As upstream, a
//! storage remembers which of its trackers leads; when a reply names another one while
//! the one it knew still says it leads (64), there are two leaders (a network partition
//! between trackers healed, say): it sends 68 NOTIFY_RESELECT_LEADER to both, they step
//! down and elect one leader again.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fdfs_proto::addr::HostPort;
use fdfs_proto::config::{IniFile, SpaceLimit};
use fdfs_proto::msg::{
    Beat, Count64, FetchTrunkFileId, NotifyReselectLeader, ParameterReq, ReportTrunkFileId,
    ReportTrunkFree, SyncDestQuery, SyncDestReq, SyncNotify, TrackerGetStatus, TrunkFileId,
};
use fdfs_proto::msg::{BeatReply, DiskUsage, JoinRequest, StorageBrief, SyncReport, SyncSource};
use fdfs_proto::{errno, status, IpSize, VERSION_TEXT};
use fdfs_runtime::server::Shutdown;
use fdfs_runtime::{unix_now, Connection, Error};
use tracing::{info, warn};

use crate::init_flag::InitFlag;
use crate::outbound::resolve;
use crate::state::Storage;

/// State shared by all tracker links of one storage.
pub struct Links {
    pub init: Arc<Mutex<InitFlag>>,
    /// Held while a link settles the initial sync source with its tracker.
    pub first_sync: tokio::sync::Mutex<()>,
    /// Which `tracker_server` entry leads, as the beat replies announced it (`None`
    /// until one does, and after two leaders were seen). Held while a link checks an
    /// announcement, so the links settle one at a time.
    pub leader: tokio::sync::Mutex<Option<usize>>,
}

/// Keeps a session with one tracker alive until shutdown, reconnecting with back-off.
pub async fn run(st: Arc<Storage>, links: Arc<Links>, tracker: HostPort, mut shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(200);
    let mut failing = false;
    // Whether this tracker has been told of our initial copy: as at the start for every
    // link (a new storage joins every tracker as new, `init_flag` set, whichever link
    // arranges the copy first), then true once this link has settled it with its tracker.
    let mut told = links.init.lock().unwrap().sync_old_done;
    loop {
        match session(&st, &links, &tracker, &mut told, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
                if !failing {
                    warn!("tracker {tracker}: {e}; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.recv() => return,
        }
        backoff = (backoff * 2).min(st.cfg.heart_beat_interval.max(Duration::from_secs(1)));
    }
}

/// Refuses cluster settings this storage cannot honour: storing as if they were off
/// would put files where peers and clients do not look for them.
pub fn refuse_unsupported(params: &IniFile) -> Result<(), String> {
    let g = params.global();
    if g.bool("store_slave_file_use_link", false).unwrap_or(false) {
        return Err(
            "the trackers set store_slave_file_use_link = true: this storage \
                    stores slave files as regular files, not as links"
                .into(),
        );
    }
    Ok(())
}

fn apply_parameters(st: &Storage, text: &[u8]) -> Result<(), Error> {
    let text = String::from_utf8_lossy(text);
    let Ok(ini) = IniFile::parse(&text, "tracker-parameters") else {
        warn!("tracker sent unreadable parameters");
        return Ok(());
    };
    refuse_unsupported(&ini).map_err(Error::Other)?;
    let trunk = crate::trunk::Params::from_parameters(&ini);
    if trunk != st.trunk.params() {
        if let Some(p) = &trunk {
            info!(
                "trunk files on: files up to {} bytes go into {} MB trunk files",
                p.sizes.slot_max_size as u64 - fdfs_proto::trunk::SLOT_HEADER_LEN as u64,
                p.sizes.trunk_file_size >> 20
            );
        }
        st.trunk
            .set_params(&st.cfg.base_path, trunk)
            .map_err(|e| Error::Other(format!("trunk binlog: {e}")))?;
    }
    let naming = crate::identity::Naming::from_parameters(&ini);
    let identity = st.identity();
    if (naming.by_server_id, naming.id_in_filename)
        != (identity.by_server_id, identity.id_in_filename)
    {
        warn!(
            "the tracker now says use_storage_id = {}, file names by {}; this storage \
             goes on as it started (use_storage_id = {}, by {}) until it is restarted",
            naming.by_server_id,
            if naming.id_in_filename { "id" } else { "ip" },
            identity.by_server_id,
            if identity.id_in_filename { "id" } else { "ip" },
        );
    }
    let g = ini.global();
    let wide = matches!(
        g.str("response_ip_addr_size")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("ipv6") | Some("46")
    );
    st.set_ip_size(if wide { IpSize::V6 } else { IpSize::V4 });
    if let Ok(limit) = g.space("reserved_storage_space", SpaceLimit::Bytes(1024 << 20)) {
        st.store.set_reserved(limit);
    }
    Ok(())
}

/// The entry of `trackers` (`tracker_server` lines) that `ip:port` is one of: any
/// address of an entry counts (`ip1,ip2:port`, as upstream's `fdfs_server_contain`),
/// host names by what they resolve to.
async fn tracker_index(trackers: &[HostPort], ip: &str, port: u32) -> Option<usize> {
    let wanted: Option<IpAddr> = ip.parse::<IpAddr>().ok().map(|a| a.to_canonical());
    let same = |host: &str| match (host.parse::<IpAddr>(), wanted) {
        (Ok(h), Some(w)) => h.to_canonical() == w,
        _ => host == ip,
    };
    for (i, t) in trackers.iter().enumerate() {
        let (hosts, p) = (&t.hosts, t.port);
        if u32::from(p) != port {
            continue;
        }
        if hosts.iter().any(|h| same(h)) {
            return Some(i);
        }
        let Some(w) = wanted else {
            continue;
        };
        for host in hosts.iter().filter(|h| h.parse::<IpAddr>().is_err()) {
            if let Ok(mut addrs) = tokio::net::lookup_host((host.as_str(), p)).await {
                if addrs.any(|a| a.ip().to_canonical() == w) {
                    return Some(i);
                }
            }
        }
    }
    None
}

/// A beat reply from `from` named the leader (upstream's `set_tracker_leader`). Runs
/// apart from the session, whose beats must not wait for the calls it may make.
async fn leader_announced(st: Arc<Storage>, links: Arc<Links>, from: String, brief: StorageBrief) {
    let mut leader = links.leader.lock().await;
    if brief.ip.is_empty() {
        if let Some(old) = leader.take() {
            warn!(
                "tracker {from} announces no leader, {} was",
                st.cfg.tracker_servers[old]
            );
        }
        return;
    }
    let Some(index) = tracker_index(&st.cfg.tracker_servers, &brief.ip, brief.port).await else {
        warn!(
            "tracker {from} names leader {}:{}, which is not a tracker_server of ours",
            brief.ip, brief.port
        );
        return;
    };
    if let Some(old) = *leader {
        if old != index {
            let old_host = &st.cfg.tracker_servers[old];
            let new_host = &st.cfg.tracker_servers[index];
            let still_leads = crate::outbound::short_call(&st, old_host, &TrackerGetStatus)
                .await
                .is_ok_and(|s| s.if_leader);
            if still_leads {
                warn!("two tracker leaders: {old_host} and {new_host}; asking both to elect again");
                let (a, b) = tokio::join!(
                    crate::outbound::short_call(&st, old_host, &NotifyReselectLeader),
                    crate::outbound::short_call(&st, new_host, &NotifyReselectLeader),
                );
                for (host, result) in [(old_host, a), (new_host, b)] {
                    match result {
                        Ok(_) => {}
                        // It stepped down already (asked by another storage, say).
                        Err(Error::Status(errno::EOPNOTSUPP)) => {
                            info!("tracker {host}: no longer leads")
                        }
                        Err(e) => warn!("tracker {host}: notify reselect leader: {e}"),
                    }
                }
                *leader = None;
                return;
            }
        }
    }
    if *leader != Some(index) {
        info!("tracker leader is {}", st.cfg.tracker_servers[index]);
        *leader = Some(index);
    }
}

async fn session(
    st: &Arc<Storage>,
    links: &Arc<Links>,
    tracker: &HostPort,
    told: &mut bool,
    shutdown: &mut Shutdown,
) -> Result<(), Error> {
    let addr = resolve(tracker).await?;
    let mut conn = crate::outbound::connect(st, addr).await?;
    let my_ip = conn.local_addr()?.ip();
    st.learn_ip(my_ip);

    let params = conn.call(&ParameterReq).await?;
    apply_parameters(st, &params)?;
    if st.by_server_id() && st.identity().ids.is_none() {
        // Started as an earlier run was named, while no tracker answered: the table
        // (where each id's address is) comes now.
        match crate::identity::fetch_ids(st, tracker).await {
            Ok(ids) => st.set_storage_ids(ids),
            Err(e) => warn!("tracker {tracker}: cannot fetch the storage ids: {e}"),
        }
    }

    let init = links.init.lock().unwrap().clone();
    let join = JoinRequest {
        group: st.cfg.group_name.clone(),
        storage_port: st.cfg.port,
        store_path_count: st.cfg.store_paths.len() as u32,
        subdir_count_per_path: st.cfg.subdir_count_per_path,
        upload_priority: st.cfg.upload_priority,
        join_time: init.join_time,
        up_time: st.up_time,
        version: VERSION_TEXT.to_string(),
        init_flag: !*told,
        status: status::INIT as i8,
        storage_id: st
            .identity()
            .server_id
            .filter(|_| st.by_server_id())
            .unwrap_or_default(),
        tracker_ip: addr.ip().to_canonical().to_string(),
        trackers: st
            .cfg
            .tracker_servers
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let reply = conn.call(&join).await?;
    info!(
        "joined tracker {tracker} as {} in {}, status {}",
        st.my_ip().unwrap_or(my_ip),
        st.cfg.group_name,
        status::name(reply.status)
    );

    // One link asks its tracker for our initial sync source (87); the others tell
    // theirs (88) if they still see us as new.
    let _first_sync = links.first_sync.lock().await;
    let init = links.init.lock().unwrap().clone();
    // A tracker that saw us join after the initial copy was arranged elsewhere does not
    // know its source: tell it too, or it answers "nobody" when the source asks.
    let source_unknown = init.sync_old_done
        && !init.sync_src_server.is_empty()
        && reply.status != status::ACTIVE
        && reply.status != status::INIT
        && conn.call(&SyncDestQuery).await?.is_none();
    if init.sync_old_done && (!*told || reply.status == status::INIT || source_unknown) {
        // No source: an empty id.
        let known = !init.sync_src_server.is_empty();
        let src = SyncSource {
            src_id: init.sync_src_server.clone(),
            until_timestamp: if known { init.sync_until_timestamp } else { 0 },
        };
        conn.call(&SyncNotify(src)).await?;
    }
    if !init.sync_old_done {
        // First start: the tracker says whether an existing member must copy its files
        // to us first, and from when.
        let src = conn.call(&SyncDestReq).await?;
        let mut flag = links.init.lock().unwrap();
        flag.sync_old_done = true;
        if let Some(src) = &src {
            flag.sync_src_server = src.src_id.clone();
            flag.sync_until_timestamp = src.until_timestamp;
            info!(
                "initial copy source {} until {}",
                src.src_id, src.until_timestamp
            );
        }
        flag.last_ip_addr = st.my_ip().unwrap_or(my_ip).to_string();
        flag.last_server_port = st.cfg.port;
        if let Err(e) = flag.save(&st.cfg.base_path) {
            warn!("cannot save init flag: {e}");
        }
    }
    *told = true;
    drop(_first_sync);

    // Report at once so the tracker marks us ACTIVE without waiting a whole interval.
    let news = report_disk_usage(st, &mut conn).await?;
    news_of(st, links, tracker, &mut conn, news).await?;
    let mut last_report = Instant::now();
    let mut sync_reported: Option<u64> = None;
    let mut trunk_reported = 0u32;
    loop {
        let news = beat(st, &mut conn).await?;
        news_of(st, links, tracker, &mut conn, news).await?;
        let news = sync_report(st, &mut conn, &mut sync_reported).await?;
        news_of(st, links, tracker, &mut conn, news).await?;
        if last_report.elapsed() >= st.cfg.stat_report_interval {
            let news = report_disk_usage(st, &mut conn).await?;
            news_of(st, links, tracker, &mut conn, news).await?;
            last_report = Instant::now();
        }
        trunk_reports(st, &mut conn, &mut trunk_reported).await?;
        tokio::select! {
            _ = tokio::time::sleep(st.cfg.heart_beat_interval) => {}
            _ = shutdown.recv() => {
                conn.quit().await;
                return Ok(());
            }
        }
    }
}

/// What a beat reply announced: the leader, the trunk server.
#[derive(Default)]
struct News {
    leader: Option<StorageBrief>,
    trunk_server: Option<StorageBrief>,
}

async fn news_of(
    st: &Arc<Storage>,
    links: &Arc<Links>,
    tracker: &HostPort,
    conn: &mut Connection,
    news: News,
) -> Result<(), Error> {
    let announces_leader = news.leader.is_some();
    if let Some(brief) = news.leader {
        tokio::spawn(leader_announced(
            st.clone(),
            links.clone(),
            tracker.to_string(),
            brief,
        ));
    }
    let Some(brief) = news.trunk_server else {
        return Ok(());
    };
    // As upstream, the leader says who the trunk server is (a follower's word may be
    // stale): a tracker known to lead, one that announces the leader in the same reply,
    // or any while no leader is known.
    let from_leader = announces_leader
        || match *links.leader.lock().await {
            Some(i) => st.cfg.tracker_servers.get(i) == Some(tracker),
            None => true,
        };
    if from_leader {
        if st.trunk.params().is_none() {
            // Trunk files were turned on: the settings first (upstream does the same).
            let params = conn.call(&ParameterReq).await?;
            apply_parameters(st, &params)?;
        }
        if st.trunk.announced(st, &brief).await {
            // The newest trunk file id the group has, before any is created here.
            match conn.call(&FetchTrunkFileId).await {
                Ok(TrunkFileId(id)) => st.trunk.note_fetched(id as u32).await,
                Err(e) => warn!("tracker {tracker}: cannot fetch the trunk file id: {e}"),
            }
            // Loaded apart from the session: its beats go on meanwhile.
            let loader = st.clone();
            tokio::spawn(async move { loader.trunk.take_role(&loader).await });
        }
    }
    Ok(())
}

/// The trunk server tells the tracker of a new trunk file id (73; `reported`: what this
/// session told its tracker) and of its free trunk space (74).
async fn trunk_reports(
    st: &Storage,
    conn: &mut Connection,
    reported: &mut u32,
) -> Result<(), Error> {
    if !st.trunk.is_server() {
        return Ok(());
    }
    let id = st.trunk.current_id();
    if id > *reported {
        match conn.call(&ReportTrunkFileId(TrunkFileId(id as i32))).await {
            Ok(()) => *reported = id,
            // Another storage became trunk server meanwhile.
            Err(Error::Status(e)) => tracing::debug!("73 refused: errno {e}"),
            Err(e) => return Err(e),
        }
    }
    if let Some(mb) = st.trunk.free_mb().await {
        match conn.call(&ReportTrunkFree(Count64(mb))).await {
            Ok(()) | Err(Error::Status(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn beat(st: &Storage, conn: &mut Connection) -> Result<News, Error> {
    let mut counters = st.stats.snapshot();
    counters.last_heart_beat_time = unix_now();
    let reply = conn
        .call(&Beat {
            counters: Some(counters),
        })
        .await?;
    handle_beat_reply(st, reply)
}

/// Takes the group member list a (leader) tracker sends when it changed; returns the
/// leader and the trunk server it announced, if it did.
fn handle_beat_reply(st: &Storage, reply: BeatReply) -> Result<News, Error> {
    if let Some(members) = reply.group_members {
        let list: Vec<String> = members
            .iter()
            .map(|b| format!("{}:{} {}", b.ip, b.port, status::name(b.status)))
            .collect();
        tracing::debug!("group members: {}", list.join(", "));
        st.sync.set_members(members);
    }
    Ok(News {
        leader: reply.leader,
        trunk_server: reply.trunk_server,
    })
}

/// 89 SYNC_REPORT when a source's newest received timestamp moved since the last
/// report on this connection.
async fn sync_report(
    st: &Storage,
    conn: &mut Connection,
    reported: &mut Option<u64>,
) -> Result<News, Error> {
    let (version, entries) = st.sync.received();
    if entries.is_empty() || *reported == Some(version) {
        return Ok(News::default());
    }
    let reply = conn.call(&SyncReport { entries }).await?;
    *reported = Some(version);
    handle_beat_reply(st, reply)
}

async fn report_disk_usage(st: &Storage, conn: &mut Connection) -> Result<News, Error> {
    st.store.refresh_usage();
    let usage = DiskUsage {
        paths: st
            .store
            .paths()
            .iter()
            .map(|p| (p.total_mb() as i64, p.free_mb() as i64))
            .collect(),
    };
    let reply = conn.call(&usage).await?;
    handle_beat_reply(st, reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{eventually, storage, FakeTracker};
    use fdfs_proto::cmd;
    use fdfs_proto::msg::{JoinReply, TrackerStatus};

    #[tokio::test]
    async fn leader_matches_every_address_of_an_entry() {
        let trackers: Vec<HostPort> = [
            "tracker.invalid:22122",
            "localhost:22123",
            "[::1]:22124",
            "10.0.0.1,127.0.0.5:22125",
            "10.0.0.2:22126",
        ]
        .map(|t| HostPort::parse(t, None).unwrap())
        .to_vec();
        let at = |ip: &'static str, port: u32| tracker_index(&trackers, ip, port);
        // By name: whatever the name resolves to.
        assert_eq!(at("127.0.0.1", 22123).await, Some(1));
        assert_eq!(at("::ffff:127.0.0.1", 22123).await, Some(1));
        // Bracketed IPv6.
        assert_eq!(at("::1", 22124).await, Some(2));
        assert_eq!(at("0:0:0:0:0:0:0:1", 22124).await, Some(2));
        // Dual addresses: either one.
        assert_eq!(at("10.0.0.1", 22125).await, Some(3));
        assert_eq!(at("127.0.0.5", 22125).await, Some(3));
        // The port must match too.
        assert_eq!(at("10.0.0.2", 22126).await, Some(4));
        assert_eq!(at("10.0.0.2", 22125).await, None);
        assert_eq!(at("127.0.0.1", 22122).await, None);
        assert_eq!(at("tracker.invalid", 22122).await, Some(0));
    }

    /// A fake tracker that says it leads: in its first beat reply on each session, and
    /// in its answer to 64.
    async fn leading_tracker() -> FakeTracker {
        let announced = Mutex::new(std::collections::HashSet::new());
        let port = Arc::new(std::sync::OnceLock::<u32>::new());
        let my_port = port.clone();
        let t = FakeTracker::start(move |conn, command, _body| match command {
            cmd::STORAGE_PARAMETER_REQ => (0, Vec::new()),
            cmd::STORAGE_JOIN => (
                0,
                JoinReply {
                    status: status::ACTIVE,
                    sync_src_id: String::new(),
                }
                .encode(),
            ),
            cmd::STORAGE_BEAT | cmd::STORAGE_REPORT_DISK_USAGE => {
                let leader = announced
                    .lock()
                    .unwrap()
                    .insert(conn)
                    .then(|| StorageBrief {
                        status: status::ACTIVE,
                        port: *my_port.get().unwrap(),
                        id: "127.0.0.1".into(),
                        ip: "127.0.0.1".into(),
                    });
                let reply = BeatReply {
                    leader,
                    ..Default::default()
                };
                (0, reply.encode())
            }
            cmd::TRACKER_GET_STATUS => (
                0,
                TrackerStatus {
                    if_leader: true,
                    running_time: 0,
                    restart_interval: 0,
                }
                .encode(),
            ),
            cmd::TRACKER_NOTIFY_RESELECT_LEADER => (0, Vec::new()),
            _ => (errno::ENOENT, Vec::new()),
        })
        .await;
        let p: u32 = t.addr.rsplit_once(':').unwrap().1.parse().unwrap();
        port.set(p).unwrap();
        t
    }

    #[tokio::test]
    async fn two_leaders_are_both_told_to_elect_again() {
        let a = leading_tracker().await;
        let b = leading_tracker().await;
        let (st, _dir) = storage("two-leaders", &[a.addr.clone(), b.addr.clone()]);
        let links = Arc::new(Links {
            init: Arc::new(Mutex::new(InitFlag {
                sync_old_done: true,
                ..Default::default()
            })),
            first_sync: tokio::sync::Mutex::new(()),
            leader: tokio::sync::Mutex::new(None),
        });
        let (trigger, shutdown) = fdfs_runtime::server::ShutdownTrigger::new();
        let mut tasks = Vec::new();
        for t in [&a, &b] {
            tasks.push(tokio::spawn(run(
                st.clone(),
                links.clone(),
                HostPort::parse(&t.addr, None).unwrap(),
                trigger.subscribe(),
            )));
        }
        drop(shutdown);
        let told = eventually(15, || {
            a.count(cmd::TRACKER_NOTIFY_RESELECT_LEADER) >= 1
                && b.count(cmd::TRACKER_NOTIFY_RESELECT_LEADER) >= 1
        })
        .await;
        assert!(told, "68 to both: {:?} / {:?}", a.commands, b.commands);
        assert!(a.count(cmd::TRACKER_GET_STATUS) + b.count(cmd::TRACKER_GET_STATUS) >= 1);
        let mut forgot = false;
        for _ in 0..100 {
            if links.leader.lock().await.is_none() {
                forgot = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(forgot, "the storage still follows a leader");
        // The beats went on meanwhile.
        assert!(a.count(cmd::STORAGE_BEAT) >= 1 && b.count(cmd::STORAGE_BEAT) >= 1);
        trigger.trigger();
        for t in tasks {
            t.await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&st.cfg.base_path);
    }
}
