#![forbid(unsafe_code)]

use std::process::ExitCode;

use fdfs_runtime::daemon::{self, Basics, DaemonSpec};
use fdfs_storage::config::StorageConfig;

fn main() -> ExitCode {
    let spec = DaemonSpec {
        name: "fdfs_storaged",
        log_file: "storaged.log",
    };
    daemon::main(
        &spec,
        |path| {
            let cfg = StorageConfig::load(path).map_err(|e| e.to_string())?;
            let basics = Basics {
                base_path: cfg.base_path.clone(),
                log_level: cfg.log_level.clone(),
                disabled: cfg.disabled,
            };
            Ok((cfg, basics))
        },
        |cfg| fdfs_storage::run(cfg, daemon::shutdown_signal()),
    )
}
