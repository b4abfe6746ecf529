//! `fdfs_monitor <config_file> [-h <tracker_server>] [list|delete|set_trunk_server
//! <group_name> [storage_id]]`

use std::net::SocketAddr;

use fdfs_proto::msg::ListAllGroups;
use fdfs_proto::msg::{GroupStat, StorageSelector};
use fdfs_proto::DEFAULT_TRACKER_PORT;
use fdfs_runtime::{Connection, Error};
use rand::Rng;

use crate::cli::{self, ToolError, EXIT_USAGE};
use crate::config::parse_tracker_arg;
use crate::format;
use crate::tracker::TrackerClient;

pub const NAME: &str = "fdfs_monitor";
pub const USAGE: &str = "<config_file> [-h <tracker_server>] \
    [list|delete|set_trunk_server <group_name> [storage_id]]\n\
    \tthe tracker server format: host[:port], the tracker default port is 22122";

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
}

pub fn parse(args: &[String]) -> Result<Args, ToolError> {
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
    Ok(Args {
        config: args[0].clone(),
        tracker,
        op,
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
    println!("server_count={n}, server_index={}", tracker.current_index());
    let (mut conn, addr) = tracker
        .connect()
        .await
        .map_err(|e| ToolError::op("connect to tracker server", &e))?;
    let port = if addr.port() == 0 {
        DEFAULT_TRACKER_PORT
    } else {
        addr.port()
    };
    println!("\ntracker server is {}:{port}\n", addr.ip());

    let result = match &a.op {
        Op::List(group) => list_on(&mut conn, group.as_deref()).await,
        Op::Delete {
            group,
            storage_id: None,
        } => match tracker.delete_group(group).await {
            Ok(()) => {
                println!("delete group: {group} success");
                Ok(())
            }
            Err(e) => Err(ToolError::op(&format!("delete group: {group}"), &e)),
        },
        Op::Delete {
            group,
            storage_id: Some(id),
        } => match tracker.delete_storage(group, id).await {
            Ok(()) => {
                println!("delete storage server {group}::{id} success");
                Ok(())
            }
            Err(e) => Err(ToolError::op(
                &format!("delete storage server {group}::{id}"),
                &e,
            )),
        },
        Op::SetTrunkServer { group, storage_id } => {
            match tracker.set_trunk_server(group, storage_id).await {
                Ok(new_id) => {
                    println!(
                        "set trunk server {group}::{storage_id} success, new trunk server: {new_id}"
                    );
                    Ok(())
                }
                Err(e) => Err(ToolError::op(
                    &format!("set trunk server {group}::{storage_id}"),
                    &e,
                )),
            }
        }
    };
    conn.quit().await;
    result
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
        for bad in [
            &[][..],
            &["c.conf", "-h"],
            &["c.conf", "frobnicate"],
            &["c.conf", "delete"],
            &["c.conf", "set_trunk_server"],
        ] {
            assert_eq!(parse(&args(bad)).unwrap_err().exit_code, 2, "{bad:?}");
        }
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
