//! Logging to `base_path/logs/<name>.log`, as upstream does, and to stderr in the
//! foreground.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// Maps FastDFS's `log_level` words (syslog names) to a tracing level.
pub fn level_from_name(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "emerg" | "alert" | "crit" | "err" | "error" => LevelFilter::ERROR,
        "warn" | "warning" => LevelFilter::WARN,
        "notice" | "info" | "" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        _ => return None,
    })
}

/// Starts logging; keep the guard alive for the life of the process.
pub fn init(
    log_dir: &Path,
    file_name: &str,
    level: LevelFilter,
    foreground: bool,
) -> std::io::Result<WorkerGuard> {
    std::fs::create_dir_all(log_dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(file_name))?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false);
    let result = if foreground {
        builder.with_writer(writer.and(std::io::stderr)).try_init()
    } else {
        builder.with_writer(writer).try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
    Ok(guard)
}
