//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Splits off the first byte (the selector of a multi-decoder target) from the rest.
pub fn split_selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(s, rest)| (*s, rest))
}

/// An empty directory, made once per process: config files "live" there, so every relative
/// `#include` (and `http.mime_types_filename`) fails cleanly instead of reading real files.
pub fn empty_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("fdfs-fuzz-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create scratch dir");
        d
    })
}

/// A directory with `s0`, `s1` subdirectories, for a mod_fastdfs.conf whose store paths exist.
pub fn store_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("fdfs-fuzz-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for s in ["s0", "s1"] {
            std::fs::create_dir_all(d.join(s)).expect("create scratch dir");
        }
        d
    })
}

/// Config text the harness may hand to the reader: lines that would make it read a file by
/// path (`#include /dev/zero`, `http.mime_types_filename = /dev/stdin`) are refused, so the
/// fuzzer cannot hang the run on a device or read the machine's files. Relative names are
/// kept: they resolve into [`empty_dir`] and fail there, which exercises the error paths.
pub fn config_text_is_safe(text: &str) -> bool {
    !text.split('\n').any(|line| {
        (line.contains("#include") || line.contains("mime_types_filename")) && line.contains('/')
    })
}

/// Bytes as text the way the config reader loads files (invalid UTF-8 replaced).
pub fn lossy(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Cuts `data` at the first `sep` byte.
pub fn cut(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(p) => (&data[..p], &data[p + 1..]),
        None => (data, &[]),
    }
}

/// Reads a big-endian integer from up to 8 leading bytes (missing bytes are zero) and
/// returns it with the rest.
pub fn take_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut raw = [0u8; 8];
    raw[..n].copy_from_slice(&data[..n]);
    (u64::from_be_bytes(raw), &data[n..])
}
