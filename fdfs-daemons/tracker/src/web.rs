//! The tracker's HTTP side (`metrics_listen`):
//!
//! - `/metrics`: Prometheus text with the names and labels of FastDFS's `fdfs_exporter`
//!   (tracker, group and storage level, from this tracker's view of the cluster), the
//!   `*_total`/`*_success` ones typed as counters; plus `fastdfs_group_active_count`
//!   (which the stock dashboard queries but the exporter never emitted) and this
//!   tracker's own requests by command and result with their latency;
//! - `/healthz`: 200 while the process serves; `/readyz`: 200 once a tracker leader is
//!   known (this one or a peer), 503 before;
//! - `/`, `/storage/<id>`: the console (assets inside the binary), fed by
//!   `/api/cluster`.

use std::sync::Arc;

use fdfs_proto::msg::{counter, GroupStat, StorageStat};
use fdfs_proto::status;
use fdfs_runtime::http::{Handler, Page, PROMETHEUS_TEXT};
use fdfs_runtime::metrics::Scrape;
use fdfs_runtime::unix_now;
use serde_json::{json, Value};

use crate::server::Shared;
use crate::tracker_cmds::tracker_infos;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// Free space below this share of a storage's total is a problem the console shows
/// first (the `fdfs_health_checker` critical level); below twice it, a warning.
const LOW_SPACE: f64 = 0.10;
/// A heartbeat older than this is a problem (the `fdfs_health_checker` level).
const HEARTBEAT_LATE_SECS: i64 = 60;
/// Replication behind by more than this is a warning.
const SYNC_LATE_SECS: i64 = 60;

pub fn handler(shared: Arc<Shared>) -> Handler {
    Arc::new(move |path, _query| {
        let shared = shared.clone();
        Box::pin(async move {
            if path == "/api/cluster" {
                let mut data = cluster_json(&shared);
                if let Some(port) = shared.config.storage_metrics_port {
                    add_storage_latency(&mut data, port).await;
                }
                return Page::ok("application/json", serde_json::to_vec(&data).expect("json"));
            }
            page(&shared, &path)
        })
    })
}

fn page(shared: &Shared, path: &str) -> Page {
    match path {
        "/metrics" => Page::ok(PROMETHEUS_TEXT, metrics(shared)),
        "/healthz" => Page::text(200, "ok\n"),
        "/readyz" => match shared.peers().leader() {
            Some(leader) => Page::text(200, format!("ready, leader {leader}\n")),
            None => Page::text(503, "no tracker leader yet\n"),
        },
        "/console.js" => Page::ok("text/javascript; charset=utf-8", CONSOLE_JS),
        "/console.css" => Page::ok("text/css; charset=utf-8", CONSOLE_CSS),
        "/" | "/index.html" => Page::ok("text/html; charset=utf-8", INDEX_HTML),
        p if p.starts_with("/storage/") => Page::ok("text/html; charset=utf-8", INDEX_HTML),
        _ => Page::not_found(),
    }
}

/// The groups and their storages as 91 and 92 list them.
fn listing(shared: &Shared) -> Vec<(GroupStat, Vec<StorageStat>)> {
    let cluster = shared.cluster();
    let groups = cluster.group_stats(None).unwrap_or_default();
    groups
        .into_iter()
        .map(|g| {
            let storages = cluster.storage_stats(&g.group, None).unwrap_or_default();
            (g, storages)
        })
        .collect()
}

/// `fdfs_exporter`'s synced delay: the newest change any other member made, less what
/// this one has received; 0 when no member changed anything, -1 if never synced.
fn synced_delay(s: &StorageStat, members: &[StorageStat]) -> i64 {
    let newest = members
        .iter()
        .filter(|m| m.id != s.id)
        .map(|m| m.counters.last_source_update)
        .max()
        .unwrap_or(0);
    match (newest, s.counters.last_synced_timestamp) {
        (0, _) => 0,
        (_, synced) if synced <= 0 => -1,
        (newest, synced) => (newest - synced).max(0),
    }
}

fn metrics(shared: &Shared) -> Vec<u8> {
    let mut m = Scrape::default();
    for t in tracker_infos(shared) {
        let l = [("host", t.host.as_str())];
        m.gauge(
            "fastdfs_tracker_is_leader",
            "Whether the tracker is the leader",
            &l,
            t.is_leader as u8 as f64,
        );
        m.gauge(
            "fastdfs_tracker_is_active",
            "Whether the tracker is active",
            &l,
            t.is_active as u8 as f64,
        );
        let c = t.connections;
        for (name, help, v) in [
            (
                "fastdfs_tracker_connections_alloc",
                "Allocated connections",
                c.alloc,
            ),
            (
                "fastdfs_tracker_connections_current",
                "Current connections",
                c.current,
            ),
            (
                "fastdfs_tracker_connections_max",
                "Maximum connections",
                c.max,
            ),
        ] {
            m.gauge(name, help, &l, v as f64);
        }
    }
    let now = unix_now();
    for (g, storages) in listing(shared) {
        let l = [("group", g.group.as_str())];
        let available = (g.free_mb - g.reserved_mb).max(0);
        for (name, help, v) in [
            (
                "fastdfs_group_total_mb",
                "Disk total space in MB",
                g.total_mb,
            ),
            ("fastdfs_group_free_mb", "Disk free space in MB", g.free_mb),
            (
                "fastdfs_group_reserved_mb",
                "Disk reserved space in MB",
                g.reserved_mb,
            ),
            (
                "fastdfs_group_available_mb",
                "Disk available space in MB",
                available,
            ),
            (
                "fastdfs_group_storage_count",
                "Storage server count",
                g.storage_count,
            ),
            (
                "fastdfs_group_readable_server_count",
                "Readable storage server count",
                g.readable_server_count,
            ),
            (
                "fastdfs_group_writable_server_count",
                "Writable storage server count",
                g.writable_server_count,
            ),
            (
                "fastdfs_group_active_count",
                "Active storage server count",
                storages
                    .iter()
                    .filter(|s| s.status == status::ACTIVE)
                    .count() as i64,
            ),
        ] {
            m.gauge(name, help, &l, v as f64);
        }
        if g.current_trunk_file_id >= 0 {
            m.gauge(
                "fastdfs_group_trunk_free_mb",
                "Trunk free space in MB",
                &l,
                g.trunk_free_mb as f64,
            );
        }
        for s in &storages {
            storage_metrics(&mut m, &g.group, s, &storages, now);
        }
    }
    m.render(Some(&shared.requests))
}

fn storage_metrics(m: &mut Scrape, group: &str, s: &StorageStat, all: &[StorageStat], now: i64) {
    let status_code = s.status.to_string();
    let l = [
        ("group", group),
        ("storage_id", s.id.as_str()),
        ("ip", s.ip.as_str()),
        ("status", status_code.as_str()),
    ];
    let c = &s.counters;
    let at = |i: usize| c.counters[i] as f64;
    for (name, help, v) in [
        (
            "fastdfs_storage_total_mb",
            "Disk total space in MB",
            s.total_mb,
        ),
        (
            "fastdfs_storage_free_mb",
            "Disk free space in MB",
            s.free_mb,
        ),
        (
            "fastdfs_storage_reserved_mb",
            "Disk reserved space in MB",
            s.reserved_mb,
        ),
        (
            "fastdfs_storage_available_mb",
            "Disk available space in MB",
            (s.free_mb - s.reserved_mb).max(0),
        ),
        (
            "fastdfs_storage_connections_alloc",
            "Allocated connections",
            c.conn_alloc as i64,
        ),
        (
            "fastdfs_storage_connections_current",
            "Current connections",
            c.conn_current as i64,
        ),
        (
            "fastdfs_storage_connections_max",
            "Maximum connections",
            c.conn_max as i64,
        ),
        (
            "fastdfs_storage_last_heartbeat",
            "Last heartbeat timestamp",
            c.last_heart_beat_time,
        ),
        (
            "fastdfs_storage_heartbeat_delay_seconds",
            "Seconds since last heartbeat",
            now - c.last_heart_beat_time,
        ),
        (
            "fastdfs_storage_last_synced_timestamp",
            "Last synced timestamp",
            c.last_synced_timestamp,
        ),
        (
            "fastdfs_storage_synced_delay_seconds",
            "Synced delay seconds",
            synced_delay(s, all),
        ),
    ] {
        m.gauge(name, help, &l, v as f64);
    }
    use counter::*;
    for (name, help, v) in [
        (
            "fastdfs_storage_upload_total",
            "Total upload operations",
            at(TOTAL_UPLOAD),
        ),
        (
            "fastdfs_storage_upload_success",
            "Successful upload operations",
            at(success(TOTAL_UPLOAD)),
        ),
        (
            "fastdfs_storage_upload_bytes_total",
            "Total uploaded bytes",
            at(TOTAL_UPLOAD_BYTES),
        ),
        (
            "fastdfs_storage_download_total",
            "Total download operations",
            at(TOTAL_DOWNLOAD),
        ),
        (
            "fastdfs_storage_download_success",
            "Successful download operations",
            at(success(TOTAL_DOWNLOAD)),
        ),
        (
            "fastdfs_storage_download_bytes_total",
            "Total downloaded bytes",
            at(TOTAL_DOWNLOAD_BYTES),
        ),
        (
            "fastdfs_storage_delete_total",
            "Total delete operations",
            at(TOTAL_DELETE),
        ),
        (
            "fastdfs_storage_delete_success",
            "Successful delete operations",
            at(success(TOTAL_DELETE)),
        ),
        (
            "fastdfs_storage_append_total",
            "Total append operations",
            at(TOTAL_APPEND),
        ),
        (
            "fastdfs_storage_append_success",
            "Successful append operations",
            at(success(TOTAL_APPEND)),
        ),
        (
            "fastdfs_storage_modify_total",
            "Total modify operations",
            at(TOTAL_MODIFY),
        ),
        (
            "fastdfs_storage_modify_success",
            "Successful modify operations",
            at(success(TOTAL_MODIFY)),
        ),
        (
            "fastdfs_storage_sync_in_bytes_total",
            "Total sync in bytes",
            at(TOTAL_SYNC_IN_BYTES),
        ),
        (
            "fastdfs_storage_sync_out_bytes_total",
            "Total sync out bytes",
            at(TOTAL_SYNC_OUT_BYTES),
        ),
    ] {
        m.counter(name, help, &l, v);
    }
}

/// One problem the console lists first.
fn problem(level: &str, subject: &str, text: String) -> Value {
    json!({ "level": level, "subject": subject, "text": text })
}

fn storage_problems(s: &StorageStat, synced_delay: i64, now: i64, out: &mut Vec<Value>) {
    let who = format!("{} ({}:{})", s.id, s.ip, s.storage_port);
    if s.status != status::ACTIVE {
        let level = match s.status {
            status::OFFLINE | status::DELETED | status::IP_CHANGED | status::NONE => "error",
            _ => "warning",
        };
        out.push(problem(
            level,
            &s.id,
            format!("{who} is {}", status::name(s.status)),
        ));
    }
    if s.total_mb > 0 {
        let free = s.free_mb as f64 / s.total_mb as f64;
        if free < 2.0 * LOW_SPACE {
            out.push(problem(
                if free < LOW_SPACE { "error" } else { "warning" },
                &s.id,
                format!("{who} has {:.1} % free space", free * 100.0),
            ));
        }
    }
    let beat = s.counters.last_heart_beat_time;
    if s.status == status::ACTIVE && beat > 0 && now - beat > HEARTBEAT_LATE_SECS {
        out.push(problem(
            "warning",
            &s.id,
            format!("{who}: last heartbeat {} s ago", now - beat),
        ));
    }
    if synced_delay > SYNC_LATE_SECS {
        out.push(problem(
            "warning",
            &s.id,
            format!("{who} is {synced_delay} s behind its group"),
        ));
    }
}

fn rw_text(mode: u8) -> &'static str {
    match (mode & 4 != 0, mode & 2 != 0) {
        (true, true) => "rw",
        (true, false) => "read",
        (false, true) => "write",
        (false, false) => "none",
    }
}

/// What the console shows: trackers, groups, storages, problems first, and this
/// tracker's request counts and latency histogram (the page charts their rates).
fn cluster_json(shared: &Shared) -> Value {
    let now = unix_now();
    let trackers: Vec<Value> = tracker_infos(shared)
        .into_iter()
        .map(|t| {
            json!({
                "host": t.host,
                "is_leader": t.is_leader,
                "is_active": t.is_active,
                "version": t.version,
                "connections": t.connections.current,
            })
        })
        .collect();
    let (me, leader) = {
        let peers = shared.peers();
        (
            peers.me().map(str::to_string),
            peers.leader().map(str::to_string),
        )
    };
    let mut problems = Vec::new();
    if leader.is_none() {
        problems.push(problem(
            "error",
            "trackers",
            "no tracker leader yet".to_string(),
        ));
    }
    let mut groups = Vec::new();
    for (g, storages) in listing(shared) {
        let mut members = Vec::new();
        for s in &storages {
            let delay = synced_delay(s, &storages);
            storage_problems(s, delay, now, &mut problems);
            let c = &s.counters.counters;
            members.push(json!({
                "id": s.id,
                "ip": s.ip,
                "port": s.storage_port,
                "status": status::name(s.status),
                "active": s.status == status::ACTIVE,
                "rw": rw_text(s.rw_mode),
                "trunk_server": s.is_trunk_server,
                "version": s.version,
                "join_time": s.join_time,
                "up_time": s.up_time,
                "total_mb": s.total_mb,
                "free_mb": s.free_mb,
                "reserved_mb": s.reserved_mb,
                "store_path_count": s.store_path_count,
                "sync_src_id": s.sync_src_id,
                "last_heartbeat": s.counters.last_heart_beat_time,
                "synced_delay": delay,
                "connections": s.counters.conn_current,
                "uploads": c[counter::TOTAL_UPLOAD],
                "downloads": c[counter::TOTAL_DOWNLOAD],
                "deletes": c[counter::TOTAL_DELETE],
                "upload_bytes": c[counter::TOTAL_UPLOAD_BYTES],
                "download_bytes": c[counter::TOTAL_DOWNLOAD_BYTES],
                "sync_in_bytes": c[counter::TOTAL_SYNC_IN_BYTES],
                "sync_out_bytes": c[counter::TOTAL_SYNC_OUT_BYTES],
            }));
        }
        groups.push(json!({
            "name": g.group,
            "total_mb": g.total_mb,
            "free_mb": g.free_mb,
            "reserved_mb": g.reserved_mb,
            "trunk_free_mb": (g.current_trunk_file_id >= 0).then_some(g.trunk_free_mb),
            "storage_count": g.storage_count,
            "active_count": storages.iter().filter(|s| s.status == status::ACTIVE).count(),
            "writable_count": g.writable_server_count,
            "storages": members,
        }));
    }
    problems.sort_by_key(|p| p["level"] != "error");
    let requests = shared.requests.summary();
    json!({
        "now": now,
        "tracker": me,
        "leader": leader,
        "trackers": trackers,
        "groups": groups,
        "problems": problems,
        "requests": {
            "by_command": requests.by_command,
            "count": requests.count,
            "latency_buckets": requests.buckets,
        },
    })
}

/// The commands whose latency the console charts per storage.
const CHARTED: [&str; 2] = ["upload_file", "download_file"];
/// How long the console waits for a storage's `/metrics`.
const STORAGE_SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
/// The most of a storage's `/metrics` read.
const STORAGE_SCRAPE_MAX: u64 = 4 << 20;

/// Adds each storage's latency histograms (read from its `/metrics` on `port`) to the
/// console's data: `latency` per storage, `null` where it could not be read.
async fn add_storage_latency(data: &mut Value, port: u16) {
    let mut tasks = tokio::task::JoinSet::new();
    let groups = data["groups"].as_array().cloned().unwrap_or_default();
    for (gi, g) in groups.iter().enumerate() {
        let members = g["storages"].as_array().cloned().unwrap_or_default();
        for (si, s) in members.iter().enumerate() {
            let ip = s["ip"].as_str().unwrap_or_default().to_string();
            tasks.spawn(async move {
                let text = tokio::time::timeout(STORAGE_SCRAPE_TIMEOUT, scrape(&ip, port))
                    .await
                    .ok()
                    .and_then(Result::ok);
                (gi, si, text.map(|t| latency_histograms(&t)))
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((gi, si, latency)) = done else {
            continue;
        };
        data["groups"][gi]["storages"][si]["latency"] = latency.unwrap_or(Value::Null);
    }
}

/// `GET /metrics` of a storage, the body of a 200.
async fn scrape(ip: &str, port: u16) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => ip.to_string(),
    };
    let mut stream = tokio::net::TcpStream::connect(format!("{host}:{port}")).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream
        .take(STORAGE_SCRAPE_MAX)
        .read_to_end(&mut raw)
        .await?;
    let text = String::from_utf8_lossy(&raw);
    match text.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
        {
            Ok(body.to_string())
        }
        _ => Err(std::io::Error::other("not a 200 answer")),
    }
}

/// From Prometheus text: `{command: {"buckets": [[le, cumulative count]...], "count": n}}`
/// of `fastdfs_request_duration_seconds` for the charted commands (`+Inf` left out:
/// `count` holds it).
fn latency_histograms(text: &str) -> Value {
    let mut out = serde_json::Map::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("fastdfs_request_duration_seconds_") else {
            continue;
        };
        let Some((kind, rest)) = rest.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"'))
        };
        let Some(command) = label("command").filter(|c| CHARTED.contains(c)) else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let entry = out
            .entry(command.to_string())
            .or_insert_with(|| json!({ "buckets": [], "count": 0 }));
        match kind {
            "count" => entry["count"] = json!(v as u64),
            "bucket" => {
                if let Some(le) = label("le").and_then(|le| le.parse::<f64>().ok()) {
                    if le.is_finite() {
                        entry["buckets"]
                            .as_array_mut()
                            .expect("array")
                            .push(json!([le, v as u64]));
                    }
                }
            }
            _ => {}
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdfs_proto::msg::StorageCounters;

    fn storage(id: &str, source_update: i64, synced: i64) -> StorageStat {
        StorageStat {
            status: status::ACTIVE,
            rw_mode: 6,
            id: id.into(),
            ip: id.into(),
            sync_src_id: String::new(),
            version: String::new(),
            join_time: 0,
            up_time: 0,
            total_mb: 100,
            free_mb: 5,
            reserved_mb: 0,
            upload_priority: 10,
            store_path_count: 1,
            subdir_count_per_path: 256,
            current_write_path: 0,
            storage_port: 23000,
            counters: StorageCounters {
                last_source_update: source_update,
                last_synced_timestamp: synced,
                ..StorageCounters::default()
            },
            is_trunk_server: false,
        }
    }

    #[test]
    fn latency_read_from_a_storage_scrape() {
        let text = "# TYPE fastdfs_request_duration_seconds histogram\n\
            fastdfs_request_duration_seconds_bucket{command=\"upload_file\",le=\"0.001\"} 3\n\
            fastdfs_request_duration_seconds_bucket{command=\"upload_file\",le=\"+Inf\"} 5\n\
            fastdfs_request_duration_seconds_count{command=\"upload_file\"} 5\n\
            fastdfs_request_duration_seconds_count{command=\"sync_create_file\"} 9\n\
            fastdfs_requests_total{command=\"upload_file\",result=\"ok\"} 5\n";
        let v = latency_histograms(text);
        assert_eq!(
            v,
            json!({"upload_file": {"buckets": [[0.001, 3]], "count": 5}})
        );
    }

    #[test]
    fn synced_delay_as_the_exporter_computes_it() {
        let a = storage("a", 1000, 0);
        let b = storage("b", 0, 990);
        let all = [a.clone(), b.clone()];
        assert_eq!(synced_delay(&b, &all), 10);
        // `a` never received anything, but `b` changed nothing: no delay.
        assert_eq!(synced_delay(&a, &all), 0);
        let c = storage("c", 1000, 0);
        assert_eq!(synced_delay(&c, &[a.clone(), c.clone()]), -1);
        let ahead = storage("d", 0, 2000);
        assert_eq!(synced_delay(&ahead, &[a, ahead.clone()]), 0);
    }

    #[test]
    fn problems_name_status_space_and_lag() {
        let mut offline = storage("s1", 0, 0);
        offline.status = status::OFFLINE;
        let mut out = Vec::new();
        storage_problems(&offline, 120, 1000, &mut out);
        let texts: Vec<String> = out.iter().map(|p| p["text"].to_string()).collect();
        assert_eq!(out[0]["level"], "error");
        assert!(texts[0].contains("is OFFLINE"), "{texts:?}");
        assert!(texts[1].contains("5.0 % free"), "{texts:?}");
        assert!(texts[2].contains("120 s behind"), "{texts:?}");
    }
}
