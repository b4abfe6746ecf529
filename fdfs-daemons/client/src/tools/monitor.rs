//! `fdfs_monitor <config_file> [-h <tracker_server>] [list|delete|set_trunk_server
//! <group_name> [storage_id]]`, and beyond upstream `summary [group]` (`-s`) and
//! `--json [list [group]]`.

use std::net::SocketAddr;
use std::time::Duration;

use fdfs_proto::msg::{GetLeader, ListAllGroups};
use fdfs_proto::msg::{GroupStat, StorageSelector};
use fdfs_proto::DEFAULT_TRACKER_PORT;
use fdfs_runtime::{Connection, Error};
use rand::Rng;

use crate::cli::{self, ToolError, EXIT_USAGE};
use crate::config::parse_tracker_arg;
use crate::format;
use crate::report::{self, ClusterReport, GroupReport, TrackerReport};
use crate::tracker::TrackerClient;

pub const NAME: &str = "fdfs_monitor";
pub const USAGE: &str = "<config_file> [-h <tracker_server>] \
    [list|delete|set_trunk_server <group_name> [storage_id]]\n\
    \tthe tracker server format: host[:port], the tracker default port is 22122\n\
    Beyond upstream:\n\
    \tfdfs_monitor <config_file> [-h <tracker_server>] summary [<group_name>]   \
    (or -s, --summary)\n\
    \t\tone screen: the trackers (leader marked *), a line per group and per storage,\n\
    \t\tstorages with problems first, marked ! (not ACTIVE, under 10% free,\n\
    \t\tnever synced, 5 minutes or more behind a peer)\n\
    \tfdfs_monitor <config_file> [-h <tracker_server>] --json [list [<group_name>]]\n\
    \t\twhat list shows, with the trackers and the leader, as JSON";

/// How `list` prints what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Upstream's layout, which scripts parse.
    Upstream,
    /// [`report::summary`].
    Summary,
    /// [`ClusterReport`] as JSON.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// All groups, or just one.
    List(Option<String>),
    /// A whole group (no storage id) or one storage.
    Delete {
        group: String,
        storage_id: Option<String>,
    },
    SetTrunkServer {
        group: String,
        storage_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub config: String,
    pub tracker: Option<String>,
    pub op: Op,
    pub output: Output,
}

fn set_output(output: &mut Output, mode: Output) -> Result<(), ToolError> {
    if *output != Output::Upstream && *output != mode {
        return Err(ToolError::usage("--json and summary exclude each other"));
    }
    *output = mode;
    Ok(())
}

pub fn parse(args: &[String]) -> Result<Args, ToolError> {
    // The mode flags go anywhere; the rest are upstream's positional arguments.
    let mut output = Output::Upstream;
    let mut rest = Vec::with_capacity(args.len());
    for a in args {
        match a.as_str() {
            "--json" => set_output(&mut output, Output::Json)?,
            "-s" | "--summary" => set_output(&mut output, Output::Summary)?,
            _ => rest.push(a.clone()),
        }
    }
    let args = &rest[..];
    cli::need(args, 1)?;
    let mut i = 1;
    let mut tracker = None;
    if let Some(a) = args.get(1) {
        if let Some(rest) = a.strip_prefix("-h") {
            if rest.is_empty() {
                tracker = Some(
                    args.get(2)
                        .ok_or_else(|| ToolError::usage("-h needs a tracker server"))?
                        .clone(),
                );
                i = 3;
            } else {
                tracker = Some(rest.to_string());
                i = 2;
            }
        }
    }
    let op_name = args.get(i).map(String::as_str).unwrap_or("list");
    let group = args.get(i + 1).cloned();
    let storage_id = args.get(i + 2).cloned();
    let op = match op_name {
        "list" => Op::List(group),
        "summary" => {
            set_output(&mut output, Output::Summary)?;
            Op::List(group)
        }
        "delete" => Op::Delete {
            group: group.ok_or_else(|| ToolError::usage("delete needs a group name"))?,
            storage_id,
        },
        "set_trunk_server" => Op::SetTrunkServer {
            group: group.ok_or_else(|| ToolError::usage("set_trunk_server needs a group name"))?,
            storage_id: storage_id.unwrap_or_default(),
        },
        other => return Err(ToolError::usage(format!("Invalid command {other}"))),
    };
    if output != Output::Upstream && !matches!(op, Op::List(_)) {
        return Err(ToolError::usage(format!(
            "{op_name} prints no listing: --json and summary go with list only"
        )));
    }
    Ok(Args {
        config: args[0].clone(),
        tracker,
        op,
        output,
    })
}

/// Index of the `-h` tracker among the configured ones.
pub fn find_tracker(servers: &[SocketAddr], wanted: SocketAddr) -> Option<usize> {
    servers.iter().position(|&s| s == wanted)
}

async fn list_on(conn: &mut Connection, only: Option<&str>) -> Result<(), ToolError> {
    let body = conn
        .call(&ListAllGroups)
        .await
        .map_err(|e| ToolError::op("list groups", &e))?;
    let mut out = String::new();
    let mut failure = None;
    let groups: Vec<&GroupStat> = match only {
        None => {
            out.push_str(&format!("group count: {}\n", body.len()));
            body.iter().collect()
        }
        Some(name) => body.iter().filter(|g| g.group == name).take(1).collect(),
    };
    if let (Some(name), true) = (only, groups.is_empty()) {
        return Err(ToolError::op(
            &format!("list group {name}"),
            &Error::Status(fdfs_proto::errno::ENOENT),
        ));
    }
    for (i, g) in groups.iter().enumerate() {
        let sel = StorageSelector {
            group: g.group.clone(),
            storage_id: None,
        };
        let stats = conn.call(&sel).await;
        if only.is_none() {
            out.push_str(&format!("\nGroup {}:\n", i + 1));
        }
        match stats {
            Ok(stats) => out.push_str(&format::group_listing(g, &stats)),
            Err(e) => {
                failure.get_or_insert(ToolError::op(
                    &format!("list storage servers of group {}", g.group),
                    &e,
                ));
            }
        }
    }
    print!("{out}");
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// 95 GET_LEADER on one tracker, over its own connection: (it answered, the leader
/// it names).
async fn probe_leader(
    addr: SocketAddr,
    connect_timeout: Duration,
    network_timeout: Duration,
) -> (bool, Option<String>) {
    let Ok(mut conn) = Connection::connect(addr, None, connect_timeout, network_timeout).await
    else {
        return (false, None);
    };
    let answer = match conn.call(&GetLeader).await {
        Ok(body) => {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim_end_matches('\0').trim();
            (true, (!text.is_empty()).then(|| text.to_string()))
        }
        // ENOENT: no leader yet.
        Err(Error::Status(_)) => (true, None),
        Err(_) => return (false, None),
    };
    conn.quit().await;
    answer
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The [`ClusterReport`] of the summary and JSON modes: the groups (or just `only`) and
/// their storages from the tracker of `conn`, every configured tracker asked for the
/// leader meanwhile.
async fn collect(
    tracker: &TrackerClient,
    conn: &mut Connection,
    queried: SocketAddr,
    only: Option<&str>,
) -> Result<ClusterReport, ToolError> {
    let probes: Vec<_> = tracker
        .servers()
        .iter()
        .map(|&addr| {
            let (ct, nt) = (tracker.connect_timeout(), tracker.network_timeout());
            (addr, tokio::spawn(probe_leader(addr, ct, nt)))
        })
        .collect();
    let all = conn
        .call(&ListAllGroups)
        .await
        .map_err(|e| ToolError::op("list groups", &e))?;
    let groups: Vec<&GroupStat> = all
        .iter()
        .filter(|g| match only {
            Some(name) => g.group == name,
            None => true,
        })
        .collect();
    if let (Some(name), true) = (only, groups.is_empty()) {
        return Err(ToolError::op(
            &format!("list group {name}"),
            &Error::Status(fdfs_proto::errno::ENOENT),
        ));
    }
    let mut reports = Vec::with_capacity(groups.len());
    for g in groups {
        let sel = StorageSelector {
            group: g.group.clone(),
            storage_id: None,
        };
        let stats = conn.call(&sel).await.map_err(|e| {
            ToolError::op(&format!("list storage servers of group {}", g.group), &e)
        })?;
        reports.push(GroupReport::from_stats(g, &stats));
    }
    let mut trackers = Vec::with_capacity(probes.len());
    for (addr, probe) in probes {
        let (reachable, leader_seen) = probe.await.unwrap_or((false, None));
        trackers.push(TrackerReport {
            address: addr.to_string(),
            reachable,
            is_leader: false,
            queried: addr == queried,
            leader_seen,
        });
    }
    Ok(ClusterReport::new(
        unix_now(),
        queried.to_string(),
        trackers,
        reports,
    ))
}

pub async fn run(a: Args) -> Result<(), ToolError> {
    let conf = cli::load_config(&a.config)?;
    let tracker = TrackerClient::from_config(&conf);
    let n = tracker.servers().len();
    match &a.tracker {
        Some(h) => {
            let wanted = parse_tracker_arg(h).map_err(|why| ToolError {
                message: format!("resolve ip address of tracker server: {h} fail! ({why})"),
                exit_code: EXIT_USAGE,
                show_usage: false,
            })?;
            let idx = find_tracker(tracker.servers(), wanted).ok_or_else(|| ToolError {
                message: format!("tracker server: {h} not exists!"),
                exit_code: EXIT_USAGE,
                show_usage: false,
            })?;
            tracker.set_current_index(idx);
        }
        None if n > 1 => tracker.set_current_index(rand::thread_rng().gen_range(0..n)),
        None => {}
    }
    if a.output != Output::Upstream {
        let (mut conn, addr) = tracker
            .connect()
            .await
            .map_err(|e| ToolError::op("connect to tracker server", &e))?;
        let only = match &a.op {
            Op::List(group) => group.as_deref(),
            _ => None,
        };
        let result = collect(&tracker, &mut conn, addr, only).await;
        conn.quit().await;
        let r = result?;
        match a.output {
            Output::Json => println!("{}", r.to_json()),
            _ => print!("{}", report::summary(&r)),
        }
        return Ok(());
    }
    println!(
        "tracker server count={n}, current server index={}",
        tracker.current_index()
    );
    let (mut conn, addr) = tracker
        .connect()
        .await
        .map_err(|e| ToolError::op("connect to tracker server", &e))?;
    let port = if addr.port() == 0 {
        DEFAULT_TRACKER_PORT
    } else {
        addr.port()
    };
    // SocketAddr's Display brackets an IPv6 address, as upstream's format_ip_address.
    println!("\ntracker server is {}\n", SocketAddr::new(addr.ip(), port));

    let result = match &a.op {
        Op::List(group) => list_on(&mut conn, group.as_deref()).await,
        Op::Delete {
            group,
            storage_id: None,
        } => upstream_outcome(
            &format!("delete group: {group}"),
            tracker.delete_group(group).await.map(|()| String::new()),
        ),
        Op::Delete {
            group,
            storage_id: Some(id),
        } => upstream_outcome(
            &format!("delete storage server {group}::{id}"),
            tracker
                .delete_storage(group, id)
                .await
                .map(|()| String::new()),
        ),
        Op::SetTrunkServer { group, storage_id } => upstream_outcome(
            &format!("set trunk server {group}::{storage_id}"),
            tracker
                .set_trunk_server(group, storage_id)
                .await
                .map(|new_id| format!(", new trunk server: {new_id}")),
        ),
    };
    conn.quit().await;
    result
}

/// The outcome line of `delete` and `set_trunk_server` on stdout, as upstream prints it
/// (`<what> success<extra>`, or `<what> fail, error no: N, error info: <strerror>`);
/// a failure also exits with the errno (upstream exits 0).
fn upstream_outcome(what: &str, result: Result<String, Error>) -> Result<(), ToolError> {
    match result {
        Ok(extra) => {
            println!("{what} success{extra}");
            Ok(())
        }
        Err(e) => {
            let code = e.errno();
            println!(
                "{what} fail, error no: {code}, error info: {}",
                format::strerror(code)
            );
            Err(ToolError {
                message: String::new(),
                exit_code: (code as i32).max(1),
                show_usage: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;

    #[test]
    fn arguments() {
        let a = parse(&args(&["c.conf"])).unwrap();
        assert_eq!((a.tracker, a.op), (None, Op::List(None)));
        let a = parse(&args(&["c.conf", "list", "group1"])).unwrap();
        assert_eq!(a.op, Op::List(Some("group1".into())));
        let a = parse(&args(&["c.conf", "-h", "127.0.0.1:22122"])).unwrap();
        assert_eq!(a.tracker.as_deref(), Some("127.0.0.1:22122"));
        assert_eq!(a.op, Op::List(None));
        let a = parse(&args(&["c.conf", "-h127.0.0.1", "delete", "g1", "100001"])).unwrap();
        assert_eq!(a.tracker.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            a.op,
            Op::Delete {
                group: "g1".into(),
                storage_id: Some("100001".into())
            }
        );
        let a = parse(&args(&["c.conf", "delete", "g1"])).unwrap();
        assert_eq!(
            a.op,
            Op::Delete {
                group: "g1".into(),
                storage_id: None
            }
        );
        let a = parse(&args(&["c.conf", "set_trunk_server", "g1"])).unwrap();
        assert_eq!(
            a.op,
            Op::SetTrunkServer {
                group: "g1".into(),
                storage_id: String::new()
            }
        );
        assert_eq!(a.output, Output::Upstream);
        for bad in [
            &[][..],
            &["c.conf", "-h"],
            &["c.conf", "frobnicate"],
            &["c.conf", "delete"],
            &["c.conf", "set_trunk_server"],
            &["--json"],
            &["c.conf", "--json", "summary"],
            &["c.conf", "-s", "--json"],
            &["c.conf", "--json", "delete", "g1"],
            &["c.conf", "-s", "set_trunk_server", "g1"],
        ] {
            assert_eq!(parse(&args(bad)).unwrap_err().exit_code, 2, "{bad:?}");
        }
    }

    #[test]
    fn summary_and_json_arguments() {
        let a = parse(&args(&["c.conf", "summary"])).unwrap();
        assert_eq!((a.op, a.output), (Op::List(None), Output::Summary));
        let a = parse(&args(&["c.conf", "-h", "127.0.0.1", "summary", "group1"])).unwrap();
        assert_eq!(a.tracker.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            (a.op, a.output),
            (Op::List(Some("group1".into())), Output::Summary)
        );
        for summary in [&["c.conf", "-s"][..], &["c.conf", "--summary", "list"]] {
            let a = parse(&args(summary)).unwrap();
            assert_eq!((a.op, a.output), (Op::List(None), Output::Summary));
        }
        let a = parse(&args(&["c.conf", "--json"])).unwrap();
        assert_eq!((a.op, a.output), (Op::List(None), Output::Json));
        let a = parse(&args(&[
            "c.conf",
            "-h127.0.0.1:22122",
            "list",
            "g2",
            "--json",
        ]))
        .unwrap();
        assert_eq!(a.tracker.as_deref(), Some("127.0.0.1:22122"));
        assert_eq!(
            (a.op, a.output),
            (Op::List(Some("g2".into())), Output::Json)
        );
        let a = parse(&args(&["--json", "c.conf"])).unwrap();
        assert_eq!((a.config.as_str(), a.output), ("c.conf", Output::Json));
        let e = parse(&args(&["c.conf", "--json", "-s"])).unwrap_err();
        assert_eq!(e.message, "--json and summary exclude each other");
        let e = parse(&args(&["c.conf", "--json", "delete", "g1"])).unwrap_err();
        assert!(e.message.contains("go with list only"), "{}", e.message);
    }

    #[test]
    fn tracker_lookup() {
        let servers: Vec<SocketAddr> = vec![
            "127.0.0.1:22122".parse().unwrap(),
            "127.0.0.2:22122".parse().unwrap(),
        ];
        assert_eq!(
            find_tracker(&servers, parse_tracker_arg("127.0.0.2").unwrap()),
            Some(1)
        );
        assert_eq!(
            find_tracker(&servers, parse_tracker_arg("127.0.0.2:1").unwrap()),
            None
        );
    }
}
