use std::process::ExitCode;

use fdfs_runtime::daemon::{self, DaemonSpec};
use fdfs_storage::config::StorageConfig;

fn main() -> ExitCode {
    let args = match daemon::parse_args(std::env::args()) {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let cfg = match StorageConfig::load(&args.conf) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fdfs_storaged: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cfg.disabled {
        eprintln!("fdfs_storaged: disabled in {}", args.conf.display());
        return ExitCode::FAILURE;
    }
    let spec = DaemonSpec {
        name: "fdfs_storaged",
        log_file: "storaged.log",
    };
    let base_path = cfg.base_path.clone();
    let log_level = cfg.log_level.clone();
    daemon::launch(&spec, &args, &base_path, &log_level, move || {
        fdfs_storage::run(cfg, daemon::shutdown_signal())
    })
}
