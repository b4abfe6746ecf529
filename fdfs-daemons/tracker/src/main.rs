//! `fdfs_trackerd <tracker.conf> [start|stop|restart] [--foreground]`

#![forbid(unsafe_code)]

use std::process::ExitCode;

use fdfs_runtime::daemon::{self, Basics, DaemonSpec};
use fdfs_runtime::server::ShutdownTrigger;
use fdfs_tracker::config::TrackerConfig;
use fdfs_tracker::Tracker;
use tracing::{info, warn};

fn main() -> ExitCode {
    let spec = DaemonSpec {
        name: "fdfs_trackerd",
        log_file: "trackerd.log",
    };
    daemon::main(
        &spec,
        |path| {
            let cfg = TrackerConfig::load(path).map_err(|e| e.to_string())?;
            let basics = Basics {
                base_path: cfg.base_path.clone(),
                log_level: cfg.log_level.clone(),
                disabled: cfg.disabled,
            };
            Ok((cfg, basics))
        },
        |config| async move {
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
        },
    )
}
