//! What every `fdfs_*` tool shares: argument errors, config loading, error messages,
//! exit codes and the async runtime.
//!
//! Exit codes: 0 on success; 2 for a usage error; 1 when the config file cannot be
//! loaded; otherwise the errno of the failure (never 0 — unlike upstream's
//! `fdfs_download_file`, every failure is reported in the exit status).

use std::future::Future;
use std::path::Path;

use fdfs_runtime::Error;

use crate::config::ClientConfig;
use crate::format::errno_text;

/// Exit code of a usage error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the config file cannot be used.
pub const EXIT_CONFIG: i32 = 1;

/// An I/O error's reason without Rust's "(os error N)" suffix.
fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Why a tool stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// One line for stderr (without the tool name).
    pub message: String,
    pub exit_code: i32,
    /// Print the usage text after the message.
    pub show_usage: bool,
}

impl ToolError {
    pub fn usage(message: impl Into<String>) -> Self {
        ToolError {
            message: message.into(),
            exit_code: EXIT_USAGE,
            show_usage: true,
        }
    }

    /// The local file of an upload or append cannot be read: says which file, and why,
    /// before anything is sent.
    pub fn local_file(op: &str, path: &Path) -> Option<Self> {
        let err = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => return None,
            Ok(_) => std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            Err(e) => e,
        };
        let code = fdfs_proto::errno::from_io(&err).max(1);
        Some(ToolError {
            message: format!(
                "{op} failed, error no: {code}, error info: cannot read the local file {}: {}",
                path.display(),
                io_reason(&err)
            ),
            exit_code: code as i32,
            show_usage: false,
        })
    }

    /// A failed operation: names it, with the errno, its meaning and any detail.
    pub fn op(op: &str, err: &Error) -> Self {
        let code = err.errno();
        let mut message = format!(
            "{op} failed, error no: {code}, error info: {}",
            errno_text(code)
        );
        match err {
            Error::Status(_) => {}
            other => {
                let detail = other.to_string();
                // A bare OS error says nothing the errno text does not.
                if detail != errno_text(code) && !detail.contains("(os error") {
                    message.push_str(&format!(" ({detail})"));
                }
            }
        }
        ToolError {
            message,
            exit_code: (code as i32).max(1),
            show_usage: false,
        }
    }

    /// A failure with a given errno and text.
    pub fn errno(op: &str, code: u8) -> Self {
        Self::op(op, &Error::Status(code))
    }
}

/// Loads `client.conf`; failures exit with [`EXIT_CONFIG`].
pub fn load_config(path: &str) -> Result<ClientConfig, ToolError> {
    ClientConfig::load(Path::new(path)).map_err(|e| ToolError {
        message: format!("load config file {path} failed: {e}"),
        exit_code: EXIT_CONFIG,
        show_usage: false,
    })
}

/// Fails with a usage error unless at least `n` arguments were given.
pub fn need(args: &[String], n: usize) -> Result<(), ToolError> {
    if args.len() < n {
        return Err(ToolError::usage(""));
    }
    Ok(())
}

/// Parses an unsigned decimal argument.
pub fn parse_u64(text: &str, what: &str) -> Result<u64, ToolError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ToolError::usage(format!(
            "invalid {what}: {text:?} (expected a non-negative integer)"
        )));
    }
    text.parse()
        .map_err(|_| ToolError::usage(format!("invalid {what}: {text:?} (too large)")))
}

/// Prints a tool error to stderr (and the usage when asked).
pub fn report(tool: &str, usage: &str, err: &ToolError) {
    if !err.message.is_empty() {
        eprintln!("{tool}: {}", err.message);
    }
    if err.show_usage {
        eprintln!("Usage: {tool} {usage}");
    }
}

/// Entry point of a tool: parses `std::env::args`, runs the tool on a single-threaded
/// runtime and exits with the right code.
pub fn main<A, P, R, Fut>(tool: &str, usage: &str, parse: P, run: R) -> !
where
    P: FnOnce(&[String]) -> Result<A, ToolError>,
    R: FnOnce(A) -> Fut,
    Fut: Future<Output = Result<(), ToolError>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match parse(&args) {
        Err(e) => {
            report(tool, usage, &e);
            e.exit_code
        }
        Ok(a) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("{tool}: cannot start the async runtime: {e}");
                    std::process::exit(EXIT_CONFIG);
                }
            };
            match rt.block_on(run(a)) {
                Ok(()) => 0,
                Err(e) => {
                    report(tool, usage, &e);
                    e.exit_code
                }
            }
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_errors_carry_errno_and_meaning() {
        let e = ToolError::op("upload file", &Error::Status(28));
        assert_eq!(
            e.message,
            "upload file failed, error no: 28, error info: no space left on device"
        );
        assert_eq!(e.exit_code, 28);
        let io = Error::Io(std::io::Error::from_raw_os_error(111));
        let e = ToolError::op("download file", &io);
        assert!(e.message.starts_with("download file failed, error no: 111"));
        assert_eq!(e.exit_code, 111);
        let p = Error::Proto(fdfs_proto::ProtoError::length("40 or 70", 3));
        let e = ToolError::op("upload file", &p);
        assert!(e.message.contains("error no: 22"), "{}", e.message);
        let missing =
            ToolError::local_file("upload file", Path::new("/nonexistent/a.jpg")).unwrap();
        assert_eq!(
            missing.message,
            "upload file failed, error no: 2, error info: cannot read the local file \
             /nonexistent/a.jpg: No such file or directory"
        );
        assert_eq!(missing.exit_code, 2);
        let dir = ToolError::local_file("upload file", Path::new("/")).unwrap();
        assert!(
            dir.message.contains("not a regular file"),
            "{}",
            dir.message
        );
        assert!(ToolError::local_file("upload file", Path::new("/etc/hostname")).is_none());
        assert!(e.message.contains("40 or 70"), "{}", e.message);
        assert_eq!(e.exit_code, 22);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0", "x").unwrap(), 0);
        assert_eq!(parse_u64("123", "x").unwrap(), 123);
        assert!(parse_u64("-1", "x").is_err());
        assert!(parse_u64("1k", "x").is_err());
        assert_eq!(parse_u64("", "x").unwrap_err().exit_code, EXIT_USAGE);
    }

    #[test]
    fn missing_config_exits_1() {
        let e = load_config("/nonexistent/client.conf").unwrap_err();
        assert_eq!(e.exit_code, EXIT_CONFIG);
        assert!(e.message.contains("/nonexistent/client.conf"));
    }
}
