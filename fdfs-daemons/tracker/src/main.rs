//! `fdfs_trackerd <tracker.conf> [start|stop|restart] [--foreground]`

use std::process::ExitCode;

use fdfs_runtime::daemon::{self, DaemonSpec};
use fdfs_runtime::server::ShutdownTrigger;
use fdfs_tracker::config::TrackerConfig;
use fdfs_tracker::Tracker;
use tracing::{info, warn};

fn main() -> ExitCode {
    let args = match daemon::parse_args(std::env::args()) {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let config = match TrackerConfig::load(&args.conf) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fdfs_trackerd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if config.disabled {
        eprintln!("fdfs_trackerd: disabled in {}", args.conf.display());
        return ExitCode::FAILURE;
    }
    let spec = DaemonSpec {
        name: "fdfs_trackerd",
        log_file: "trackerd.log",
    };
    let base_path = config.base_path.clone();
    let log_level = config.log_level.clone();
    daemon::launch(&spec, &args, &base_path, &log_level, move || async move {
        for warning in config.unsupported_warnings() {
            warn!("{warning}");
        }
        let tracker = Tracker::bind(config).await.map_err(|e| e.to_string())?;
        let (trigger, shutdown) = ShutdownTrigger::new();
        tokio::spawn(async move {
            daemon::shutdown_signal().await;
            info!("signal received, stopping");
            trigger.trigger();
        });
        tracker.run(shutdown).await.map_err(|e| e.to_string())
    })
}
