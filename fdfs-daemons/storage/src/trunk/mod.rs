//! Trunk files (`use_trunk_file = true` in the trackers' configuration): small files
//! packed into large preallocated files, as upstream stores them.
//!
//! One storage of each group, the *trunk server* (chosen by the leader tracker and
//! announced in beat replies), hands out regions of the trunk files; every other member
//! asks it for one (27), writes the content and its 24-byte header into its own copy of
//! the trunk file, and confirms (28); a deleted file's region is zeroed and given back
//! (29). Copies reach the other members by ordinary replication, each written into the
//! same region of their own copy of the trunk file. The trunk server keeps what it hands
//! out in its trunk binlog ([`binlog`]) and sends the lines to every peer (30,
//! [`push`]), so whichever member becomes trunk server next knows what is free.
//!
//! Where upstream loses files, this storage does not:
//! - before writing, a region is checked free on this storage's disk (upstream's rule);
//!   one that is not is reported taken (28 with EEXIST, so the trunk server never hands
//!   it out again) and another one asked for, so two trunk servers that both hand out
//!   a region after a change of trunk server do not make two files share it;
//! - a new trunk server checks every region its binlog says is free against its own
//!   copy of the trunk files and takes out those a file holds;
//! - repeated binlog lines (a binlog sent again) are expected, not an error;
//! - requests to the trunk server go over kept connections (a few, reused), never a
//!   new connection each;
//! - the trunk binlog is flushed when a term ends cleanly; a term that did not end so
//!   (a crash) is not trusted by the next one, which then leaves alone what the binlog
//!   says is free, as after another storage's term.
//!
//! With `fsync_before_reply`, a trunk file is flushed once for all the slots written
//! into it since its last flush (a group commit): concurrent small uploads share one
//! flush.

pub mod alloc;
pub mod binlog;
pub mod flusher;
pub mod housekeeping;
pub mod push;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use fdfs_proto::config::IniFile;
use fdfs_proto::errno;
use fdfs_proto::msg::{StorageBrief, TrunkAllocSpace, TrunkFreeSpace, TrunkSlotBody};
use fdfs_proto::trunk::{slot_is_free, Slot, SlotHeader, SLOT_HEADER_LEN};
use fdfs_runtime::{unix_now, Connection, Error};
use tracing::{info, warn};

use crate::init_flag::InitFlag;
use crate::state::Storage;
use alloc::{Allocator, NeedTrunkFile, Sizes};
use binlog::{Line, TrunkBinlog};

/// The trunk settings the trackers give (75).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub sizes: Sizes,
    pub binlog_max_backups: u32,
    pub housekeeping: housekeeping::Schedule,
}

impl Params {
    /// `None` when the trackers do not use trunk files.
    pub fn from_parameters(ini: &IniFile) -> Option<Params> {
        let g = ini.global();
        if !g.bool("use_trunk_file", false).unwrap_or(false) {
            return None;
        }
        let size = |key: &str, default: u64| g.size(key, default).unwrap_or(default);
        let trunk_file_size = size("trunk_file_size", 64 << 20).clamp(4 << 20, i32::MAX as u64);
        let alignment = size("trunk_alloc_alignment_size", 0).min(i32::MAX as u64) as u32;
        let slot_min_size = (size("slot_min_size", 256).min(64 * 1024) as u32).max(alignment);
        let slot_max_size = size("slot_max_size", trunk_file_size / 4)
            .min(trunk_file_size / 2)
            .max(slot_min_size as u64 + 1) as u32;
        Some(Params {
            sizes: Sizes {
                slot_min_size,
                slot_max_size,
                trunk_file_size: trunk_file_size as u32,
                alignment,
            },
            binlog_max_backups: g.int("trunk_binlog_max_backups", 0).unwrap_or(0).max(0) as u32,
            housekeeping: housekeeping::Schedule::from_parameters(ini),
        })
    }
}

/// Which storage hands out trunk space, as the leader tracker last said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Server {
    /// Not announced since start-up.
    Unknown,
    /// The tracker says there is none.
    Nobody,
    Me,
    Peer(SocketAddr),
}

/// A trunk file open for writing, with its group flush.
struct TrunkFile {
    file: File,
    /// Writes finished into it (each takes a number).
    written: AtomicU64,
    /// The writes the flushes done so far covered.
    flushed: AtomicU64,
}

impl TrunkFile {
    /// Flushes at least every write numbered `upto` or below; a flush covers every
    /// write finished before it started. (More flushes side by side were measured:
    /// they cost more CPU than the waits they save, so the flusher has one thread.)
    fn flush_through(&self, upto: u64) -> io::Result<()> {
        if self.flushed.load(Ordering::Acquire) >= upto {
            return Ok(());
        }
        let target = self.written.load(Ordering::Acquire);
        crate::durability::counted(self.file.sync_data())?;
        self.flushed.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }
}

/// A written slot to be flushed: its file and its write's number.
pub struct Written {
    file: Arc<TrunkFile>,
    number: u64,
}

impl Written {
    /// Flushes it, with whatever else was written into its trunk file (blocking).
    pub fn flush(&self) -> io::Result<()> {
        self.file.flush_through(self.number)
    }

    /// Adds it to `newest` (the newest write of each trunk file): flushing those
    /// covers every write added.
    pub(crate) fn keep_newest(self, newest: &mut Vec<Written>) {
        match newest.iter_mut().find(|w| Arc::ptr_eq(&w.file, &self.file)) {
            Some(w) if w.number < self.number => *w = self,
            Some(_) => {}
            None => newest.push(self),
        }
    }
}

pub struct Trunk {
    params: RwLock<Option<Params>>,
    binlog: OnceLock<Arc<TrunkBinlog>>,
    server: RwLock<Server>,
    /// The allocator, while this storage is the trunk server (and has loaded it).
    role: tokio::sync::Mutex<Option<Allocator>>,
    /// Counts changes of role; a push task ends when it moves.
    pub epoch: AtomicU64,
    /// Set while the allocator is being loaded.
    loading: std::sync::atomic::AtomicBool,
    /// The trunk binlog's size right after the last compression.
    compacted_size: AtomicU64,
    current_id: AtomicU32,
    init: OnceLock<Arc<Mutex<InitFlag>>>,
    files: Arc<OpenFiles>,
    /// Idle connections to a peer trunk server, kept for the next request.
    conns: Mutex<Vec<(SocketAddr, Connection)>>,
    /// The group commit of uploads into trunk files.
    pub flusher: flusher::Flusher,
    /// Set when the daemon stops and its requests are done: the pushes send the last
    /// lines of the trunk binlog to the peers, then end.
    pub requests_done: tokio::sync::watch::Sender<bool>,
}

impl Default for Trunk {
    fn default() -> Self {
        Trunk {
            params: RwLock::new(None),
            binlog: OnceLock::new(),
            server: RwLock::new(Server::Unknown),
            role: tokio::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
            loading: std::sync::atomic::AtomicBool::new(false),
            compacted_size: AtomicU64::new(u64::MAX),
            current_id: AtomicU32::new(0),
            init: OnceLock::new(),
            files: Arc::default(),
            conns: Mutex::new(Vec::new()),
            flusher: flusher::Flusher::default(),
            requests_done: tokio::sync::watch::Sender::new(false),
        }
    }
}

/// Attempts at an upload's slot before its error goes to the client (a slot found
/// taken is reported and another one asked for).
pub const ALLOC_TRIES: usize = 3;

/// Idle connections kept to the trunk server.
const KEPT_CONNECTIONS: usize = 32;

/// Trunk file ids skipped by a trunk server that takes over from another one: ids that
/// one may have used without telling the trackers yet.
const UNSURE_ID_GAP: u32 = 8;

impl Trunk {
    /// Shares the init flag (where the newest trunk file id is kept).
    pub fn attach_init(&self, init: Arc<Mutex<InitFlag>>) {
        let id = init.lock().unwrap().current_trunk_file_id;
        self.current_id.fetch_max(id, Ordering::AcqRel);
        let _ = self.init.set(init);
    }

    pub fn params(&self) -> Option<Params> {
        *self.params.read().unwrap()
    }

    /// Takes the trackers' settings; opens the trunk binlog once trunk files are on.
    pub fn set_params(&self, base_path: &Path, params: Option<Params>) -> io::Result<()> {
        if params.is_some() && self.binlog.get().is_none() {
            let log = TrunkBinlog::open(base_path)?;
            let _ = self.binlog.set(Arc::new(log));
        }
        *self.params.write().unwrap() = params;
        Ok(())
    }

    pub fn binlog(&self) -> Option<&Arc<TrunkBinlog>> {
        self.binlog.get()
    }

    /// Whether an upload of `size` bytes goes into a trunk file.
    pub fn takes(&self, size: u64) -> bool {
        self.params()
            .is_some_and(|p| size + SLOT_HEADER_LEN as u64 <= p.sizes.slot_max_size as u64)
    }

    pub fn is_server(&self) -> bool {
        *self.server.read().unwrap() == Server::Me
    }

    /// The newest trunk file id (each tracker session reports it when it moves, 73).
    pub fn current_id(&self) -> u32 {
        self.current_id.load(Ordering::Acquire)
    }

    /// Raises the newest trunk file id to what the tracker knows (72).
    pub async fn note_fetched(&self, id: u32) {
        if self.current_id.fetch_max(id, Ordering::AcqRel) < id {
            if let Err(e) = self.save_current_id(id).await {
                warn!("cannot save the trunk file id in the init flag: {e}");
            }
        }
    }

    /// Changes the init flag and saves it (flushed), off the async threads.
    async fn save_init(
        &self,
        change: impl FnOnce(&mut InitFlag) + Send + 'static,
    ) -> io::Result<()> {
        let (Some(init), Some(base)) = (self.init.get().cloned(), INIT_BASE.get()) else {
            return Ok(());
        };
        crate::durability::blocking(move || {
            let mut flag = init.lock().unwrap();
            change(&mut flag);
            flag.save(base)
        })
        .await
    }

    /// Saves a new newest trunk file id, before any file of that id is made.
    async fn save_current_id(&self, id: u32) -> io::Result<()> {
        self.save_init(move |f| f.current_trunk_file_id = f.current_trunk_file_id.max(id))
            .await
    }

    /// When the trunk binlog was last compressed (the init flag's
    /// `trunk_last_compress_time`).
    pub fn last_compress_time(&self) -> i64 {
        self.init
            .get()
            .map_or(0, |i| i.lock().unwrap().trunk_last_compress_time)
    }

    /// `trunk_create_file_advance`: creates trunk files until `threshold` bytes are free
    /// to hand out; returns how many.
    pub async fn create_ahead(&self, st: &Storage, threshold: u64) -> Result<usize, u8> {
        let params = self.params().ok_or(errno::EINVAL)?;
        let size = params.sizes.trunk_file_size as u64;
        let mut role = self.role.lock().await;
        let alloc = role.as_mut().ok_or(errno::EAGAIN)?;
        let free = alloc.free_bytes() - alloc.unsure_bytes();
        let count = (threshold.saturating_sub(free) / size) as usize;
        let mut lines = Vec::new();
        for _ in 0..count {
            let path = st.store.choose_path(-1, size)?.index as u8;
            let file = self.create_trunk_file(st, path, &params).await?;
            alloc.add_free(file, unix_now(), &mut lines)?;
        }
        self.append(&lines)?;
        Ok(count)
    }

    /// Rewrites the trunk binlog as the regions it adds up to (merged first with
    /// `merge`; with `delete_unused`, wholly free trunk files removed here), and has
    /// every peer sent it afresh. Returns the binlog's sizes before and after; `None`
    /// when nothing was written since the last compression.
    pub async fn compact(
        &self,
        st: &Storage,
        merge: bool,
        delete_unused: bool,
    ) -> io::Result<Option<(u64, u64)>> {
        let not_now = || io::Error::other("not the trunk server");
        let params = self.params().ok_or_else(not_now)?;
        let log = self.binlog.get().ok_or_else(not_now)?.clone();
        let mut role = self.role.lock().await;
        let alloc = role.as_mut().ok_or_else(not_now)?;
        if log.size()? == self.compacted_size.load(Ordering::Acquire) {
            return Ok(None);
        }
        // The pushes to peers stop first (they save no mark once the epoch moved).
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let unused = if merge || delete_unused {
            alloc.merge(delete_unused.then_some(params.sizes.trunk_file_size))
        } else {
            Vec::new()
        };
        let now = unix_now();
        let lines = alloc.snapshot(now);
        let sizes = crate::durability::blocking(move || log.replace(&lines)).await?;
        self.compacted_size.store(sizes.1, Ordering::Release);
        for file in unused {
            if let Some(path) = trunk_path(st, &file) {
                self.files.0.lock().unwrap().remove(&path);
                match std::fs::remove_file(&path) {
                    Ok(()) => info!("removed unused trunk file {}", path.display()),
                    Err(e) => warn!("cannot remove unused trunk file {}: {e}", path.display()),
                }
            }
        }
        drop(role);
        // The peers' marks point into the old binlog: each is sent the new one whole.
        if let Some(log) = self.binlog.get().cloned() {
            crate::durability::blocking(move || log.delete_marks()).await?;
        }
        self.save_init(move |f| f.trunk_last_compress_time = now)
            .await?;
        Ok(Some(sizes))
    }

    /// Free trunk space in MB (74), while this storage is the trunk server.
    pub async fn free_mb(&self) -> Option<i64> {
        let role = self.role.lock().await;
        role.as_ref().map(|a| (a.free_bytes() >> 20) as i64)
    }

    /// A beat reply named the trunk server. Returns true when this storage just
    /// became it (the caller then asks the tracker for the newest trunk file id and
    /// calls [`Trunk::take_role`]).
    pub async fn announced(&self, st: &Storage, brief: &StorageBrief) -> bool {
        let me = !brief.ip.is_empty()
            && (st.my_id().is_some_and(|id| id == brief.id)
                || st
                    .my_ip()
                    .is_some_and(|ip| brief.ip.parse().ok() == Some(ip)))
            && brief.port == st.cfg.port as u32;
        let new = if brief.ip.is_empty() || brief.port == 0 {
            Server::Nobody
        } else if me {
            Server::Me
        } else {
            match brief.ip.parse() {
                Ok(ip) => Server::Peer(SocketAddr::new(ip, brief.port as u16)),
                Err(_) => {
                    warn!("trunk server {}:{} is not an address", brief.ip, brief.port);
                    Server::Nobody
                }
            }
        };
        let old = std::mem::replace(&mut *self.server.write().unwrap(), new.clone());
        if old == new {
            return false;
        }
        match &new {
            Server::Me => info!("this storage is now the trunk server of its group"),
            Server::Peer(a) => info!("trunk server is {a}"),
            _ => info!("the group has no trunk server"),
        }
        if old == Server::Me {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.end_term().await;
            info!("no longer the trunk server: stopped handing out trunk space");
        }
        if matches!(new, Server::Peer(_)) {
            // Another storage hands out space now: this binlog may miss its lines.
            if let Some(log) = self.binlog.get() {
                if let Err(e) = log.unmark_mine() {
                    warn!("cannot write the trunk binlog's mark: {e}");
                }
            }
        }
        new == Server::Me
    }

    /// Becomes the trunk server: rebuilds what is free from the trunk binlog, and
    /// takes out every region a file holds on this storage's disk.
    pub async fn take_role(&self, st: &Arc<Storage>) {
        if self.loading.swap(true, Ordering::AcqRel) {
            return;
        }
        self.load_role(st).await;
        self.loading.store(false, Ordering::Release);
    }

    /// Whether this storage is the trunk server but has no allocator (its load failed):
    /// the caller tries [`Trunk::take_role`] again.
    pub async fn needs_role(&self) -> bool {
        self.is_server()
            && !self.loading.load(Ordering::Acquire)
            && self.role.lock().await.is_none()
    }

    async fn load_role(&self, st: &Arc<Storage>) {
        let (Some(params), Some(log)) = (self.params(), self.binlog.get().cloned()) else {
            return;
        };
        let lines = match crate::durability::blocking(move || log.lines()).await {
            Ok(l) => l,
            Err(e) => {
                warn!("cannot read the trunk binlog: {e}; handing out no trunk space yet");
                return;
            }
        };
        let Some(log) = self.binlog.get() else {
            return;
        };
        // New trunk files get ids past every one the binlog names.
        if let Some(max) = lines.iter().map(|l| l.slot.trunk_id).max() {
            if self.current_id.fetch_max(max, Ordering::AcqRel) < max {
                if let Err(e) = self.save_current_id(max).await {
                    warn!("cannot save the trunk file id in the init flag: {e}");
                }
            }
        }
        let sizes = params.sizes;
        // The binlog of another trunk server may lack its last lines (it stopped before
        // sending them): a file may sit in a region they would have taken, here or on
        // a peer this storage has not heard from yet. Such regions are not handed out;
        // new trunk files are made instead, with ids past any it may have made.
        let trusted = log.is_mine();
        if !trusted && !lines.is_empty() {
            let skipped = self.current_id.fetch_add(UNSURE_ID_GAP, Ordering::AcqRel);
            if let Err(e) = self.save_current_id(skipped + UNSURE_ID_GAP).await {
                warn!("cannot save the trunk file id in the init flag: {e}");
            }
        }
        let check = st.clone();
        let loaded = crate::durability::blocking(move || {
            let (mut a, report) = Allocator::replay(lines, &sizes, trusted);
            let mut taken = Vec::new();
            let now = unix_now();
            for slot in a.free_slots() {
                if !check.trunk.slot_free_on_disk(&check, &slot) {
                    a.quarantine(&slot, now, &mut taken);
                }
            }
            Ok((a, report, taken))
        })
        .await;
        let (alloc, report, taken) = match loaded {
            Ok(x) => x,
            Err(e) => {
                warn!("cannot load the trunk allocator: {e}");
                return;
            }
        };
        if !taken.is_empty() {
            warn!(
                "{} region(s) the trunk binlog says are free hold files here: taken out of use",
                taken.len()
            );
            if let Err(e) = log.append(&taken) {
                warn!("cannot write the trunk binlog: {e}");
            }
        }
        // Trusted again only once this term ends cleanly.
        if let Err(e) = log.unmark_mine() {
            warn!("cannot write the trunk binlog's mark: {e}");
        }
        info!(
            "trunk server: {} binlog line(s), {} MB free ({} MB of it left alone){}",
            report.lines,
            alloc.free_bytes() >> 20,
            alloc.unsure_bytes() >> 20,
            if report.repeated + report.unknown + report.dropped > 0 {
                format!(
                    " ({} repeated, {} unknown, {} overlapping line(s) ignored)",
                    report.repeated, report.unknown, report.dropped
                )
            } else {
                String::new()
            }
        );
        if self.is_server() {
            *self.role.lock().await = Some(alloc);
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Whether this storage's copy of `slot` holds no file (a missing trunk file
    /// holds none).
    fn slot_free_on_disk(&self, st: &Storage, slot: &Slot) -> bool {
        let Some(path) = trunk_path(st, slot) else {
            return false;
        };
        let Ok(file) = File::open(path) else {
            return true;
        };
        let mut raw = [0u8; SLOT_HEADER_LEN];
        match file.read_exact_at(&mut raw, slot.offset as u64) {
            Ok(()) => slot_is_free(&raw),
            Err(e) => e.kind() == io::ErrorKind::UnexpectedEof,
        }
    }

    /// The trunk server's side of 27: a slot of `size` bytes in store path `path`.
    pub async fn alloc_here(&self, st: &Storage, path: u8, size: u32) -> Result<Slot, u8> {
        let params = self.params().ok_or(errno::EINVAL)?;
        if size > params.sizes.slot_max_size || path as usize >= st.store.paths().len() {
            return Err(errno::EINVAL);
        }
        let mut role = self.role.lock().await;
        // Still loading: try again shortly.
        let alloc = role.as_mut().ok_or(errno::EAGAIN)?;
        let now = unix_now();
        let mut lines = Vec::new();
        let slot = match alloc.alloc(path, size, &params.sizes, now, &mut lines) {
            Ok(slot) => slot,
            Err(NeedTrunkFile) => {
                let file = self.create_trunk_file(st, path, &params).await?;
                alloc.alloc_in_new(file, size, &params.sizes, now, &mut lines)?
            }
        };
        // A held slot is logged as free: nothing to flush before the answer.
        self.append(&lines)?;
        Ok(slot)
    }

    /// The trunk server's side of 28.
    pub async fn confirm_here(&self, slot: &Slot, status: u8) -> Result<(), u8> {
        let mut role = self.role.lock().await;
        let alloc = role.as_mut().ok_or(errno::EINVAL)?;
        let mut lines = Vec::new();
        alloc.confirm(slot, status, unix_now(), &mut lines)?;
        if status == errno::EEXIST {
            warn!("trunk slot {slot:?} already holds a file: taken out of use");
        }
        // Not flushed here: a term that ends in a crash is not trusted by the next one
        // (see `take_role`), so a lost line cannot free a slot a file holds.
        self.append(&lines).map(|_| ())
    }

    /// The trunk server's side of 29.
    pub async fn free_here(&self, slot: Slot) -> Result<(), u8> {
        let params = self.params().ok_or(errno::EINVAL)?;
        let mut role = self.role.lock().await;
        let alloc = role.as_mut().ok_or(errno::EINVAL)?;
        let mut lines = Vec::new();
        alloc.free(slot, &params.sizes, unix_now(), &mut lines)?;
        self.append(&lines).map(|_| ())
    }

    /// Appends allocator lines to the trunk binlog (under the allocator's lock, so the
    /// lines keep its order); returns the binlog's size after them.
    fn append(&self, lines: &[Line]) -> Result<u64, u8> {
        let log = self.binlog.get().ok_or(errno::EINVAL)?;
        log.append(lines).map_err(|e| {
            warn!("cannot write the trunk binlog: {e}");
            errno::EIO
        })
    }

    /// Ends a term cleanly (a change of trunk server, or the daemon stopping): the
    /// binlog is flushed and marked complete, so the next term here trusts it.
    pub async fn end_term(&self) {
        let Some(alloc) = self.role.lock().await.take() else {
            return;
        };
        drop(alloc);
        let Some(log) = self.binlog.get().cloned() else {
            return;
        };
        let done = crate::durability::blocking(move || {
            log.sync_through(u64::MAX)?;
            log.mark_mine()
        })
        .await;
        if let Err(e) = done {
            warn!("cannot flush the trunk binlog: {e}");
        }
    }

    /// Creates the next trunk file in store path `path` (sparse, full size) and returns
    /// it as one free region.
    async fn create_trunk_file(&self, st: &Storage, path: u8, params: &Params) -> Result<Slot, u8> {
        loop {
            let id = self.current_id.fetch_add(1, Ordering::AcqRel) + 1;
            if id > i32::MAX as u32 {
                return Err(errno::ENOSPC);
            }
            // Kept before the file is made (upstream fails the allocation too when it
            // cannot): after a crash, the id is never handed out again.
            if let Err(e) = self.save_current_id(id).await {
                warn!("cannot save the trunk file id {id} in the init flag: {e}");
                return Err(errno::from_io(&e));
            }
            let (high, low) = st
                .store
                .choose_subdir(&fdfs_proto::trunk::trunk_id_text(id));
            let slot = Slot {
                path,
                high,
                low,
                trunk_id: id,
                offset: 0,
                size: params.sizes.trunk_file_size,
            };
            let file = trunk_path(st, &slot).ok_or(errno::EINVAL)?;
            let size = params.sizes.trunk_file_size as u64;
            let sync = st.cfg.fsync_before_reply;
            let dirs = st.store.data_dirs();
            let made = crate::durability::blocking(move || {
                let dir = file.parent().expect("in a directory");
                let create = || OpenOptions::new().write(true).create_new(true).open(&file);
                let f = match crate::store::in_data_dir(dir, dirs, create) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                    Err(e) => return Err(e),
                };
                f.set_len(size)?;
                if sync {
                    f.sync_all()?;
                    crate::durability::sync_dir(file.parent().expect("in a directory"))?;
                }
                Ok(true)
            })
            .await;
            match made {
                Ok(true) => {
                    info!("created trunk file {id} in M{path:02X}/{high:02X}/{low:02X}");
                    return Ok(slot);
                }
                Ok(false) => continue,
                Err(e) => {
                    warn!("cannot create trunk file {id}: {e}");
                    return Err(errno::from_io(&e));
                }
            }
        }
    }

    /// One request to the trunk server over the kept connection (a new one if it
    /// broke), with the header status given.
    async fn call_server(
        &self,
        st: &Storage,
        command: u8,
        status: u8,
        body: &[u8],
    ) -> Result<Vec<u8>, u8> {
        let addr = match *self.server.read().unwrap() {
            Server::Peer(a) => a,
            Server::Unknown | Server::Nobody => return Err(errno::EAGAIN),
            Server::Me => return Err(errno::EINVAL),
        };
        for attempt in 0..2 {
            let idle = {
                let mut conns = self.conns.lock().unwrap();
                conns.retain(|(a, _)| *a == addr);
                conns.pop()
            };
            let reused = idle.is_some();
            let mut conn = match idle {
                Some((_, c)) => c,
                None => crate::outbound::connect(st, addr)
                    .await
                    .map_err(|e| net_errno(&e))?,
            };
            let keep = |conn: Connection| {
                let mut conns = self.conns.lock().unwrap();
                if conns.len() < KEPT_CONNECTIONS {
                    conns.push((addr, conn));
                }
            };
            match conn.request_with_status(command, status, body).await {
                Ok(reply) => {
                    keep(conn);
                    return Ok(reply);
                }
                Err(Error::Status(s)) => {
                    // Upstream closes after EINVAL; any other answer keeps it.
                    if s != errno::EINVAL {
                        keep(conn);
                    }
                    return Err(s);
                }
                // A kept connection the server closed meanwhile: once more, afresh.
                Err(e) if attempt == 0 && reused => {
                    tracing::debug!("trunk server {addr}: {e}; reconnecting");
                }
                Err(e) => return Err(net_errno(&e)),
            }
        }
        Err(errno::EIO)
    }

    /// A slot for an upload of `size` content bytes in store path `path`.
    pub async fn alloc(&self, st: &Storage, path: u8, size: u64) -> Result<Slot, u8> {
        let want = size as u32 + SLOT_HEADER_LEN as u32;
        if self.is_server() {
            return self.alloc_here(st, path, want).await;
        }
        let req = TrunkAllocSpace {
            group: st.cfg.group_name.clone(),
            size: want,
            path,
        };
        let reply = self
            .call_server(st, fdfs_proto::cmd::TRUNK_ALLOC_SPACE, 0, &req.encode())
            .await?;
        let slot = Slot::decode(&reply).map_err(|_| errno::EINVAL)?;
        if slot.path != path || slot.size < want {
            warn!("trunk server answered 27 with {slot:?} for {want} bytes in path {path}");
            return Err(errno::EINVAL);
        }
        Ok(slot)
    }

    /// 28: tells the trunk server whether `slot` was written.
    pub async fn confirm(&self, st: &Storage, slot: &Slot, status: u8) -> Result<(), u8> {
        if self.is_server() {
            return self.confirm_here(slot, status).await;
        }
        let body = TrunkSlotBody {
            group: st.cfg.group_name.clone(),
            slot: *slot,
        };
        self.call_server(
            st,
            fdfs_proto::cmd::TRUNK_ALLOC_CONFIRM,
            status,
            &body.encode(),
        )
        .await
        .map(|_| ())
    }

    /// 29: gives a deleted file's slot back.
    pub async fn free(&self, st: &Storage, slot: Slot) -> Result<(), u8> {
        if self.is_server() {
            return self.free_here(slot).await;
        }
        let req = TrunkFreeSpace(TrunkSlotBody {
            group: st.cfg.group_name.clone(),
            slot,
        });
        use fdfs_proto::msg::Request;
        self.call_server(st, req.cmd(), 0, &req.body())
            .await
            .map(|_| ())
    }

    /// What the disk work on this storage's copy of `slot` needs (to run off the
    /// async threads); `None` for a store path this storage lacks.
    /// `None` too for a slot that does not lie inside a trunk file (a name or a
    /// request that would have us write elsewhere).
    pub fn slot_io(&self, st: &Storage, slot: &Slot) -> Option<SlotIo> {
        let trunk_file_size = self
            .params()
            .map_or(64 << 20, |p| p.sizes.trunk_file_size as u64);
        if (slot.size as usize) < SLOT_HEADER_LEN
            || slot.offset as u64 + slot.size as u64 > trunk_file_size
        {
            return None;
        }
        Some(SlotIo {
            files: self.files.clone(),
            path: trunk_path(st, slot)?,
            trunk_file_size,
            sync_new: st.cfg.fsync_before_reply,
            dirs: st.store.data_dirs(),
            slot: *slot,
        })
    }
}

/// The trunk files open for writing, each with its group flush.
#[derive(Default)]
pub struct OpenFiles(Mutex<HashMap<PathBuf, Arc<TrunkFile>>>);

/// Writes a slot's content through the trunk file's shared handle, at the slot's place
/// (positioned writes: uploads into one trunk file do not disturb each other).
pub struct SlotWriter {
    file: Arc<TrunkFile>,
    /// Where the slot (its header) starts.
    slot: u64,
    /// Where the next content byte goes.
    at: u64,
}

impl SlotWriter {
    /// Whether the slot holds no file (upstream's rule: CRC32, time and extension of
    /// its header zero), before an upload writes there. One 24-byte read of a trunk
    /// file in use, mostly from the page cache.
    pub fn slot_is_free(&self) -> io::Result<bool> {
        Ok(slot_is_free(&self.header()?))
    }

    fn header(&self) -> io::Result<[u8; SLOT_HEADER_LEN]> {
        read_header(&self.file.file, self.slot)
    }

    /// Whether the slot holds the file whose header is `expected`.
    pub fn holds(&self, expected: &SlotHeader) -> bool {
        self.header()
            .is_ok_and(|raw| SlotHeader::decode(&raw).holds(expected))
    }

    /// Clears the slot's header, so that no name is served from the slot while new
    /// content is written into it (a copy from a peer over an older file's slot).
    pub fn clear_header(&self) -> io::Result<()> {
        self.file
            .file
            .write_all_at(&[0u8; SLOT_HEADER_LEN], self.slot)
    }

    /// Writes the header that makes the slot hold a file (after its content).
    pub fn seal(&self, header: &SlotHeader) -> io::Result<Written> {
        self.file.file.write_all_at(&header.encode(), self.slot)?;
        let number = self.file.written.fetch_add(1, Ordering::AcqRel) + 1;
        Ok(Written {
            file: self.file.clone(),
            number,
        })
    }
}

impl io::Write for SlotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.file.write_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Disk work on this storage's copy of one slot (blocking calls).
#[derive(Clone)]
pub struct SlotIo {
    files: Arc<OpenFiles>,
    path: PathBuf,
    trunk_file_size: u64,
    sync_new: bool,
    /// How its data directory is made when missing.
    dirs: crate::store::DataDirs,
    pub slot: Slot,
}

impl SlotIo {
    /// The trunk file, created (sparse, full size) if it is not there yet or short.
    fn open(&self) -> io::Result<Arc<TrunkFile>> {
        if let Some(f) = self.files.0.lock().unwrap().get(&self.path) {
            return Ok(f.clone());
        }
        let dir = self.path.parent().expect("in a directory");
        let file = crate::store::in_data_dir(dir, self.dirs, || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
        })?;
        // Written at slots' places, and read only for a slot's header before an
        // upload: no read-ahead (in a sparse file it would fill pages with zeros).
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Random);
        let len = file.metadata()?.len();
        if len < self.trunk_file_size {
            file.set_len(self.trunk_file_size)?;
            if len == 0 && self.sync_new {
                file.sync_all()?;
                crate::durability::sync_dir(self.path.parent().expect("in a directory"))?;
            }
        }
        let f = Arc::new(TrunkFile {
            file,
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
        });
        let mut files = self.files.0.lock().unwrap();
        Ok(files.entry(self.path.clone()).or_insert(f).clone())
    }

    /// The trunk file if it is open already (no disk work to open it).
    pub fn cached(&self) -> Option<SlotWriter> {
        let file = self.files.0.lock().unwrap().get(&self.path).cloned()?;
        Some(SlotWriter {
            file,
            slot: self.slot.offset as u64,
            at: self.slot.content_offset(),
        })
    }

    /// The trunk file, opened (and created) if need be (blocking).
    pub fn writer(&self) -> io::Result<SlotWriter> {
        Ok(SlotWriter {
            file: self.open()?,
            slot: self.slot.offset as u64,
            at: self.slot.content_offset(),
        })
    }

    /// Whether the slot holds the file whose header is `expected`, with `size` bytes.
    pub fn holds(&self, expected: &SlotHeader) -> bool {
        File::open(&self.path)
            .and_then(|file| read_header(&file, self.slot.offset as u64))
            .is_ok_and(|raw| SlotHeader::decode(&raw).holds(expected))
    }

    /// Zeroes the slot after an upload into it failed before its header was written,
    /// unless a header there names a file: then another storage's copy of a file got
    /// into the slot meanwhile (the trunk server had handed it out again), and it stays.
    pub fn zero_unclaimed(&self) -> io::Result<()> {
        let f = self.open()?;
        if slot_is_free(&read_header(&f.file, self.slot.offset as u64)?) {
            self.zero()?;
        }
        Ok(())
    }

    /// Zeroes the slot (a deleted file, or a failed write).
    pub fn zero(&self) -> io::Result<Written> {
        let f = self.open()?;
        let size = self.slot.size as u64;
        let zeros = vec![0u8; size.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < size {
            let n = (size - done).min(zeros.len() as u64) as usize;
            f.file
                .write_all_at(&zeros[..n], self.slot.offset as u64 + done)?;
            done += n as u64;
        }
        let number = f.written.fetch_add(1, Ordering::AcqRel) + 1;
        Ok(Written { file: f, number })
    }
}

/// The slot header at `offset` of a trunk file.
fn read_header(file: &File, offset: u64) -> io::Result<[u8; SLOT_HEADER_LEN]> {
    let mut raw = [0u8; SLOT_HEADER_LEN];
    file.read_exact_at(&mut raw, offset)?;
    Ok(raw)
}

/// Flushes written slots: once per trunk file, for the newest write into it (blocking).
pub fn flush_all(slots: Vec<Written>) -> io::Result<()> {
    let mut newest = Vec::new();
    for w in slots {
        w.keep_newest(&mut newest);
    }
    newest.iter().try_for_each(Written::flush)
}

/// Where the base path of the init flag is (set once at start-up).
pub static INIT_BASE: OnceLock<PathBuf> = OnceLock::new();

/// This storage's copy of the trunk file of `slot`; `None` for a store path it lacks.
pub fn trunk_path(st: &Storage, slot: &Slot) -> Option<PathBuf> {
    if slot.path as usize >= st.store.paths().len() {
        return None;
    }
    Some(
        st.store
            .dir(slot.path as usize, slot.high, slot.low)
            .join(slot.trunk_file_name()),
    )
}

fn net_errno(e: &Error) -> u8 {
    match e {
        Error::Status(s) => *s,
        Error::Io(io) => errno::from_io(io),
        _ => errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn slot_io(dir: &Path, offset: u32) -> SlotIo {
        SlotIo {
            files: Arc::default(),
            path: dir.join("000001"),
            trunk_file_size: 1 << 20,
            sync_new: false,
            dirs: crate::store::DataDirs {
                subdirs: 256,
                sync: false,
            },
            slot: Slot {
                path: 0,
                high: 0,
                low: 0,
                trunk_id: 1,
                offset,
                size: 256,
            },
        }
    }

    fn header(crc32: u32) -> SlotHeader {
        SlotHeader {
            kind: fdfs_proto::trunk::SLOT_FILE,
            alloc_size: 256,
            file_size: 5,
            crc32,
            mtime: 7,
            ext: *b"123.txt",
        }
    }

    #[test]
    fn a_failed_upload_leaves_another_storages_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        // Our upload wrote content, then failed before its header: zeroed.
        let ours = slot_io(dir.path(), 0);
        let mut w = ours.writer().unwrap();
        w.write_all(b"hello").unwrap();
        ours.zero_unclaimed().unwrap();
        let raw = std::fs::read(&ours.path).unwrap();
        assert!(raw[..256].iter().all(|b| *b == 0));
        // A peer's copy of another file got into the slot meanwhile: it stays.
        let theirs = slot_io(dir.path(), 256);
        let mut w = theirs.writer().unwrap();
        w.write_all(b"world").unwrap();
        w.seal(&header(9)).unwrap().flush().unwrap();
        theirs.zero_unclaimed().unwrap();
        assert!(theirs.holds(&header(9)));
        // A copy over an older file's slot: no name while the new content comes in.
        let copy = theirs.writer().unwrap();
        assert!(copy.holds(&header(9)));
        copy.clear_header().unwrap();
        assert!(!theirs.holds(&header(9)));
        assert!(!copy.holds(&header(9)));
        assert!(theirs.writer().unwrap().slot_is_free().unwrap());
    }

    #[test]
    fn a_trunk_file_is_made_with_its_directory() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("data/00/00");
        std::fs::create_dir(t.path().join("data")).unwrap();
        let io = slot_io(&dir, 0);
        let mut w = io.writer().unwrap();
        w.write_all(b"hello").unwrap();
        w.seal(&header(3)).unwrap().flush().unwrap();
        assert!(io.holds(&header(3)));
        assert_eq!(std::fs::metadata(&io.path).unwrap().len(), 1 << 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_flusher_answers_every_upload_once_its_slot_and_record_are_flushed() {
        use crate::binlog::{Binlog, Change, Record};
        let t = tempfile::tempdir().unwrap();
        let log = Arc::new(Binlog::open(t.path()).unwrap());
        let first = slot_io(t.path(), 0);
        let flusher = Arc::new(flusher::Flusher::default());
        let before = crate::durability::FLUSHES.load(Ordering::Relaxed);
        let mut uploads = Vec::new();
        for i in 0..32u32 {
            let io = SlotIo {
                slot: Slot {
                    offset: i * 256,
                    ..first.slot
                },
                ..first.clone()
            };
            let (log, flusher) = (log.clone(), flusher.clone());
            uploads.push(tokio::spawn(async move {
                let mut w = io.writer().unwrap();
                w.write_all(b"hello").unwrap();
                let written = w.seal(&header(i + 1)).unwrap();
                let record = Record::here(1, format!("M00/00/00/f{i}"), Change::Create);
                let pos = log.append(&record).unwrap();
                flusher
                    .flush(flusher.coming(), written, &log, pos)
                    .await
                    .unwrap();
                io
            }));
        }
        for (i, upload) in uploads.into_iter().enumerate() {
            let io = upload.await.unwrap();
            assert!(io.holds(&header(i as u32 + 1)), "slot {i}");
        }
        // At least the trunk file and the binlog were flushed (other tests may count
        // flushes of their own meanwhile, so no upper bound here).
        assert!(crate::durability::FLUSHES.load(Ordering::Relaxed) - before >= 2);
        let text = std::fs::read_to_string(t.path().join("data/sync/binlog.000")).unwrap();
        assert_eq!(text.lines().count(), 32);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_waits_for_the_uploads_under_way() {
        use crate::binlog::{Binlog, Change, Record};
        use std::time::Duration;
        let t = tempfile::tempdir().unwrap();
        let log = Arc::new(Binlog::open(t.path()).unwrap());
        let flusher = Arc::new(flusher::Flusher::gathering(Duration::from_secs(60)));
        // One upload's content, header and record, then its flush.
        let upload = |i: u32, coming: flusher::Coming| {
            let (log, flusher) = (log.clone(), flusher.clone());
            let io = slot_io(t.path(), i * 256);
            async move {
                let mut w = io.writer().unwrap();
                w.write_all(b"hello").unwrap();
                let written = w.seal(&header(i + 1)).unwrap();
                let record = Record::here(1, format!("M00/00/00/f{i}"), Change::Create);
                let pos = log.append(&record).unwrap();
                flusher.flush(coming, written, &log, pos).await.unwrap();
                assert!(io.holds(&header(i + 1)));
            }
        };
        let short = Duration::from_millis(300);

        // B is under way (its slot taken, its content coming) when A asks for a flush:
        // A is not answered before B asks too, and one flush answers both.
        let b = flusher.coming();
        let mut a = tokio::spawn(upload(0, flusher.coming()));
        assert!(tokio::time::timeout(short, &mut a).await.is_err());
        upload(1, b).await;
        a.await.unwrap();
        assert_eq!(flusher.batches(), 1);

        // An upload that ends without asking (its client went away) holds no flush.
        let gone = flusher.coming();
        let mut c = tokio::spawn(upload(2, flusher.coming()));
        assert!(tokio::time::timeout(short, &mut c).await.is_err());
        drop(gone);
        tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .expect("answered once the other upload ended")
            .unwrap();
        assert_eq!(flusher.batches(), 2);
    }
}
