//! The storage's HTTP side (`metrics_listen`):
//!
//! - `/metrics`: this storage's own view, in Prometheus text: requests by command and
//!   result with their latency; bytes moved; connections; per store path space, state
//!   and I/O errors; replication per peer (backlog in bytes and lag in seconds, read
//!   from the binlog and the peers' marks); records replicated; flushes. (The
//!   `fdfs_exporter` names for storages come from the trackers, which gather every
//!   storage's counters.)
//! - `/healthz`: 200 while the process serves and at least one store path is in
//!   service, 503 when every store path is out of service;
//! - `/readyz`: 200 once the trackers list this storage ACTIVE in its group (it takes
//!   uploads and serves reads), 503 before and after that.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use fdfs_proto::msg::{counter, StorageBrief};
use fdfs_proto::status;
use fdfs_runtime::http::{Handler, Page, PROMETHEUS_TEXT};
use fdfs_runtime::metrics::Scrape;
use fdfs_runtime::unix_now;

use crate::binlog::reader::BinlogReader;
use crate::binlog::{self, BinlogPos};
use crate::state::Storage;
use crate::sync::mark::{self, Mark};

pub fn handler(st: Arc<Storage>) -> Handler {
    Arc::new(move |path, _query| {
        let st = st.clone();
        Box::pin(async move {
            match path.as_str() {
                "/metrics" => {
                    // The replication figures read the binlog and the marks.
                    let body = tokio::task::spawn_blocking(move || metrics(&st))
                        .await
                        .unwrap_or_default();
                    Page::ok(PROMETHEUS_TEXT, body)
                }
                "/healthz" => {
                    if st.store.paths().iter().all(|p| p.is_failed()) {
                        Page::text(503, "every store path is out of service\n")
                    } else {
                        Page::text(200, "ok\n")
                    }
                }
                "/readyz" => match own_status(&st) {
                    Some(status::ACTIVE) => Page::text(200, "ready: ACTIVE\n"),
                    Some(s) => Page::text(503, format!("not ready: {}\n", status::name(s))),
                    None => Page::text(503, "not ready: not yet listed by a tracker\n"),
                },
                _ => Page::not_found(),
            }
        })
    })
}

fn is_me(st: &Storage, b: &StorageBrief) -> bool {
    match st.my_id() {
        Some(me) => b.id == me || (b.ip == me && b.port == st.cfg.port as u32),
        None => false,
    }
}

/// This storage's status as the trackers last listed it.
fn own_status(st: &Storage) -> Option<u8> {
    st.sync
        .members()
        .iter()
        .find(|b| is_me(st, b))
        .map(|b| b.status)
}

/// Bytes of binlog from `from` to `to`.
fn backlog(dir: &std::path::Path, from: BinlogPos, to: BinlogPos) -> u64 {
    if from >= to {
        return 0;
    }
    if from.index == to.index {
        return to.offset - from.offset;
    }
    let mut n = binlog::file_size(dir, from.index)
        .unwrap_or(0)
        .saturating_sub(from.offset);
    for i in from.index + 1..to.index {
        n += binlog::file_size(dir, i).unwrap_or(0);
    }
    n + to.offset
}

/// How long the oldest change a peer has not received has been waiting (0 if none).
fn lag_seconds(dir: &std::path::Path, from: BinlogPos, end: BinlogPos, now: i64) -> i64 {
    if from >= end {
        return 0;
    }
    let mut reader = BinlogReader::new(dir, from);
    match reader.read_batch(1, end.index) {
        Ok(batch) => batch
            .first()
            .map_or(0, |l| (now - l.record.timestamp).max(0)),
        Err(_) => 0,
    }
}

fn metrics(st: &Storage) -> Vec<u8> {
    let mut m = Scrape::default();
    let now = unix_now();
    let snap = st.stats.snapshot();
    m.gauge(
        "fastdfs_connections_current",
        "Client and peer connections open now",
        &[],
        snap.conn_current as f64,
    );
    m.gauge(
        "fastdfs_connections_max",
        "Most connections open at once since the start",
        &[],
        snap.conn_max as f64,
    );
    m.gauge(
        "fastdfs_start_time_seconds",
        "When this storage started (unix time)",
        &[],
        st.up_time as f64,
    );
    for (kind, index) in [
        ("upload", counter::TOTAL_UPLOAD_BYTES),
        ("append", counter::TOTAL_APPEND_BYTES),
        ("modify", counter::TOTAL_MODIFY_BYTES),
        ("download", counter::TOTAL_DOWNLOAD_BYTES),
        ("sync_in", counter::TOTAL_SYNC_IN_BYTES),
        ("sync_out", counter::TOTAL_SYNC_OUT_BYTES),
    ] {
        m.counter(
            "fastdfs_transfer_bytes_total",
            "File content bytes moved, by kind (kept across restarts, as upstream's counters)",
            &[("kind", kind)],
            snap.counters[index] as f64,
        );
    }
    for (i, p) in st.store.paths().iter().enumerate() {
        let index = format!("{i}");
        let root = p.root.display().to_string();
        let l = [("path", index.as_str()), ("root", root.as_str())];
        m.gauge(
            "fastdfs_store_path_total_bytes",
            "Size of the store path's file system",
            &l,
            (p.total_mb() << 20) as f64,
        );
        m.gauge(
            "fastdfs_store_path_free_bytes",
            "Free space on the store path (0 while out of service)",
            &l,
            (p.free_mb() << 20) as f64,
        );
        m.gauge(
            "fastdfs_store_path_failed",
            "1 while the store path is out of service after an I/O error",
            &l,
            p.is_failed() as u8 as f64,
        );
        m.counter(
            "fastdfs_store_path_io_errors_total",
            "I/O errors met on the store path",
            &l,
            p.io_errors.load(Ordering::Relaxed) as f64,
        );
    }
    let dir = st.binlog.dir().to_path_buf();
    let end = st.binlog.end();
    m.gauge(
        "fastdfs_binlog_index",
        "Index of the binlog file being written",
        &[],
        end.index as f64,
    );
    m.gauge(
        "fastdfs_binlog_offset_bytes",
        "Size of the binlog file being written",
        &[],
        end.offset as f64,
    );
    for b in st.sync.members() {
        if is_me(st, &b) {
            continue;
        }
        let from = st.sync.progress_of(&b.id).or_else(|| {
            Mark::load(&mark::path(&dir, &b, st.by_server_id()))
                .ok()
                .flatten()
                .map(|mk| mk.position())
        });
        let peer = format!("{}:{}", b.ip, b.port);
        let l = [("peer_id", b.id.as_str()), ("peer", peer.as_str())];
        m.gauge(
            "fastdfs_replication_peer_status",
            "The peer's status code as the trackers list it (7: ACTIVE)",
            &l,
            b.status as f64,
        );
        let Some(from) = from else {
            continue;
        };
        m.gauge(
            "fastdfs_replication_backlog_bytes",
            "Binlog bytes the peer has not received yet",
            &l,
            backlog(&dir, from, end) as f64,
        );
        m.gauge(
            "fastdfs_replication_lag_seconds",
            "Age of the oldest change the peer has not received (0: up to date)",
            &l,
            lag_seconds(&dir, from, end, now) as f64,
        );
    }
    for (source, ts) in st.sync.received().1 {
        m.gauge(
            "fastdfs_replication_received_timestamp",
            "Newest change received from each source storage (its clock)",
            &[("source", source.as_str())],
            ts as f64,
        );
    }
    let c = &st.sync.counters;
    for (result, v) in [
        ("sent", &c.sent),
        ("skipped", &c.skipped),
        ("rejected", &c.rejected),
        ("malformed", &c.malformed),
    ] {
        m.counter(
            "fastdfs_replication_records_total",
            "Binlog records handled by the senders, by result",
            &[("result", result)],
            v.load(Ordering::Relaxed) as f64,
        );
    }
    m.counter(
        "fastdfs_flushes_total",
        "Flushes to disk before a reply (fsync_before_reply)",
        &[],
        crate::durability::FLUSHES.load(Ordering::Relaxed) as f64,
    );
    m.render(Some(&st.requests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_spans_binlog_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(binlog::file_name(dir.path(), 0), vec![b'x'; 100]).unwrap();
        std::fs::write(binlog::file_name(dir.path(), 1), vec![b'x'; 40]).unwrap();
        let at = |index, offset| BinlogPos { index, offset };
        assert_eq!(backlog(dir.path(), at(0, 30), at(1, 40)), 70 + 40);
        assert_eq!(backlog(dir.path(), at(1, 10), at(1, 40)), 30);
        assert_eq!(backlog(dir.path(), at(1, 40), at(1, 40)), 0);
    }
}
