//! The life cycle every FastDFS daemon shares: `<prog> <conf> [start|stop|restart]`,
//! a pid file under `base_path/data`, detaching from the terminal unless asked not to.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;
use rustix::io::Errno;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Clone)]
pub struct DaemonArgs {
    pub conf: PathBuf,
    pub action: Action,
    /// Stay attached to the terminal and also log to stderr (for systemd and tests).
    pub foreground: bool,
}

/// Parses `<conf> [start|stop|restart] [-N|--foreground|--no-daemon]`.
pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<DaemonArgs, String> {
    let prog = args.next().unwrap_or_else(|| "daemon".into());
    let usage = format!(
        "Usage: {prog} <config_file> [start | stop | restart] [--foreground]\n\
         \n  start       start the daemon (default); detaches unless --foreground\
         \n  stop        stop the running daemon (graceful: requests in flight finish)\
         \n  restart     stop, then start\
         \n  --foreground, -N   do not detach; log to the log file and to stderr"
    );
    let mut conf = None;
    let mut action = None;
    let mut foreground = false;
    for a in args {
        match a.as_str() {
            "start" if action.is_none() => action = Some(Action::Start),
            "stop" if action.is_none() => action = Some(Action::Stop),
            "restart" if action.is_none() => action = Some(Action::Restart),
            "-N" | "--foreground" | "--no-daemon" | "-n" => foreground = true,
            "-h" | "--help" => return Err(usage),
            _ if conf.is_none() && !a.starts_with('-') => conf = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a:?}\n\n{usage}")),
        }
    }
    Ok(DaemonArgs {
        conf: conf.ok_or(usage)?,
        action: action.unwrap_or(Action::Start),
        foreground,
    })
}

/// Takes a lock on an open pid file without waiting: false if another process holds it.
/// `op` is one of the `NonBlocking` operations.
fn try_lock(file: &fs::File, op: FlockOperation) -> io::Result<bool> {
    match rustix::fs::flock(file, op) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The pid recorded in `pid_file`, if that daemon is still running: it holds a lock on
/// the file for as long as it lives. A process that was killed no longer holds it, even
/// while it is a zombie nobody has reaped, so it never blocks a new start.
pub fn running_pid(pid_file: &Path) -> Option<i32> {
    let file = fs::File::open(pid_file).ok()?;
    if try_lock(&file, FlockOperation::NonBlockingLockShared).unwrap_or(true) {
        return None;
    }
    let pid: i32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

/// Sends SIGTERM to the running daemon and waits until it has exited.
/// Returns false if no daemon was running.
pub fn stop_running(pid_file: &Path, wait: Duration) -> io::Result<bool> {
    use rustix::process::{kill_process, Pid, Signal};
    let Some(pid) = running_pid(pid_file) else {
        return Ok(false);
    };
    // `running_pid` returns only positive pids.
    let target = Pid::from_raw(pid).ok_or(io::ErrorKind::InvalidData)?;
    kill_process(target, Signal::TERM)?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if running_pid(pid_file).is_none() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("process {pid} did not exit within {} s", wait.as_secs()),
    ))
}

/// Detaches from the terminal: fork, new session, stdio to /dev/null.
/// Must run before any thread (and so before the tokio runtime) starts.
pub fn daemonize() -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    use std::os::fd::{AsRawFd, IntoRawFd};
    crate::sys::fork_and_leave_parent()?;
    rustix::process::setsid()?;
    crate::sys::fork_and_leave_parent()?;
    if let Ok(devnull) = rustix::fs::open("/dev/null", OFlags::RDWR, Mode::empty()) {
        let _ = rustix::stdio::dup2_stdin(&devnull);
        let _ = rustix::stdio::dup2_stdout(&devnull);
        let _ = rustix::stdio::dup2_stderr(&devnull);
        if devnull.as_raw_fd() <= 2 {
            // It took the number of a closed stdio descriptor: that one stays open.
            let _ = devnull.into_raw_fd();
        }
    }
    Ok(())
}

/// A pid file, locked for as long as the daemon lives, that removes itself when the
/// daemon ends.
pub struct PidFile {
    path: PathBuf,
    /// Holds the lock.
    _file: fs::File,
}

impl PidFile {
    /// Locks the pid file and writes our pid; fails if another instance holds it.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !try_lock(&file, FlockOperation::NonBlockingLockExclusive)? {
            let pid = fs::read_to_string(path).unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("already running as pid {} ({})", pid.trim(), path.display()),
            ));
        }
        file.set_len(0)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _file: file,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Resolves when SIGTERM, SIGINT or SIGQUIT arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut quit = signal(SignalKind::quit()).expect("SIGQUIT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = quit.recv() => {}
    }
}

/// Names that differ between the daemons.
pub struct DaemonSpec {
    /// Program name, also the pid file name: `fdfs_trackerd`.
    pub name: &'static str,
    /// Log file under `base_path/logs`: `trackerd.log`.
    pub log_file: &'static str,
}

/// Runs the shared life cycle: stop/restart through the pid file under
/// `base_path/data`, detach unless in the foreground, log under `base_path/logs`, then
/// run `serve` on a tokio runtime. `serve` should return when [`shutdown_signal`] fires.
pub fn launch<F, Fut>(
    spec: &DaemonSpec,
    args: &DaemonArgs,
    base_path: &Path,
    log_level: &str,
    serve: F,
) -> std::process::ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    use std::process::ExitCode;
    let pid_path = base_path.join("data").join(format!("{}.pid", spec.name));
    if matches!(args.action, Action::Stop | Action::Restart) {
        match stop_running(&pid_path, Duration::from_secs(60)) {
            Ok(true) => eprintln!("{}: stopped", spec.name),
            Ok(false) if args.action == Action::Stop => {
                eprintln!(
                    "{}: not running ({} has no live pid)",
                    spec.name,
                    pid_path.display()
                );
                return ExitCode::FAILURE;
            }
            Ok(false) => {}
            Err(e) => {
                eprintln!("{}: cannot stop: {e}", spec.name);
                return ExitCode::FAILURE;
            }
        }
        if args.action == Action::Stop {
            return ExitCode::SUCCESS;
        }
    }
    let Some(level) = crate::logging::level_from_name(log_level) else {
        eprintln!("{}: unknown log_level {log_level:?}", spec.name);
        return ExitCode::FAILURE;
    };
    for dir in ["data", "logs"] {
        if let Err(e) = fs::create_dir_all(base_path.join(dir)) {
            eprintln!(
                "{}: cannot create {}: {e}",
                spec.name,
                base_path.join(dir).display()
            );
            return ExitCode::FAILURE;
        }
    }
    if let Some(pid) = running_pid(&pid_path) {
        eprintln!("{}: already running as pid {pid}", spec.name);
        return ExitCode::FAILURE;
    }
    if !args.foreground {
        if let Err(e) = daemonize() {
            eprintln!("{}: cannot detach: {e}", spec.name);
            return ExitCode::FAILURE;
        }
    }
    let _pid = match PidFile::create(&pid_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    let _log = match crate::logging::init(
        &base_path.join("logs"),
        spec.log_file,
        level,
        args.foreground,
    ) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{}: cannot open log: {e}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "{} {} starting, pid {}",
        spec.name,
        fdfs_proto::VERSION_TEXT,
        std::process::id()
    );
    match runtime.block_on(serve()) {
        Ok(()) => {
            tracing::info!("{} stopped", spec.name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{}: {e}", spec.name);
            eprintln!("{}: {e}", spec.name);
            ExitCode::FAILURE
        }
    }
}

/// Lifts the soft limit on open files to the hard limit: every connection is a
/// descriptor, and thousands of idle clients must not starve new ones.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // `None` is RLIM_INFINITY.
    let lim = getrlimit(Resource::Nofile);
    if lim.current.unwrap_or(u64::MAX) >= lim.maximum.unwrap_or(u64::MAX) {
        return;
    }
    let wanted = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    if let Err(e) = setrlimit(Resource::Nofile, wanted) {
        tracing::warn!(
            "cannot raise the open files limit to {}: {}",
            lim.maximum.unwrap_or(u64::MAX),
            io::Error::from(e)
        );
    }
}

/// What the life cycle needs to know from a daemon's configuration.
pub struct Basics {
    pub base_path: PathBuf,
    pub log_level: String,
    pub disabled: bool,
}

/// A daemon's whole `main`: parse the arguments, load the configuration with `load`
/// (an error names file, line and key), then [`launch`] `serve` with it.
pub fn main<C, L, F, Fut>(spec: &DaemonSpec, load: L, serve: F) -> std::process::ExitCode
where
    L: FnOnce(&Path) -> Result<(C, Basics), String>,
    F: FnOnce(C) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    use std::process::ExitCode;
    let args = match parse_args(std::env::args()) {
        Ok(a) => a,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let (config, basics) = match load(&args.conf) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    if basics.disabled && args.action != Action::Stop {
        eprintln!("{}: disabled in {}", spec.name, args.conf.display());
        return ExitCode::FAILURE;
    }
    launch(
        spec,
        &args,
        &basics.base_path,
        &basics.log_level,
        move || serve(config),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<DaemonArgs, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_upstream_forms() {
        let a = args(&["fdfs_trackerd", "/etc/fdfs/tracker.conf"]).unwrap();
        assert_eq!(a.action, Action::Start);
        assert!(!a.foreground);
        let a = args(&["fdfs_trackerd", "/etc/fdfs/tracker.conf", "restart"]).unwrap();
        assert_eq!(a.action, Action::Restart);
        let a = args(&["x", "c.conf", "start", "--foreground"]).unwrap();
        assert!(a.foreground);
        assert!(args(&["x"]).is_err());
        assert!(args(&["x", "c.conf", "bogus"]).is_err());
    }

    #[test]
    fn pid_file_detects_running_instance() {
        let dir = std::env::temp_dir().join(format!("fdfs-pid-{}", std::process::id()));
        let path = dir.join("x.pid");
        let pid = PidFile::create(&path).unwrap();
        assert_eq!(running_pid(&path), Some(std::process::id() as i32));
        assert!(PidFile::create(&path).is_err());
        drop(pid);
        assert!(!path.exists());
        // A pid that exists but does not hold the lock (a killed daemon's number, now a
        // zombie or reused by another process) is not a running instance.
        fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(running_pid(&path), None);
        let again = PidFile::create(&path).unwrap();
        assert_eq!(running_pid(&path), Some(std::process::id() as i32));
        drop(again);
        let _ = fs::remove_dir_all(dir);
    }
}
