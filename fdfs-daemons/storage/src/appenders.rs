//! Files that change after upload (appenders): one change at a time per file, and a
//! CRC32 that does not cost a full read each time it is asked for.
//!
//! Appends, modifies, truncates, regenerates and deletes of one file take its lock, so
//! two appends never interleave their content, each binlog record states the offset the
//! change was really made at, and a regenerate's CRC32 covers exactly the content it
//! renames. The lock is held across the body transfer: a second writer waits for the
//! first (ordered), as upstream's single writer thread per store path orders them.
//!
//! The CRC32 of an appender is kept beside its identity (inode, size, mtime): an upload
//! or an append extends it from the bytes it received, anything else forgets it. A CRC
//! that has to be computed is computed on a blocking thread, skipping holes of sparse
//! files (their zeros are folded in arithmetically).

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use rustix::io::Errno;
use tokio::sync::OwnedMutexGuard;

/// Entries kept in the CRC cache; beyond that the oldest half is forgotten.
const CRC_CACHE_MAX: usize = 4096;
const READ_CHUNK: usize = 1 << 20;

/// What identifies one version of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Version {
    pub fn of(meta: &Metadata) -> Version {
        Version {
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        }
    }
}

#[derive(Default)]
pub struct Appenders {
    locks: Mutex<HashMap<PathBuf, Weak<tokio::sync::Mutex<()>>>>,
    crcs: Mutex<HashMap<PathBuf, (Version, u32, u64)>>,
    /// Counts insertions, to age the CRC cache.
    tick: std::sync::atomic::AtomicU64,
}

/// Held while a file is being changed.
pub type FileGuard = OwnedMutexGuard<()>;

impl Appenders {
    /// Waits until no other request is changing `path`, then holds it.
    pub async fn lock(&self, path: &Path) -> FileGuard {
        let m = {
            let mut locks = self.locks.lock().unwrap();
            if let Some(m) = locks.get(path).and_then(Weak::upgrade) {
                m
            } else {
                if locks.len() >= 1024 {
                    locks.retain(|_, w| w.strong_count() > 0);
                }
                let m = Arc::new(tokio::sync::Mutex::new(()));
                locks.insert(path.to_path_buf(), Arc::downgrade(&m));
                m
            }
        };
        m.lock_owned().await
    }

    /// The CRC32 of `path` if it is known for this exact version.
    pub fn known_crc(&self, path: &Path, version: Version) -> Option<u32> {
        match self.crcs.lock().unwrap().get(path) {
            Some(&(v, crc, _)) if v == version => Some(crc),
            _ => None,
        }
    }

    /// Remembers the CRC32 of one version of `path`.
    pub fn remember_crc(&self, path: &Path, version: Version, crc: u32) {
        let tick = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut crcs = self.crcs.lock().unwrap();
        if crcs.len() >= CRC_CACHE_MAX && !crcs.contains_key(path) {
            let cutoff = tick.saturating_sub(CRC_CACHE_MAX as u64 / 2);
            crcs.retain(|_, e| e.2 >= cutoff);
            if crcs.len() >= CRC_CACHE_MAX {
                crcs.clear();
            }
        }
        crcs.insert(path.to_path_buf(), (version, crc, tick));
    }

    /// After `appended` bytes whose CRC32 is `chunk_crc` were added at the end of a
    /// file whose version before was `before`: extends the known CRC to `after`.
    pub fn extend_crc(
        &self,
        path: &Path,
        before: Version,
        after: Version,
        chunk_crc: u32,
        appended: u64,
    ) {
        let Some(old) = self.known_crc(path, before) else {
            self.forget(path);
            return;
        };
        let mut h = crc32fast::Hasher::new_with_initial_len(old, before.size);
        h.combine(&crc32fast::Hasher::new_with_initial_len(
            chunk_crc, appended,
        ));
        self.remember_crc(path, after, h.finalize());
    }

    pub fn forget(&self, path: &Path) {
        self.crcs.lock().unwrap().remove(path);
    }

    /// The CRC32 of the file at `path`: from the cache, else computed on a blocking
    /// thread (and remembered).
    pub async fn crc_of(self: &Arc<Self>, path: &Path) -> io::Result<(u32, Metadata)> {
        let meta = std::fs::metadata(path)?;
        let version = Version::of(&meta);
        if let Some(crc) = self.known_crc(path, version) {
            return Ok((crc, meta));
        }
        let path = path.to_path_buf();
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut file = File::open(&path)?;
            let meta = file.metadata()?;
            let crc = crc32_sparse(&mut file, meta.len())?;
            // Only a version that did not change while it was read is remembered.
            if Version::of(&file.metadata()?) == Version::of(&meta) {
                me.remember_crc(&path, Version::of(&meta), crc);
            }
            Ok((crc, meta))
        })
        .await
        .map_err(|e| io::Error::other(format!("crc task failed: {e}")))?
    }
}

/// CRC32 state of `len` zero bytes.
fn zeros_crc(len: u64) -> crc32fast::Hasher {
    // Doubling: crc(0^(2n)) from crc(0^n), one bit of `len` at a time.
    let mut result = crc32fast::Hasher::new();
    let mut block = crc32fast::Hasher::new();
    block.update(&[0]);
    let mut n = len;
    while n != 0 {
        if n & 1 != 0 {
            result.combine(&block);
        }
        let copy = block.clone();
        block.combine(&copy);
        n >>= 1;
    }
    result
}

/// `lseek` to `SEEK_DATA` or `SEEK_HOLE`: `None` for ENXIO (nothing of that kind from
/// there to the end).
fn seek_extent(file: &File, pos: rustix::fs::SeekFrom) -> Result<Option<u64>, Errno> {
    match rustix::fs::seek(file, pos) {
        Ok(r) => Ok(Some(r)),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

/// CRC32 of the first `len` bytes of `file`, reading only its data extents: holes are
/// zeros and are folded in without being read.
pub fn crc32_sparse(file: &mut File, len: u64) -> io::Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pos = 0u64;
    while pos < len {
        let data = match seek_extent(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(Some(d)) => d.min(len),
            Ok(None) => len,
            // A file system without SEEK_DATA: read everything.
            Err(Errno::INVAL) => pos,
            Err(e) => return Err(e.into()),
        };
        if data > pos {
            h.combine(&zeros_crc(data - pos));
            pos = data;
            continue;
        }
        let hole = match seek_extent(file, rustix::fs::SeekFrom::Hole(pos)) {
            Ok(Some(x)) => x.min(len),
            Ok(None) | Err(_) => len,
        };
        let hole = if hole <= pos { len } else { hole };
        file.seek(SeekFrom::Start(pos))?;
        while pos < hole {
            let want = ((hole - pos) as usize).min(buf.len());
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                // Shorter than its size said (truncated meanwhile): zeros past the end.
                h.combine(&zeros_crc(len - pos));
                return Ok(h.finalize());
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file in a scratch directory (the directory goes with the guard).
    fn temp_file(tag: &str) -> (tempfile::TempDir, PathBuf, File) {
        let dir = crate::test_support::scratch(tag);
        let p = dir.path().join("f");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        (dir, p, f)
    }

    #[test]
    fn zeros_crc_matches_reading_zeros() {
        for len in [0u64, 1, 2, 3, 7, 100, 4096, 65537] {
            assert_eq!(
                zeros_crc(len).finalize(),
                crc32fast::hash(&vec![0u8; len as usize]),
                "{len}"
            );
        }
    }

    #[test]
    fn sparse_crc_matches_a_full_read() {
        let (_dir, p, mut f) = temp_file("sparse");
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(b"middle").unwrap();
        f.set_len(7 << 20).unwrap();
        let mut all = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(
            crc32_sparse(&mut f, all.len() as u64).unwrap(),
            crc32fast::hash(&all)
        );
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn extended_crc_is_the_crc_of_the_whole() {
        let a = Appenders::default();
        let (_dir, p, mut f) = temp_file("extend");
        f.write_all(b"first part").unwrap();
        let before = Version::of(&f.metadata().unwrap());
        a.remember_crc(&p, before, crc32fast::hash(b"first part"));
        f.write_all(b", second").unwrap();
        let after = Version::of(&f.metadata().unwrap());
        a.extend_crc(&p, before, after, crc32fast::hash(b", second"), 8);
        assert_eq!(
            a.known_crc(&p, after),
            Some(crc32fast::hash(b"first part, second"))
        );
        // A version it was not told about is unknown.
        assert_eq!(a.known_crc(&p, before), None);
    }

    #[tokio::test]
    async fn one_change_at_a_time_per_file() {
        let a = Arc::new(Appenders::default());
        let g = a.lock(Path::new("/x")).await;
        let other = a.lock(Path::new("/y")).await;
        drop(other);
        let a2 = Arc::clone(&a);
        let waiter = tokio::spawn(async move {
            let _g = a2.lock(Path::new("/x")).await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g);
        waiter.await.unwrap();
    }
}
