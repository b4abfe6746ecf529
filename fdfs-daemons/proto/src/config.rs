//! Reader for FastDFS's ini-style config files (tracker.conf, storage.conf,
//! client.conf, mod_fastdfs.conf, http.conf), following libfastcommon's
//! syntax. Value parsing is stricter than upstream: a malformed value is an
//! error naming the file, the line and the key.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest key kept (longer keys are truncated, as upstream does).
pub const MAX_KEY_LEN: usize = 63;
/// Longest value kept (longer values are truncated, as upstream does).
pub const MAX_VALUE_LEN: usize = 255;
/// Deepest `#include` nesting accepted.
pub const MAX_INCLUDE_DEPTH: usize = 16;

const ONE_MB: u64 = 1024 * 1024;

/// One `key = value` line, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// Everything that can go wrong while reading or interpreting a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The main file could not be read.
    #[error("cannot read {file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An `#include` could not be honoured (missing file, cycle, too deep).
    #[error("{file}:{line}: {msg}")]
    Include {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    /// A line that is neither a comment, a section header nor `key = value`.
    #[error("{file}:{line}: {msg}")]
    Syntax {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    /// A value that does not parse as what the key expects.
    #[error("{file}:{line}: invalid value {value:?} for `{key}`: {expected}")]
    Invalid {
        file: PathBuf,
        line: usize,
        key: String,
        value: String,
        expected: String,
    },
    /// A required key is absent (or empty where a value is required).
    #[error("{file}: missing required key `{key}`{}", in_section(.section))]
    Missing {
        file: PathBuf,
        section: String,
        key: String,
    },
    /// `Section::invalid` on a key that is not present in the file: the
    /// caller rejected the built-in default / the absence of the key.
    #[error("{file}: invalid setting for `{key}`{}: {expected}", in_section(.section))]
    Rejected {
        file: PathBuf,
        section: String,
        key: String,
        expected: String,
    },
}

fn in_section(section: &str) -> String {
    if section.is_empty() {
        String::new()
    } else {
        format!(" in section [{section}]")
    }
}

/// A parsed config file: the main path plus entries grouped by section.
#[derive(Debug, Clone)]
pub struct IniFile {
    path: PathBuf,
    /// `(name, entries in file order)`; index 0 is the global section `""`.
    sections: Vec<(String, Vec<Entry>)>,
}

struct Loader {
    sections: Vec<(String, Vec<Entry>)>,
    current: usize,
    /// Canonical paths of the files currently being read (include stack).
    stack: Vec<PathBuf>,
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn read_text(path: &Path) -> std::io::Result<String> {
    std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Truncate to at most `max` bytes on a char boundary, then drop trailing blanks.
fn truncated(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim_end().to_string()
}

impl Loader {
    fn parse_text(&mut self, text: &str, file: &Path) -> Result<(), ConfigError> {
        for (idx, raw) in text.split('\n').enumerate() {
            let lineno = idx + 1;
            let syntax = |msg: String| ConfigError::Syntax {
                file: file.to_path_buf(),
                line: lineno,
                msg,
            };
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("#include") {
                if rest.starts_with([' ', '\t']) {
                    self.include(rest.trim(), file, lineno)?;
                }
                continue;
            }
            if line.starts_with('#') {
                continue; // comment, or an unsupported `#@` directive
            }
            if line.len() >= 2 && line.starts_with('[') && line.ends_with(']') {
                let name = line[1..line.len() - 1].trim();
                let found = self.sections.iter().position(|(n, _)| n == name);
                self.current = found.unwrap_or_else(|| {
                    self.sections.push((name.to_string(), Vec::new()));
                    self.sections.len() - 1
                });
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(syntax(format!("expected `key = value`, found {line:?}")));
            };
            let key = truncated(key.trim(), MAX_KEY_LEN);
            if key.is_empty() {
                return Err(syntax(format!("empty key in {line:?}")));
            }
            let value = truncated(value.trim(), MAX_VALUE_LEN);
            self.sections[self.current].1.push(Entry {
                key,
                value,
                file: file.to_path_buf(),
                line: lineno,
            });
        }
        Ok(())
    }

    fn include(&mut self, target: &str, file: &Path, lineno: usize) -> Result<(), ConfigError> {
        let err = |msg: String| ConfigError::Include {
            file: file.to_path_buf(),
            line: lineno,
            msg,
        };
        if target.is_empty() {
            return Err(err("#include without a file name".to_string()));
        }
        // relative to the including file's directory; absolute paths stay as is
        let resolved = file.parent().unwrap_or(Path::new("")).join(target);
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(err(format!(
                "cannot include {}: includes nested deeper than {MAX_INCLUDE_DEPTH}",
                resolved.display()
            )));
        }
        let text = read_text(&resolved)
            .map_err(|e| err(format!("cannot include {}: {e}", resolved.display())))?;
        let canon = canonical(&resolved);
        if self.stack.contains(&canon) {
            return Err(err(format!(
                "include cycle: {} is already being read",
                resolved.display()
            )));
        }
        // Upstream reads included files into the global section and stays
        // in the global section afterwards.
        self.current = 0;
        self.stack.push(canon);
        self.parse_text(&text, &resolved)?;
        self.stack.pop();
        self.current = 0;
        Ok(())
    }
}

impl IniFile {
    /// Read and parse the file at `path` (and the files it includes).
    pub fn load(path: impl AsRef<Path>) -> Result<IniFile, ConfigError> {
        let path = path.as_ref();
        let text = read_text(path).map_err(|source| ConfigError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse `text` as if it were the content of `path` (includes resolve
    /// relative to `path`'s directory).
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<IniFile, ConfigError> {
        let path = path.as_ref();
        let mut loader = Loader {
            sections: vec![(String::new(), Vec::new())],
            current: 0,
            stack: vec![canonical(path)],
        };
        loader.parse_text(text, path)?;
        Ok(IniFile {
            path: path.to_path_buf(),
            sections: loader.sections,
        })
    }

    /// The main file's path, as given to `load`/`parse`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The global section (entries before any `[section]`, after `[]`, and
    /// everything read through `#include`).
    pub fn global(&self) -> Section<'_> {
        self.make_section(0)
    }

    /// A named section; `""` is the global section. `None` if never declared.
    pub fn section(&self, name: &str) -> Option<Section<'_>> {
        let i = self.sections.iter().position(|(n, _)| n == name)?;
        Some(self.make_section(i))
    }

    /// Names of the declared (non-global) sections, in first-seen order.
    pub fn section_names(&self) -> Vec<&str> {
        self.sections[1..].iter().map(|(n, _)| n.as_str()).collect()
    }

    fn make_section(&self, i: usize) -> Section<'_> {
        let (name, entries) = &self.sections[i];
        Section {
            path: &self.path,
            name,
            entries,
        }
    }
}

/// A view of one section's entries.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    path: &'a Path,
    name: &'a str,
    entries: &'a [Entry],
}

fn invalid_entry(e: &Entry, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: e.file.clone(),
        line: e.line,
        key: e.key.clone(),
        value: e.value.clone(),
        expected: expected.into(),
    }
}

impl<'a> Section<'a> {
    /// The section's name (`""` for global).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The last occurrence of `key`.
    pub fn entry(&self, key: &str) -> Option<&'a Entry> {
        self.entries.iter().rev().find(|e| e.key == key)
    }

    /// All occurrences of `key`, in file order.
    pub fn entries(&self, key: &str) -> Vec<&'a Entry> {
        self.entries.iter().filter(|e| e.key == key).collect()
    }

    /// Distinct keys in first-seen order.
    pub fn keys(&self) -> Vec<&'a str> {
        let mut out: Vec<&'a str> = Vec::new();
        for e in self.entries {
            if !out.contains(&e.key.as_str()) {
                out.push(&e.key);
            }
        }
        out
    }

    /// The last value of `key` (empty string for `key =`).
    pub fn str(&self, key: &str) -> Option<&'a str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// All values of `key`, in file order.
    pub fn all(&self, key: &str) -> Vec<&'a str> {
        self.entries
            .iter()
            .filter(|e| e.key == key)
            .map(|e| e.value.as_str())
            .collect()
    }

    /// The last value of `key`; missing or empty is an error.
    pub fn require_str(&self, key: &str) -> Result<&'a str, ConfigError> {
        match self.entry(key) {
            Some(e) if !e.value.is_empty() => Ok(&e.value),
            _ => Err(ConfigError::Missing {
                file: self.path.to_path_buf(),
                section: self.name.to_string(),
                key: key.to_string(),
            }),
        }
    }

    /// Last non-empty occurrence is parsed by `f`; absent/empty gives `default`.
    fn typed<T>(
        &self,
        key: &str,
        default: T,
        f: impl FnOnce(&'a Entry) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        match self.entry(key) {
            Some(e) if !e.value.is_empty() => f(e),
            _ => Ok(default),
        }
    }

    /// `true|yes|on|1` / `false|no|off|0`, case-insensitive.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        self.typed(key, default, |e| {
            parse_bool(&e.value)
                .ok_or_else(|| invalid_entry(e, "a boolean (true/false, yes/no, on/off, 1/0)"))
        })
    }

    /// A decimal integer with optional sign.
    pub fn int(&self, key: &str, default: i64) -> Result<i64, ConfigError> {
        self.typed(key, default, |e| {
            parse_int(&e.value).ok_or_else(|| invalid_entry(e, "an integer"))
        })
    }

    /// An integer in `min..=max` (the default is returned unchecked).
    pub fn int_in(&self, key: &str, default: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
        self.typed(key, default, |e| {
            let expected = || format!("an integer between {min} and {max}");
            match parse_int(&e.value) {
                Some(v) if (min..=max).contains(&v) => Ok(v),
                _ => Err(invalid_entry(e, expected())),
            }
        })
    }

    /// A byte size such as `256KB`, `64 MB`, `1g` or `4096` (powers of 1024).
    pub fn size(&self, key: &str, default: u64) -> Result<u64, ConfigError> {
        self.typed(key, default, |e| {
            parse_size(&e.value).ok_or_else(|| invalid_entry(e, SIZE_EXPECTED))
        })
    }

    /// A reservation: `10%` / `20.5%` or a size (`20G`, `1024`).
    pub fn space(&self, key: &str, default: SpaceLimit) -> Result<SpaceLimit, ConfigError> {
        self.typed(key, default, |e| {
            parse_space(&e.value).ok_or_else(|| invalid_entry(e, SPACE_EXPECTED))
        })
    }

    /// A time of day `HH:MM` (00:00 to 23:59).
    pub fn time_of_day(&self, key: &str, default: TimeOfDay) -> Result<TimeOfDay, ConfigError> {
        self.typed(key, default, |e| {
            parse_time(&e.value)
                .ok_or_else(|| invalid_entry(e, "a time of day HH:MM (00:00 to 23:59)"))
        })
    }

    /// One of `choices` (case-insensitive); returns its index.
    pub fn choice(
        &self,
        key: &str,
        choices: &[&str],
        default: usize,
    ) -> Result<usize, ConfigError> {
        self.typed(key, default, |e| {
            choices
                .iter()
                .position(|c| c.eq_ignore_ascii_case(&e.value))
                .ok_or_else(|| invalid_entry(e, format!("one of: {}", choices.join(", "))))
        })
    }

    /// A listening address `ip:port` (`[ipv6]:port`), or a bare port for every address;
    /// `None` when the key is absent or empty (the listener is off).
    pub fn listen_addr(&self, key: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(text) = self.str(key).map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let addr = match text.parse::<u16>() {
            Ok(port) => Some(std::net::SocketAddr::from(([0, 0, 0, 0], port))),
            Err(_) => text.parse().ok(),
        };
        match addr {
            Some(a) if a.port() != 0 => Ok(Some(a)),
            _ => Err(self.invalid(key, "ip:port, [ipv6]:port or a port (empty: off)")),
        }
    }

    /// An error for a value the caller found invalid. Names file and line of
    /// the last occurrence, or the main file if the key is absent.
    pub fn invalid(&self, key: &str, expected: &str) -> ConfigError {
        match self.entry(key) {
            Some(e) => invalid_entry(e, expected),
            None => ConfigError::Rejected {
                file: self.path.to_path_buf(),
                section: self.name.to_string(),
                key: key.to_string(),
                expected: expected.to_string(),
            },
        }
    }
}

const SPACE_EXPECTED: &str = "a percentage between 0% and 100% (exclusive) or a size";
const SIZE_EXPECTED: &str = "a size: a number with optional unit K, KB, M, MB, G, GB, T or TB";

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim_start().to_ascii_uppercase().as_str() {
        "" => 0,
        "K" | "KB" => 10,
        "M" | "MB" => 20,
        "G" | "GB" => 30,
        "T" | "TB" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

fn parse_space(s: &str) -> Option<SpaceLimit> {
    if let Some(pct) = s.strip_suffix('%') {
        let pct = pct.trim_end();
        if pct.is_empty() || !pct.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        let p: f64 = pct.parse().ok()?;
        return (p > 0.0 && p < 100.0).then(|| SpaceLimit::Ratio(p / 100.0));
    }
    parse_size(s).map(SpaceLimit::Bytes)
}

fn parse_time(s: &str) -> Option<TimeOfDay> {
    let (h, m) = s.split_once(':')?;
    let field = |f: &str| -> Option<u8> {
        if f.is_empty() || f.len() > 2 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        f.parse().ok()
    };
    let (hour, minute) = (field(h)?, field(m)?);
    (hour < 24 && minute < 60).then_some(TimeOfDay { hour, minute })
}

/// Disk space to keep free (`reserved_storage_space`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpaceLimit {
    /// An absolute amount in bytes.
    Bytes(u64),
    /// A fraction of the path's total space (0.10 for 10%).
    Ratio(f64),
}

impl SpaceLimit {
    /// Reserved MB for a path of `total_mb`.
    pub fn reserved_mb(&self, total_mb: u64) -> u64 {
        match *self {
            SpaceLimit::Bytes(b) => b / ONE_MB,
            SpaceLimit::Ratio(r) => (total_mb as f64 * r) as u64,
        }
    }

    /// Upstream's text form (tracker parameter reply): `1024MB` or `20.00%`.
    pub fn to_fdfs_string(&self) -> String {
        match *self {
            SpaceLimit::Bytes(b) => format!("{}MB", b / ONE_MB),
            SpaceLimit::Ratio(r) => format!("{:.2}%", r * 100.0),
        }
    }
}

/// A time of day (`sync_start_time`, `sync_end_time`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty scratch directory under the system temp dir.
    fn scratch() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let name = format!("fdfs-cfg-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ini(text: &str) -> IniFile {
        IniFile::parse(text, "/etc/fdfs/test.conf").unwrap()
    }

    fn err_text(text: &str, path: &str) -> String {
        IniFile::parse(text, path).unwrap_err().to_string()
    }

    /// Checks `;`-separated `value => expected` cases for `k = value`, where
    /// expected is the Debug form of the result (quotes stripped) or `err`.
    fn cases<T: fmt::Debug>(get: impl Fn(Section<'_>) -> Result<T, ConfigError>, table: &str) {
        for case in table.split(';') {
            let (value, want) = case.split_once("=>").unwrap();
            let (value, want) = (value.trim(), want.trim());
            let f = ini(&format!("k = {value}\n"));
            let got = match get(f.global()) {
                Ok(v) => format!("{v:?}").trim_matches('"').to_string(),
                Err(e) => {
                    assert!(e.to_string().contains(" for `k`: "), "{e}");
                    "err".to_string()
                }
            };
            assert_eq!(got, want, "value {value:?}");
        }
    }

    const TRACKER: &str = "# is this config file disabled\ndisabled = false\nbind_addr =\n\
        port = 22122\nnetwork_timeout = 60\nbase_path = /home/yuqing/fastdfs\n\
        max_buff_size = 128KB\nreserved_storage_space = 20%\nlog_level = info\n\
        trunk_file_size = 64MB\ntrunk_create_file_time_base = 02:00\n\
        response_ip_addr_size = auto\nallow_hosts = 10.0.1.[1-15]\n\
        allow_hosts = host[01-08,20-25].domain.com\nhttp.server_port = 8080\n";

    #[test]
    fn listen_addresses() {
        cases(
            |s| s.listen_addr("k"),
            " => None; 9101 => Some(0.0.0.0:9101); 127.0.0.5:9101 => Some(127.0.0.5:9101); \
             [::1]:9101 => Some([::1]:9101); 0 => err; 127.0.0.5 => err; host:1 => err",
        );
    }

    #[test]
    fn realistic_tracker_conf() {
        let f = ini(TRACKER);
        let g = f.global();
        assert!(!g.bool("disabled", true).unwrap());
        assert_eq!(g.str("bind_addr"), Some(""));
        assert_eq!(g.int_in("port", 0, 1, 65535).unwrap(), 22122);
        assert_eq!(g.int("network_timeout", 30).unwrap(), 60);
        assert_eq!(g.int("absent", 7).unwrap(), 7);
        assert_eq!(g.require_str("base_path").unwrap(), "/home/yuqing/fastdfs");
        assert_eq!(g.size("max_buff_size", 0).unwrap(), 128 * 1024);
        assert_eq!(g.size("trunk_file_size", 0).unwrap(), 64 * ONE_MB);
        let rs = g.space("reserved_storage_space", SpaceLimit::Bytes(0));
        assert_eq!(rs.unwrap(), SpaceLimit::Ratio(0.20));
        let midnight = TimeOfDay { hour: 0, minute: 0 };
        let t = g.time_of_day("trunk_create_file_time_base", midnight);
        assert_eq!(t.unwrap(), TimeOfDay { hour: 2, minute: 0 });
        let ip_sizes = ["IPv4", "Auto"];
        assert_eq!(g.choice("response_ip_addr_size", &ip_sizes, 0).unwrap(), 1);
        assert_eq!(g.choice("absent", &ip_sizes, 1).unwrap(), 1);
        let e = g.choice("log_level", &ip_sizes, 0).unwrap_err().to_string();
        assert!(e.ends_with("for `log_level`: one of: IPv4, Auto"), "{e}");
        let hosts = ["10.0.1.[1-15]", "host[01-08,20-25].domain.com"];
        assert_eq!(g.all("allow_hosts"), hosts);
        assert_eq!(g.str("http.server_port"), Some("8080"));
        assert_eq!(&g.keys()[..3], ["disabled", "bind_addr", "port"]);
        assert_eq!(g.keys().len(), 13);
        let port = g.entry("port").unwrap();
        assert_eq!(
            (port.line, port.file.to_str()),
            (4, Some("/etc/fdfs/test.conf"))
        );
        assert!(f.section_names().is_empty());
    }

    #[test]
    fn repeated_keys_keep_order_last_wins() {
        let f = ini("tracker_server = 10.0.0.1:22122\ntracker_server=10.0.0.2:22122\n");
        let g = f.global();
        let all = g.all("tracker_server");
        assert_eq!(all, ["10.0.0.1:22122", "10.0.0.2:22122"]);
        assert_eq!(g.str("tracker_server"), Some("10.0.0.2:22122"));
        let entries = g.entries("tracker_server");
        assert_eq!((entries[0].line, entries[1].line), (1, 2));
        assert!(g.entries("nope").is_empty() && g.all("nope").is_empty());
    }

    #[test]
    fn sections_merge_without_global_fallback() {
        let f = ini("port = 1\n[group1]\nstore_path0 = /a\n[group2]\nport = 2\n\
                     [group1]\nstore_path0 = /b\n[]\nextra = x\n");
        assert_eq!(f.section_names(), ["group1", "group2"]);
        let g1 = f.section("group1").unwrap();
        assert_eq!(g1.name(), "group1");
        assert_eq!(g1.all("store_path0"), ["/a", "/b"]);
        assert_eq!((g1.str("port"), g1.int("port", 9).unwrap()), (None, 9));
        assert_eq!(f.section("group2").unwrap().int("port", 0).unwrap(), 2);
        assert_eq!(f.global().int("port", 0).unwrap(), 1);
        assert_eq!(f.section("").unwrap().str("extra"), Some("x"));
        assert!(f.section("group3").is_none());
        let e = g1.require_str("port").unwrap_err().to_string();
        let want = "/etc/fdfs/test.conf: missing required key `port` in section [group1]";
        assert_eq!(e, want);
    }

    #[test]
    fn include_relative_path() {
        let dir = scratch();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let http = "http.anti_steal.check_token = true\n[mime]\nx = y\n";
        let http = write(&dir, "sub/http.conf", http);
        let main = "[group1]\ngroup_name = g\n#include sub/http.conf\nafter = 1\n";
        let main = write(&dir, "mod_fastdfs.conf", main);
        let f = IniFile::load(&main).unwrap();
        assert_eq!(f.path(), main);
        let g = f.global();
        assert!(g.bool("http.anti_steal.check_token", false).unwrap());
        let e = g.entry("http.anti_steal.check_token").unwrap();
        assert_eq!((&e.file, e.line), (&http, 1));
        // after an include the reader is back in the global section (as upstream)
        assert_eq!(g.str("after"), Some("1"));
        assert_eq!(g.entry("after").unwrap().file, main);
        assert_eq!(f.section("group1").unwrap().keys(), ["group_name"]);
        assert_eq!(f.section("mime").unwrap().str("x"), Some("y"));
        // parse() resolves against the given path's directory; tab separator
        let f = IniFile::parse("#include\tsub/http.conf\n", dir.join("v.conf")).unwrap();
        assert_eq!(f.global().str("http.anti_steal.check_token"), Some("true"));
        assert_eq!(ini("#included nothing\na = 1\n").global().keys(), ["a"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn include_missing_file_and_unreadable_main() {
        let dir = scratch();
        let main = write(&dir, "storage.conf", "port = 1\n\n#include nothere.conf\n");
        let err = IniFile::load(&main).unwrap_err();
        assert!(
            matches!(err, ConfigError::Include { line: 3, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}:3: ", main.display())), "{msg}");
        assert!(msg.contains("nothere.conf"), "{msg}");
        let err = IniFile::load(dir.join("absent.conf")).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot read ") && msg.contains("absent.conf"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn include_cycle_and_depth_are_errors() {
        let dir = scratch();
        let a = write(&dir, "a.conf", "a = 1\n#include b.conf\n");
        write(&dir, "b.conf", "b = 1\n\n#include ./a.conf\n");
        let err = IniFile::load(a).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Include { line: 3, .. }), "{msg}");
        assert!(msg.contains("cycle") && msg.contains("b.conf:3"), "{msg}");
        let me = write(&dir, "self.conf", "#include self.conf\n");
        let msg = IniFile::load(me).unwrap_err().to_string();
        assert!(msg.contains("cycle"), "{msg}");
        // d0 -> d1 -> ... -> d17: 16 levels of nesting are fine, 17 are too deep
        for i in 0..17 {
            let text = format!("k{i} = {i}\n#include d{}.conf\n", i + 1);
            write(&dir, &format!("d{i}.conf"), &text);
        }
        write(&dir, "d17.conf", "k17 = 17\n");
        let f = IniFile::load(dir.join("d1.conf")).unwrap();
        assert_eq!(f.global().int("k17", 0).unwrap(), 17);
        let msg = IniFile::load(dir.join("d0.conf")).unwrap_err().to_string();
        assert!(msg.contains("deeper than 16"), "{msg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn booleans_and_integers() {
        let good = "true=>true; YES=>true; On=>true; 1=>true; \
                    False=>false; no=>false; OFF=>false; 0=>false";
        cases(|s| s.bool("k", false), good);
        cases(
            |s| s.bool("k", true),
            " => true; maybe => err; 2 => err; y => err",
        );
        cases(|s| s.bool("k", false), " => false");
        let e = ini("a = 1\nk = maybe\n")
            .global()
            .bool("k", false)
            .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { line: 2, .. }));
        let ints = "42 => 42; -7 => -7; +3 => 3; => 5; 12abc => err; 0x10 => err; \
                    99999999999999999999 => err; - => err; 1 2 => err; 1.0 => err";
        cases(|s| s.int("k", 5), ints);
    }

    #[test]
    fn sizes_with_every_unit() {
        let table = "4096 => 4096; 0 => 0; => 77; 2k => 2048; 2K => 2048; 2 KB => 2048; \
            2kb => 2048; 3M => 3145728; 3 mb => 3145728; 1G => 1073741824; \
            1Gb => 1073741824; 2T => 2199023255552; 2 TB => 2199023255552; \
            10X => err; MB => err; -1K => err; 1.5G => err; 99999999TB => err; \
            1 K B => err; KB1 => err";
        cases(|s| s.size("k", 77), table);
        let e = ini("k = 10X\n")
            .global()
            .size("k", 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("for `k`: a size"), "{e}");
    }

    #[test]
    fn reserved_storage_space() {
        let table = "10% => Ratio(0.1); 20.5 % => Ratio(0.205); 20G => Bytes(21474836480); \
            1024 => Bytes(1024); => Bytes(1); 0% => err; 100% => err; ten% => err; \
            -5% => err; % => err; 5%% => err; 20X => err";
        cases(|s| s.space("k", SpaceLimit::Bytes(1)), table);
        assert_eq!(SpaceLimit::Ratio(0.10).reserved_mb(1000), 100);
        assert_eq!(SpaceLimit::Bytes(20 << 30).reserved_mb(1), 20 * 1024);
        assert_eq!(SpaceLimit::Bytes(1024).reserved_mb(1 << 20), 0);
        assert_eq!(SpaceLimit::Bytes(2048 * ONE_MB).to_fdfs_string(), "2048MB");
        assert_eq!(SpaceLimit::Ratio(0.20).to_fdfs_string(), "20.00%");
        assert_eq!(SpaceLimit::Ratio(0.205).to_fdfs_string(), "20.50%");
    }

    #[test]
    fn times_of_day() {
        let d = TimeOfDay { hour: 5, minute: 5 };
        let table = "00:00 => 00:00; 23:59 => 23:59; 9:05 => 09:05; => 05:05; \
            24:00 => err; 12:60 => err; 1200 => err; 1:2:3 => err; ab:cd => err; \
            -1:00 => err; 001:00 => err; :30 => err";
        cases(|s| s.time_of_day("k", d).map(|t| t.to_string()), table);
        let e = ini("k = 24:00\n").global().time_of_day("k", d).unwrap_err();
        assert!(e.to_string().contains("HH:MM"), "{e}");
    }

    #[test]
    fn error_messages_name_file_line_key() {
        let text = "\n# c\nport = abc\n[s]\nk = v\nn = 70000\n";
        let f = IniFile::parse(text, "/etc/fdfs/s.conf").unwrap();
        let e = f.global().int("port", 0).unwrap_err().to_string();
        let want = "/etc/fdfs/s.conf:3: invalid value \"abc\" for `port`: an integer";
        assert_eq!(e, want);
        let s = f.section("s").unwrap();
        let e = s.int_in("n", 22122, 1, 65535).unwrap_err().to_string();
        let want = "/etc/fdfs/s.conf:6: invalid value \"70000\" for `n`: \
                    an integer between 1 and 65535";
        assert_eq!(e, want);
        assert_eq!(s.int_in("n", 0, 1, 70000).unwrap(), 70000);
        assert_eq!(s.int_in("absent", 0, 1, 3).unwrap(), 0);
        let e = s.invalid("k", "a known thing").to_string();
        let want = "/etc/fdfs/s.conf:5: invalid value \"v\" for `k`: a known thing";
        assert_eq!(e, want);
        let e = s.invalid("other", "needed when k is v").to_string();
        let want = "/etc/fdfs/s.conf: invalid setting for `other` in section [s]: \
                    needed when k is v";
        assert_eq!(e, want);
        let f = IniFile::parse("base_path =\n", "/x.conf").unwrap();
        let e = f.global().require_str("base_path").unwrap_err().to_string();
        assert_eq!(e, "/x.conf: missing required key `base_path`");
    }

    #[test]
    fn long_keys_and_values_are_truncated() {
        let (key, value) = ("k".repeat(70), "v".repeat(300));
        let text = format!("{key} = {value}\n{} = {}\n", &key[..62], &value[..254]);
        let f = ini(&text);
        let g = f.global();
        assert_eq!(g.str(&key), None);
        assert_eq!(g.str(&key[..MAX_KEY_LEN]), Some(&value[..MAX_VALUE_LEN]));
        assert_eq!(g.str(&key[..62]), Some(&value[..254]));
        let f = ini(&format!("k = {}\n", "é".repeat(200))); // cut on a char boundary
        assert_eq!(f.global().str("k").unwrap(), "é".repeat(127));
    }

    #[test]
    fn syntax_errors() {
        let e = IniFile::parse("a = 1\n\nsome words\n", "/etc/fdfs/client.conf");
        let e = e.unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 3, .. }));
        assert!(
            e.to_string().starts_with("/etc/fdfs/client.conf:3: "),
            "{e}"
        );
        assert!(err_text("[unterminated\n", "/c.conf").starts_with("/c.conf:1: "));
        assert!(err_text("\n = value\n", "/c.conf").starts_with("/c.conf:2: "));
        let f = ini("url = http://h/?a=b\n"); // only the first `=` splits
        assert_eq!(f.global().str("url"), Some("http://h/?a=b"));
    }

    #[test]
    fn crlf_line_endings() {
        let f = ini("# c\r\nport = 23000\r\n[g1]\r\nstore_path0 = /data\r\n\r\nflag = yes\r\n");
        assert_eq!(f.global().int("port", 0).unwrap(), 23000);
        let s = f.section("g1").unwrap();
        assert_eq!(s.str("store_path0"), Some("/data"));
        assert!(s.bool("flag", false).unwrap());
        assert_eq!(s.entry("flag").unwrap().line, 6);
    }

    #[test]
    fn comments_and_directives_ignored() {
        let f = ini(
            "# port = 1\n  #port=2\n#@set x = 3\n#@if %{x} == 3\n#@for i from 0 to 2\n\
                     #@function SHELL_FUNC\n  port = 4  \n",
        );
        let g = f.global();
        assert_eq!((g.keys(), g.all("port")), (vec!["port"], vec!["4"]));
        assert_eq!(g.entry("port").unwrap().line, 7);
    }
}
