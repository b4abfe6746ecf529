//! The store paths on disk: `<store_path>/data/XX/YY/<file>`. Knows where a new file goes,
//! how a finished upload gets its final name, and turns a checked remote filename into a
//! path that cannot leave the store.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use fdfs_proto::config::SpaceLimit;
use fdfs_proto::errno;
use fdfs_proto::fileid::RemoteName;
use rustix::fs::{AtFlags, CWD};
use rustix::io::Errno;

use crate::config::StorageConfig;
use crate::init_flag::InitFlag;

/// Prefix of files being written; never a valid remote filename, so never served.
pub const TEMP_PREFIX: &str = ".tmp-";

pub struct StorePath {
    pub root: PathBuf,
    pub data: PathBuf,
    pub readonly: bool,
    /// Its data was gone at start: a new store path, or a replaced disk.
    pub fresh: bool,
    /// Files were found in it at start.
    pub has_files: bool,
    total_mb: AtomicU64,
    free_mb: AtomicU64,
    /// Bytes promised to uploads in progress (not on disk yet).
    pending: AtomicU64,
    /// Out of service after an I/O error or a read-only file system, until a probe
    /// write succeeds again.
    failed: AtomicBool,
    /// I/O errors met on this path (`/metrics`).
    pub io_errors: AtomicU64,
}

impl StorePath {
    pub fn total_mb(&self) -> u64 {
        self.total_mb.load(Ordering::Relaxed)
    }

    /// Free space as reported to trackers: none while the path is out of service.
    pub fn free_mb(&self) -> u64 {
        if self.is_failed() {
            0
        } else {
            self.free_mb.load(Ordering::Relaxed)
        }
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    fn writable(&self) -> bool {
        !self.readonly && !self.is_failed()
    }
}

/// Space promised to one upload on one store path, released when dropped.
pub struct Reservation<'a> {
    path: &'a StorePath,
    pub index: usize,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.path.pending.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Where the next files go inside a store path (`file_distribute_path_mode = 0`).
struct Rotation {
    high: u32,
    low: u32,
    written: u32,
}

pub struct Store {
    paths: Vec<StorePath>,
    subdirs: u32,
    /// New data directories are flushed into their parents (`fsync_before_reply`).
    sync_new_dirs: bool,
    hash_mode: bool,
    rotate_count: u32,
    rotation: Mutex<Rotation>,
    next_path: AtomicUsize,
    reserved: Mutex<SpaceLimit>,
}

/// Total and available bytes of the file system holding `path`.
fn statvfs_bytes(path: &Path) -> io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(path)?;
    let block = st.f_frsize;
    Ok((st.f_blocks * block, st.f_bavail * block))
}

/// `<store path>/data/.fastdfs_vars`: the mark a store path got when this storage
/// initialised it (upstream's file and key); `base_path/data/.data_init_flag` records
/// it too (`store_path_mark<N>`).
const PATH_MARK_FILE: &str = ".fastdfs_vars";
const PATH_MARK_KEY: &str = "store_path_mark=";

fn read_path_mark(data: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(data.join(PATH_MARK_FILE)) {
        Ok(t) => Ok(t
            .lines()
            .find_map(|l| l.trim().strip_prefix(PATH_MARK_KEY))
            .filter(|v| !v.is_empty())
            .map(str::to_string)),
        Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::NOENT | Errno::NOTDIR)) => {
            Ok(None)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", data.join(PATH_MARK_FILE).display()),
        )),
    }
}

/// Writes a small file in `dir` under `name`, flushed, in one rename.
pub(crate) fn write_flushed(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    crate::durability::sync_dir(dir)
}

/// Whether `data` holds nothing but dot files (or does not exist).
fn holds_nothing(data: &Path) -> io::Result<bool> {
    match fs::read_dir(data) {
        Ok(mut it) => {
            Ok(!it.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// A mount point `/etc/fstab` lists for `path` (the path itself or a directory above
/// it) that is not mounted now: the store path would land on the disk underneath.
fn unmounted_mount_point(path: &Path) -> Option<PathBuf> {
    let unescape = |s: &str| PathBuf::from(s.replace("\\040", " ").replace("\\011", "\t"));
    let fstab = fs::read_to_string("/etc/fstab").ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounted: std::collections::HashSet<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .collect();
    let abs = std::path::absolute(path).ok()?;
    fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with('/') && *m != "/")
        .map(unescape)
        .filter(|m| abs.starts_with(m) && !mounted.contains(m))
        .max_by_key(|m| m.as_os_str().len())
}

/// What [`Store::open`] found in one store path.
struct Found {
    /// The path's data is gone (a new path, or a replaced disk).
    fresh: bool,
    /// The mark to record and write, when it changes.
    new_mark: Option<String>,
}

/// Decides, before anything is created, what store path `i` is. Refuses a path whose
/// disk looks absent (see the README, "Lost data on one storage").
fn inspect(
    i: usize,
    root: &Path,
    recorded: Option<&String>,
    init_existed: bool,
    flag: &Path,
) -> io::Result<Found> {
    let data = root.join("data");
    let here = if root.is_dir() {
        read_path_mark(&data)?
    } else {
        None
    };
    let refused = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let refuse = |why: String| -> io::Result<Found> { Err(refused(why)) };
    let fresh_ok = |fresh: bool| -> io::Result<()> {
        if let Some(m) = fresh.then(|| unmounted_mount_point(root)).flatten() {
            return Err(refused(format!(
                "store path {i} ({}) holds no data and {} (listed in /etc/fstab) is not \
                 mounted: mount it and start again",
                root.display(),
                m.display()
            )));
        }
        Ok(())
    };
    match (recorded, here) {
        (Some(r), Some(h)) if *r == h => Ok(Found {
            fresh: false,
            new_mark: None,
        }),
        (None, Some(h)) if !init_existed => {
            // base_path was lost, the store path kept: it is ours by its mark.
            Ok(Found {
                fresh: false,
                new_mark: Some(h),
            })
        }
        (_, Some(h)) => refuse(format!(
            "store path {i} ({}) carries the mark {h:?} of another storage or store path \
             ({} says {:?}); if it is not used by another storage, remove {} and start again",
            root.display(),
            flag.display(),
            recorded.map(String::as_str).unwrap_or(""),
            data.join(PATH_MARK_FILE).display()
        )),
        (Some(_), None) if !root.is_dir() => refuse(format!(
            "store path {i} ({}) is missing, yet this storage initialised it \
             (store_path_mark{i} in {}): is its disk mounted? Mount it and start again. To \
             recover the path's files from the group onto the disk that holds its parent \
             directory instead, create the directory (empty) and start again",
            root.display(),
            flag.display()
        )),
        (Some(_), None) => {
            let fresh = holds_nothing(&data)?;
            fresh_ok(fresh)?;
            if !fresh {
                tracing::warn!(
                    "store path {i} ({}): its mark file {PATH_MARK_FILE} is missing; written again",
                    root.display()
                );
            }
            Ok(Found {
                fresh,
                new_mark: Some(new_mark(i)),
            })
        }
        (None, None) => {
            let fresh = holds_nothing(&data)?;
            fresh_ok(fresh)?;
            Ok(Found {
                fresh,
                new_mark: Some(new_mark(i)),
            })
        }
    }
}

fn new_mark(i: usize) -> String {
    format!(
        "{:x}-{i}-{:016x}",
        fdfs_runtime::unix_now(),
        rand::random::<u64>()
    )
}

impl Store {
    /// Opens every store path, creating `data/` (its XX/YY directories are made when a
    /// file first goes into them: see [`make_data_dir`]). Decides first, before creating
    /// anything, which paths lost their data (`fresh`); on a storage that had joined its
    /// group (`joined_before`) such a path gets its recovery flag (flushed) before
    /// anything else is written to it, so a crash cannot leave it looking complete.
    /// Records each path's mark in `init` (saved) before it is written into the path.
    /// Blocking.
    pub fn open(
        cfg: &StorageConfig,
        init: &mut InitFlag,
        init_existed: bool,
        joined_before: bool,
    ) -> io::Result<Store> {
        let flag_file = crate::init_flag::path(&cfg.base_path);
        let mut found = Vec::new();
        for (i, sp) in cfg.store_paths.iter().enumerate() {
            found.push(inspect(
                i,
                &sp.path,
                init.store_path_marks.get(&i),
                init_existed,
                &flag_file,
            )?);
        }
        let cannot = |d: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", d.display()))
        };
        for (sp, f) in cfg.store_paths.iter().zip(&found) {
            let data = sp.path.join("data");
            fs::create_dir_all(&data).map_err(|e| cannot(&data, e))?;
            if f.fresh && joined_before {
                crate::recovery::begin(&data)?;
            }
        }
        let mut marks_changed = false;
        for (i, f) in found.iter().enumerate() {
            if let Some(m) = &f.new_mark {
                init.store_path_marks.insert(i, m.clone());
                marks_changed = true;
            }
        }
        if marks_changed {
            let d = cfg.base_path.join("data");
            fs::create_dir_all(&d).map_err(|e| cannot(&d, e))?;
            init.save(&cfg.base_path)?;
        }
        let mut paths = Vec::new();
        for (sp, f) in cfg.store_paths.iter().zip(found) {
            let data = sp.path.join("data");
            if let Some(m) = &f.new_mark {
                write_flushed(&data, PATH_MARK_FILE, &format!("{PATH_MARK_KEY}{m}\n"))?;
            }
            // Left by earlier versions, which made every directory up front.
            let _ = fs::remove_file(data.join(".subdirs_created"));
            // One walk: uploads a crash cut short go, and whether files are here is
            // noted (a fresh path has neither).
            let has_files = !f.fresh && remove_temp_files(&data, cfg.subdir_count_per_path);
            paths.push(StorePath {
                root: sp.path.clone(),
                data,
                readonly: sp.readonly,
                fresh: f.fresh,
                has_files,
                total_mb: AtomicU64::new(0),
                free_mb: AtomicU64::new(0),
                pending: AtomicU64::new(0),
                failed: AtomicBool::new(false),
                io_errors: AtomicU64::new(0),
            });
        }
        let store = Store {
            paths,
            subdirs: cfg.subdir_count_per_path,
            sync_new_dirs: cfg.fsync_before_reply,
            hash_mode: cfg.file_distribute_path_mode == 1,
            rotate_count: cfg.file_distribute_rotate_count,
            rotation: Mutex::new(Rotation {
                high: 0,
                low: 0,
                written: 0,
            }),
            next_path: AtomicUsize::new(0),
            reserved: Mutex::new(SpaceLimit::Bytes(1024 << 20)),
        };
        store.refresh_usage();
        Ok(store)
    }

    pub fn paths(&self) -> &[StorePath] {
        &self.paths
    }

    pub fn subdirs(&self) -> u32 {
        self.subdirs
    }

    /// How data directories are made when first needed (see [`make_data_dir`]).
    pub fn data_dirs(&self) -> DataDirs {
        DataDirs {
            subdirs: self.subdirs,
            sync: self.sync_new_dirs,
        }
    }

    /// Re-reads total and free space of every store path.
    pub fn refresh_usage(&self) {
        for p in &self.paths {
            if let Ok((total, free)) = statvfs_bytes(&p.data) {
                p.total_mb.store(total >> 20, Ordering::Relaxed);
                p.free_mb.store(free >> 20, Ordering::Relaxed);
            }
        }
    }

    /// Takes a store path out of service after an error that says its disk is broken
    /// or read-only (the others go on serving uploads).
    fn note_error(&self, index: usize, e: &io::Error) {
        let broken = matches!(Errno::from_io_error(e), Some(Errno::IO | Errno::ROFS));
        let Some(p) = self.paths.get(index) else {
            return;
        };
        p.io_errors.fetch_add(1, Ordering::Relaxed);
        if broken && !p.failed.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "store path {index} ({}) failed: {e}; no new files go there until a test write succeeds",
                p.root.display()
            );
        }
    }

    /// As [`Store::note_error`], for the path holding directory `dir`.
    pub fn note_error_in(&self, dir: &Path, e: &io::Error) {
        if let Some(i) = self.paths.iter().position(|p| dir.starts_with(&p.data)) {
            self.note_error(i, e);
        }
    }

    /// Tries a write on every path out of service; puts back those that work again.
    pub fn probe_failed(&self) {
        for (i, p) in self.paths.iter().enumerate() {
            if !p.is_failed() {
                continue;
            }
            let works = NewFile::create(&p.data).and_then(|mut f| {
                use std::io::Write;
                f.file.write_all(b"probe")?;
                f.file.sync_data()
            });
            if works.is_ok() {
                p.failed.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "store path {i} ({}) works again, back in service",
                    p.root.display()
                );
            }
        }
    }

    pub fn set_reserved(&self, limit: SpaceLimit) {
        *self.reserved.lock().unwrap() = limit;
    }

    /// Reserves `size` bytes on path `i` if, with every upload in progress, its free
    /// space stays above `reserved_storage_space` (checked against the disk now, not a
    /// periodic sample, so the reserve is honoured exactly).
    fn reserve(&self, i: usize, size: u64) -> Option<Reservation<'_>> {
        let p = &self.paths[i];
        if !p.writable() {
            return None;
        }
        let (total, free) = statvfs_bytes(&p.data).ok()?;
        let reserved = match *self.reserved.lock().unwrap() {
            // A fixed reservation is shared by all store paths, as upstream does.
            SpaceLimit::Bytes(b) => b / self.paths.len() as u64,
            SpaceLimit::Ratio(r) => (total as f64 * r) as u64,
        };
        let pending = p.pending.fetch_add(size, Ordering::Relaxed);
        let r = Reservation {
            path: p,
            index: i,
            bytes: size,
        };
        // Room for the content plus a block of metadata.
        let need = pending + size + 4096;
        (free > reserved && free - reserved >= need).then_some(r)
    }

    /// Picks the store path for an upload and reserves its size there: the requested
    /// one when it is in service and has room, else the next one that has, in round
    /// robin. ENOSPC when none has.
    pub fn choose_path(&self, requested: i8, size: u64) -> Result<Reservation<'_>, u8> {
        if requested >= 0 {
            let i = requested as usize;
            if i >= self.paths.len() {
                return Err(errno::EINVAL);
            }
            if let Some(r) = self.reserve(i, size) {
                return Ok(r);
            }
        }
        let n = self.paths.len();
        let start = self.next_path.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            if let Some(r) = self.reserve((start + k) % n, size) {
                return Ok(r);
            }
        }
        Err(errno::ENOSPC)
    }

    /// The XX/YY directory for a new file. `temp_name` feeds the hash mode.
    pub fn choose_subdir(&self, temp_name: &str) -> (u8, u8) {
        if self.hash_mode {
            let n = pjw_hash(temp_name.as_bytes()) % 65536;
            return (
                ((n >> 8) % self.subdirs) as u8,
                ((n & 0xFF) % self.subdirs) as u8,
            );
        }
        let mut r = self.rotation.lock().unwrap();
        let here = (r.high as u8, r.low as u8);
        r.written += 1;
        if r.written >= self.rotate_count {
            r.written = 0;
            r.low += 1;
            if r.low >= self.subdirs {
                r.low = 0;
                r.high = (r.high + 1) % self.subdirs;
            }
        }
        here
    }

    /// The rotation state, for `storage_stat.dat`.
    pub fn rotation(&self) -> (u32, u32, u32) {
        let r = self.rotation.lock().unwrap();
        (r.high, r.low, r.written)
    }

    pub fn restore_rotation(&self, high: u32, low: u32, written: u32) {
        let mut r = self.rotation.lock().unwrap();
        r.high = high % self.subdirs;
        r.low = low % self.subdirs;
        r.written = written;
    }

    pub fn dir(&self, path_index: usize, high: u8, low: u8) -> PathBuf {
        self.paths[path_index]
            .data
            .join(format!("{high:02X}"))
            .join(format!("{low:02X}"))
    }

    /// Makes data directory `dir` if it is missing ([`make_data_dir`]), off the async
    /// workers.
    pub async fn make_dir(&self, dir: &Path) -> io::Result<()> {
        let (dir, dirs) = (dir.to_path_buf(), self.data_dirs());
        crate::durability::blocking(move || make_data_dir(&dir, dirs)).await
    }

    /// A new file in data directory `dir`, which is made first if it is missing.
    pub async fn new_file(&self, dir: &Path) -> io::Result<NewFile> {
        match NewFile::create(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.make_dir(dir).await?;
                NewFile::create(dir)
            }
            r => r,
        }
    }

    /// The on-disk path of a checked remote filename. The name was validated by
    /// [`RemoteName::parse`] (no `/`, no `..`, uppercase hex parts), so it stays inside
    /// the store path; the subdirectory must also exist in this store's layout.
    pub fn resolve(&self, name: &RemoteName<'_>) -> Result<PathBuf, u8> {
        let p = self
            .paths
            .get(name.store_path as usize)
            .ok_or(errno::EINVAL)?;
        if name.high as u32 >= self.subdirs || name.low as u32 >= self.subdirs {
            return Err(errno::ENOENT);
        }
        Ok(p.data.join(name.data_relative()))
    }
}

/// Peter J. Weinberger's hash, as the hash distribution mode uses it.
fn pjw_hash(data: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &b in data {
        h = (h << 4).wrapping_add(b as u32);
        let g = h & 0xF000_0000;
        if g != 0 {
            h ^= g >> 24;
            h ^= g;
        }
    }
    h
}

/// How data directories are made: `subdirs` per level, and whether a new one is
/// flushed into its parent (`fsync_before_reply`; without it nothing is flushed before
/// a reply, as upstream).
#[derive(Debug, Clone, Copy)]
pub struct DataDirs {
    pub subdirs: u32,
    pub sync: bool,
}

impl DataDirs {
    fn sync_parent(self, dir: &Path) -> io::Result<()> {
        if self.sync {
            crate::durability::sync_dir(dir)
        } else {
            Ok(())
        }
    }
}

/// The name of a data directory level: `0A`.
fn level_name(n: u32) -> String {
    format!("{n:02X}")
}

/// Makes directory `d` unless it is there (as a directory: anything else is an error);
/// whether it made it. Never makes a missing parent.
fn make_one(d: &Path) -> io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o755).create(d) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => Ok(false),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot create {}: {e}", d.display()),
        )),
    }
}

/// Makes data directory `dir` (`<store path>/data/XX/YY`, `subdirs` directories per
/// level) and `data/XX` if they are missing; safe against another thread or process
/// making them at the same time. `data/` itself is never made: a store path whose data
/// is gone (an unmounted disk) stays an error. Blocking.
///
/// Upstream makes all `subdirs`² directories when a store path is first used, and on
/// every start takes the tree as complete when `00/00` and the last one (`FF/FF` for
/// 256) are there; else it makes every missing one (those there are fine), and then,
/// on a storage that had synced its group's files, takes the path for a replaced disk
/// and recovers it from a peer. So the last directory is only ever made after all the
/// others, when a file first goes into it: a tree that has it is complete, and upstream
/// started on it finds every directory it may write into.
pub fn make_data_dir(dir: &Path, dirs: DataDirs) -> io::Result<()> {
    let subdirs = dirs.subdirs;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is no data directory", dir.display()),
        )
    };
    let high = dir.parent().ok_or_else(bad)?;
    let data = high.parent().ok_or_else(bad)?;
    let last = level_name(subdirs.max(1) - 1);
    let is_last = |p: &Path| p.file_name().is_some_and(|n| n == last.as_str());
    if is_last(dir) && is_last(high) {
        return make_data_tree(data, dirs);
    }
    if make_one(high)? {
        dirs.sync_parent(data)?;
    }
    if make_one(dir)? {
        dirs.sync_parent(high)?;
    }
    Ok(())
}

/// Makes every data directory under `data` that is missing, the last one last (see
/// [`make_data_dir`]). Blocking.
fn make_data_tree(data: &Path, dirs: DataDirs) -> io::Result<()> {
    let n = dirs.subdirs.max(1);
    let last = data.join(level_name(n - 1)).join(level_name(n - 1));
    if last.is_dir() {
        return Ok(());
    }
    tracing::info!(
        "{}: making the rest of its {} data directories",
        data.display(),
        n * n
    );
    let mut made_high = false;
    for high in 0..n {
        let h = data.join(level_name(high));
        made_high |= make_one(&h)?;
        let mut made = false;
        for low in 0..n {
            if high == n - 1 && low == n - 1 {
                continue;
            }
            made |= make_one(&h.join(level_name(low)))?;
        }
        if made {
            dirs.sync_parent(&h)?;
        }
    }
    if made_high {
        dirs.sync_parent(data)?;
    }
    if make_one(&last)? {
        dirs.sync_parent(last.parent().expect("in a directory"))?;
    }
    Ok(())
}

/// Runs `op`, which creates something in data directory `dir`; when it fails for want
/// of the directory, makes it ([`make_data_dir`], unless another thread just did) and
/// runs `op` once more. Blocking.
pub fn in_data_dir<T>(
    dir: &Path,
    dirs: DataDirs,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    match op() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !dir.is_dir() {
                make_data_dir(dir, dirs)?;
            }
            op()
        }
        r => r,
    }
}

/// The data directories (`data/XX/YY`) there are in `data`.
fn existing_data_dirs(data: &Path, subdirs: u32) -> Vec<PathBuf> {
    let level = |d: &Path| -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(d) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.len() == 2
                    && u32::from_str_radix(&name, 16).is_ok_and(|n| n < subdirs)
                    && name.bytes().all(|b| !b.is_ascii_lowercase())
                    && e.file_type().is_ok_and(|t| t.is_dir())
            })
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    };
    level(data).iter().flat_map(|h| level(h)).collect()
}

/// Removes uploads that a crash left half-written: they never got a final name.
/// Returns whether other files are there.
fn remove_temp_files(data: &Path, subdirs: u32) -> bool {
    let mut has_files = false;
    for d in existing_data_dirs(data, subdirs) {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(e.path());
            } else if !name.starts_with('.') {
                has_files = true;
            }
        }
    }
    has_files
}

/// Renames `from` to `to` unless `to` exists (one atomic step where the file system
/// supports it, a hard link and an unlink elsewhere).
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(Errno::INVAL | Errno::NOSYS) => {}
        Err(e) => return Err(e.into()),
    }
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}

/// O_TMPFILE failed once (file system or kernel without it): named temporary files.
static NO_TMPFILE: AtomicBool = AtomicBool::new(false);
/// linkat(AT_EMPTY_PATH) is not allowed to us: link through /proc/self/fd instead.
static NO_EMPTY_PATH: AtomicBool = AtomicBool::new(false);

/// A new file being written in its final directory. It has no name until it is
/// committed (O_TMPFILE, then one `linkat`): no temporary directory entry to add and
/// remove, and nothing left behind by a crash. Where O_TMPFILE is missing it is a
/// `.tmp-` file renamed at commit. Dropped uncommitted, it is gone.
pub struct NewFile {
    pub file: fs::File,
    /// The temporary name, without O_TMPFILE.
    temp: Option<PathBuf>,
    committed: bool,
}

impl NewFile {
    pub fn create(dir: &Path) -> io::Result<NewFile> {
        use std::os::unix::fs::OpenOptionsExt;
        if !NO_TMPFILE.load(Ordering::Relaxed) {
            // Readable too: a trunk-stored file recovered from a peer is copied from it
            // into its slot.
            match fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::TMPFILE.bits() as i32)
                .open(dir)
            {
                Ok(file) => {
                    return Ok(NewFile {
                        file,
                        temp: None,
                        committed: false,
                    })
                }
                Err(e)
                    if matches!(
                        Errno::from_io_error(&e),
                        Some(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL)
                    ) =>
                {
                    tracing::info!(
                        "no O_TMPFILE in {}: {e}; named temporary files",
                        dir.display()
                    );
                    NO_TMPFILE.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            let path = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
            match fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(NewFile {
                        file,
                        temp: Some(path),
                        committed: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Names the file `dest` unless that exists (`AlreadyExists` then).
    pub fn commit_no_replace(&mut self, dest: &Path) -> io::Result<()> {
        match &self.temp {
            Some(t) => rename_no_replace(t, dest)?,
            None => link_fd(&self.file, dest)?,
        }
        self.committed = true;
        Ok(())
    }

    /// Names the file `dest`, replacing any file there.
    pub fn commit_replace(&mut self, dest: &Path) -> io::Result<()> {
        match &self.temp {
            Some(t) => fs::rename(t, dest)?,
            None => match link_fd(&self.file, dest) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let name = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
                    let tmp = dest.with_file_name(name);
                    link_fd(&self.file, &tmp)?;
                    if let Err(e) = fs::rename(&tmp, dest) {
                        let _ = fs::remove_file(&tmp);
                        return Err(e);
                    }
                }
                r => r?,
            },
        }
        self.committed = true;
        Ok(())
    }

    /// Names the file in `dir` without replacing anything: `make_name` is asked again
    /// (new random bits) while the name is taken.
    pub fn commit_new_name(
        &mut self,
        dir: &Path,
        mut make_name: impl FnMut() -> String,
    ) -> Result<String, u8> {
        for _ in 0..10 {
            let name = make_name();
            match self.commit_no_replace(&dir.join(&name)) {
                Ok(()) => return Ok(name),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(errno::from_io(&e)),
            }
        }
        Err(errno::EBUSY)
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if let (false, Some(t)) = (self.committed, &self.temp) {
            let _ = fs::remove_file(t);
        }
    }
}

/// Gives the open file (an O_TMPFILE one) the name `dest`; never replaces.
fn link_fd(file: &fs::File, dest: &Path) -> io::Result<()> {
    use rustix::fs::linkat;
    use std::os::fd::AsRawFd;
    if !NO_EMPTY_PATH.load(Ordering::Relaxed) {
        match linkat(file, "", CWD, dest, AtFlags::EMPTY_PATH) {
            Ok(()) => return Ok(()),
            // Without CAP_DAC_READ_SEARCH: the /proc way (which also tells a missing
            // directory from a refused flag).
            Err(Errno::NOENT | Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    linkat(CWD, &*proc, CWD, dest, AtFlags::SYMLINK_FOLLOW)?;
    NO_EMPTY_PATH.store(true, Ordering::Relaxed);
    Ok(())
}

/// Gives a finished temporary file its final name without ever replacing an existing
/// file: `make_name` is asked again (new random bits) if the name is taken.
pub fn commit_new_file(
    temp: &Path,
    dir: &Path,
    mut make_name: impl FnMut() -> String,
) -> Result<String, u8> {
    for _ in 0..10 {
        let name = make_name();
        match rename_no_replace(temp, &dir.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let _ = fs::remove_file(temp);
                return Err(errno::from_io(&e));
            }
        }
    }
    let _ = fs::remove_file(temp);
    Err(errno::EBUSY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` directories per level, new ones flushed.
    fn dirs(n: u32) -> DataDirs {
        DataDirs {
            subdirs: n,
            sync: true,
        }
    }

    #[test]
    fn pjw_hash_is_stable() {
        assert_eq!(pjw_hash(b""), 0);
        assert_eq!(pjw_hash(b"a"), 97);
        assert_eq!(pjw_hash(b"ab"), 97 * 16 + 98);
    }

    fn config(base: &Path) -> StorageConfig {
        fs::create_dir_all(base).unwrap();
        let conf = base.join("storage.conf");
        fs::write(
            &conf,
            format!(
                "group_name = group1\nbase_path = {0}/base\nstore_path_count = 2\n\
                 store_path0 = {0}/s0\nstore_path1 = {0}/s1\nsubdir_count_per_path = 2\n\
                 tracker_server = 127.0.0.1:22122\n",
                base.display()
            ),
        )
        .unwrap();
        StorageConfig::load(&conf).unwrap()
    }

    #[test]
    fn replaced_and_missing_store_paths() {
        let t = crate::test_support::scratch("open");
        let cfg = config(t.path());
        let (s0, s1) = (t.path().join("s0"), t.path().join("s1"));
        // First start: both paths made, marked, recorded; nothing to recover.
        let mut init = InitFlag::default();
        let store = Store::open(&cfg, &mut init, false, false).unwrap();
        assert!(store.paths().iter().all(|p| p.fresh && !p.has_files));
        assert_eq!(init.store_path_marks.len(), 2);
        // No data directory yet: each is made when a file first goes into it.
        assert!(!s0.join("data/00").exists());
        assert!(!s0.join("data/.recovery.flag").exists());
        assert_eq!(InitFlag::load(&cfg.base_path).unwrap(), init);
        make_data_dir(&store.dir(0, 0, 1), dirs(2)).unwrap();
        fs::write(s0.join("data/00/01/somefile"), b"x").unwrap();
        fs::write(s0.join("data/00/01/.tmp-0123"), b"x").unwrap();
        drop(store);
        // Started again: nothing fresh, files seen.
        let store = Store::open(&cfg, &mut init, true, true).unwrap();
        assert!(store.paths().iter().all(|p| !p.fresh));
        assert!(store.paths()[0].has_files && !store.paths()[1].has_files);
        assert!(!s0.join("data/00/01/.tmp-0123").exists());
        drop(store);
        // A replaced disk (the path is there, empty): recovered, its flag written
        // before anything else.
        fs::remove_dir_all(s1.join("data")).unwrap();
        let before = init.store_path_marks[&1].clone();
        let store = Store::open(&cfg, &mut init, true, true).unwrap();
        assert!(store.paths()[1].fresh && !store.paths()[0].fresh);
        assert!(s1.join("data/.recovery.flag").is_file());
        assert!(!s0.join("data/.recovery.flag").exists());
        assert_ne!(init.store_path_marks[&1], before);
        drop(store);
        // A path that is gone (an unmounted disk): refused, nothing created.
        fs::remove_dir_all(&s1).unwrap();
        let e = Store::open(&cfg, &mut init, true, true)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("is missing"), "{e}");
        assert!(!s1.exists());
        // A path holding another storage's mark: refused.
        fs::create_dir_all(s1.join("data")).unwrap();
        fs::write(
            s1.join("data/.fastdfs_vars"),
            "store_path_mark=someone-else\n",
        )
        .unwrap();
        let e = Store::open(&cfg, &mut init, true, true)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("another storage"), "{e}");
    }

    /// The directories made in `data`, as `XX/YY`.
    fn tree(data: &Path) -> Vec<String> {
        existing_data_dirs(data, 256)
            .iter()
            .map(|d| d.strip_prefix(data).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn data_directories_are_made_when_needed_the_last_one_last() {
        let t = crate::test_support::scratch("lazy-dirs");
        let data = t.path().join("data");
        // Without data/ (an unmounted disk) nothing is made.
        let e = make_data_dir(&data.join("00/01"), dirs(4)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(!data.exists());
        fs::create_dir(&data).unwrap();
        make_data_dir(&data.join("00/01"), dirs(4)).unwrap();
        make_data_dir(&data.join("00/01"), dirs(4)).unwrap();
        make_data_dir(&data.join("02/03"), dirs(4)).unwrap();
        assert_eq!(tree(&data), ["00/01", "02/03"]);
        // Something else under the name is an error.
        fs::write(data.join("01"), b"x").unwrap();
        assert!(make_data_dir(&data.join("01/00"), dirs(4)).is_err());
        fs::remove_file(data.join("01")).unwrap();
        // The last one: all of them, so that upstream finds the tree complete.
        make_data_dir(&data.join("03/03"), dirs(4)).unwrap();
        assert_eq!(tree(&data).len(), 16);
        assert_eq!(tree(&data).last().unwrap(), "03/03");
        // A file is made where its directory is missing.
        fs::remove_dir(data.join("02/03")).unwrap();
        let dir = data.join("02/03");
        let mut tries = 0;
        in_data_dir(&dir, dirs(4), || {
            tries += 1;
            fs::write(dir.join("f"), b"x")
        })
        .unwrap();
        assert_eq!(tries, 2);
        assert!(dir.join("f").is_file());
        // Tried once more only.
        let mut tries = 0;
        let e = in_data_dir(&dir, dirs(4), || -> io::Result<()> {
            tries += 1;
            Err(io::ErrorKind::NotFound.into())
        })
        .unwrap_err();
        assert_eq!((tries, e.kind()), (2, io::ErrorKind::NotFound));
        let mut tries = 0;
        let e = in_data_dir(&dir, dirs(4), || -> io::Result<()> {
            tries += 1;
            Err(io::ErrorKind::PermissionDenied.into())
        })
        .unwrap_err();
        assert_eq!((tries, e.kind()), (1, io::ErrorKind::PermissionDenied));
    }

    #[test]
    fn many_threads_make_one_directory() {
        let t = crate::test_support::scratch("lazy-race");
        let data = t.path().join("data");
        fs::create_dir(&data).unwrap();
        std::thread::scope(|s| {
            for i in 0..32 {
                let data = &data;
                s.spawn(move || {
                    let dir = data.join("05/07");
                    in_data_dir(&dir, dirs(16), || {
                        fs::write(dir.join(format!("f{i}")), b"x")
                    })
                    .unwrap();
                });
            }
        });
        assert_eq!(fs::read_dir(data.join("05/07")).unwrap().count(), 32);
    }

    #[test]
    fn commit_never_replaces() {
        let dir = std::env::temp_dir().join(format!("fdfs-commit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("taken"), b"old").unwrap();
        let temp = dir.join(".tmp-1");
        fs::write(&temp, b"new").unwrap();
        let mut names = vec!["free".to_string(), "taken".to_string()];
        let got = commit_new_file(&temp, &dir, || names.pop().unwrap()).unwrap();
        assert_eq!(got, "free");
        assert_eq!(fs::read(dir.join("taken")).unwrap(), b"old");
        assert_eq!(fs::read(dir.join("free")).unwrap(), b"new");
        assert!(!temp.exists());
        let _ = fs::remove_dir_all(dir);
    }
}
