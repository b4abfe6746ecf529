//! What the tracker test binaries share: scratch directories under cargo's
//! `target/tmp/` (never the system's temporary directory).

use std::path::PathBuf;

/// A fresh directory `target/tmp/<prefix>-<pid>-<name>`. Directories a finished run of the
/// same test binary left behind (its pid is gone) are removed the first time.
pub fn scratch(prefix: &str, name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    SWEPT.call_once(|| sweep(&tmp, prefix));
    let dir = tmp.join(format!("{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sweep(tmp: &std::path::Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let pid = rest
            .trim_start_matches('-')
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
