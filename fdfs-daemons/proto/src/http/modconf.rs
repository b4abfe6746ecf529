//! `mod_fastdfs.conf` (with `#include http.conf`): the nginx module's configuration, read
//! and checked when nginx loads its own configuration, so `nginx -t` names the file and
//! line of a bad value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, IniFile, Section};

/// Where upstream's module reads its configuration.
pub const DEFAULT_PATH: &str = "/etc/fdfs/mod_fastdfs.conf";

/// What to do with a file that is not on this node (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// Fetch it from the source storage and pass it on (default).
    Proxy,
    /// Answer 302 with the source storage's URL.
    Redirect,
}

/// One group this node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConf {
    pub name: String,
    /// `store_path0..`, index = the `Mxx` of a file name.
    pub store_paths: Vec<PathBuf>,
    pub storage_server_port: u16,
}

/// The `http.*` keys (normally from `http.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConf {
    pub disabled: bool,
    pub multi_range_enabled: bool,
    pub check_token: bool,
    pub token_ttl: i64,
    pub secret_key: String,
    /// Served (200) instead of the file when a token is wrong or expired.
    pub token_check_fail: Option<PathBuf>,
    pub default_content_type: String,
    /// Extension -> type, from `http.mime_types_filename` (used for the token-fail file).
    pub mime_types: HashMap<String, String>,
}

/// The whole module configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModConf {
    pub path: PathBuf,
    pub connect_timeout: u64,
    pub network_timeout: u64,
    /// `host:port` of each tracker (used to learn the other storages of a group).
    pub tracker_servers: Vec<crate::addr::HostPort>,
    pub storage_sync_file_max_delay: i64,
    pub url_have_group_name: bool,
    /// `group_count > 0`: several groups from `[groupN]` sections.
    pub multi_group: bool,
    pub groups: Vec<GroupConf>,
    pub response_mode: ResponseMode,
    pub if_alias_prefix: Vec<String>,
    pub flv_support: bool,
    pub flv_extension: String,
    /// `anti_steal_bypass_header_name` / `_value`.
    pub bypass_header: Option<(String, String)>,
    /// HTTP port of the other storages' nginx. 0 (default): the port this request came in
    /// on, as upstream (all storages of a cluster listen on the same HTTP port).
    pub storage_http_port: u16,
    /// Seconds between refreshes of the storage list learnt from the trackers.
    pub tracker_refresh_interval: u64,
    pub http: HttpConf,
    /// `storage_ids.conf` (`use_storage_id = true`): where the server ids that file
    /// names may carry are.
    pub storage_ids: Option<crate::storage_ids::ServerIds>,
}

fn store_paths(sec: Section<'_>, fallback: Option<&str>) -> Result<Vec<PathBuf>, ConfigError> {
    let count = sec.int_in("store_path_count", 1, 1, 256)? as usize;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("store_path{i}");
        let value = match sec.str(&key).filter(|v| !v.is_empty()) {
            Some(v) => v,
            None if i == 0 && fallback.is_some() => fallback.unwrap(),
            None => return Err(sec.require_str(&key).unwrap_err()),
        };
        let trimmed = value.trim_end_matches('/');
        let p = PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed });
        if !p.is_dir() {
            return Err(sec.invalid(&key, "an existing directory"));
        }
        out.push(p);
    }
    Ok(out)
}

fn group_name(sec: Section<'_>) -> Result<String, ConfigError> {
    let name = sec.require_str("group_name")?;
    if !crate::valid_group_name(name) {
        return Err(sec.invalid("group_name", "1 to 16 characters from [A-Za-z0-9]"));
    }
    Ok(name.to_string())
}

fn port(sec: Section<'_>, key: &str, default: i64) -> Result<u16, ConfigError> {
    Ok(sec.int_in(key, default, 0, 65535)? as u16)
}

/// Reads an Apache-style `mime.types`: `type ext ext ...` per line.
pub fn parse_mime_types(text: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ty) = words.next() else { continue };
        for ext in words {
            map.insert(
                ext.trim_end_matches(';').to_ascii_lowercase(),
                ty.to_string(),
            );
        }
    }
    map
}

fn resolve(conf_dir: &Path, value: &str) -> PathBuf {
    conf_dir.join(value)
}

impl HttpConf {
    fn from_section(g: Section<'_>, conf_dir: &Path) -> Result<HttpConf, ConfigError> {
        let disabled = g.bool("http.disabled", false)?;
        let mut http = HttpConf {
            disabled,
            multi_range_enabled: true,
            check_token: false,
            token_ttl: 600,
            secret_key: String::new(),
            token_check_fail: None,
            default_content_type: "application/octet-stream".to_string(),
            mime_types: HashMap::new(),
        };
        if disabled {
            return Ok(http);
        }
        http.multi_range_enabled = g.bool("http.multi_range.enabled", true)?;
        g.int_in("http.server_port", 80, 1, 65535)?;
        if let Some(t) = g.str("http.default_content_type").filter(|v| !v.is_empty()) {
            http.default_content_type = t.to_string();
        }
        if let Some(m) = g.str("http.mime_types_filename").filter(|v| !v.is_empty()) {
            if !m.starts_with("http://") {
                let text = std::fs::read_to_string(resolve(conf_dir, m))
                    .map_err(|_| g.invalid("http.mime_types_filename", "a readable file"))?;
                http.mime_types = parse_mime_types(&text);
            }
        }
        http.check_token = g.bool("http.anti_steal.check_token", false)?;
        http.token_ttl = g.int_in("http.anti_steal.token_ttl", 600, 1, i64::MAX)?;
        if http.check_token {
            http.secret_key = g.require_str("http.anti_steal.secret_key")?.to_string();
            if http.secret_key.len() > 128 {
                return Err(g.invalid("http.anti_steal.secret_key", "at most 128 bytes"));
            }
            if let Some(f) = g
                .str("http.anti_steal.token_check_fail")
                .filter(|v| !v.is_empty())
            {
                let p = resolve(conf_dir, f);
                if !p.is_file() {
                    return Err(g.invalid("http.anti_steal.token_check_fail", "an existing file"));
                }
                http.token_check_fail = Some(p);
            }
        }
        Ok(http)
    }

    /// Content type for a file name, by its extension.
    pub fn content_type_of(&self, name: &str) -> &str {
        name.rsplit_once('.')
            .and_then(|(_, ext)| self.mime_types.get(&ext.to_ascii_lowercase()))
            .map(String::as_str)
            .unwrap_or(&self.default_content_type)
    }
}

impl ModConf {
    /// Reads and checks the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<ModConf, ConfigError> {
        let ini = IniFile::load(path.as_ref())?;
        Self::from_ini(&ini)
    }

    pub fn from_ini(ini: &IniFile) -> Result<ModConf, ConfigError> {
        let g = ini.global();
        let conf_dir = ini.path().parent().unwrap_or(Path::new("/")).to_path_buf();
        let timeout = |key: &str, default: i64| -> Result<u64, ConfigError> {
            let v = g.int(key, default)?;
            Ok(if v <= 0 { default } else { v } as u64)
        };
        let connect_timeout = timeout("connect_timeout", 10)?;
        let network_timeout = timeout("network_timeout", 30)?;
        let mut tracker_servers = Vec::new();
        for e in g.entries("tracker_server") {
            let t = crate::addr::HostPort::parse(&e.value, None).map_err(|expected| {
                ConfigError::Invalid {
                    file: e.file.clone(),
                    line: e.line,
                    key: e.key.clone(),
                    value: e.value.clone(),
                    expected,
                }
            })?;
            tracker_servers.push(t);
        }
        g.bool("load_fdfs_parameters_from_tracker", false)?;
        let storage_sync_file_max_delay =
            g.int_in("storage_sync_file_max_delay", 86400, 0, i64::MAX)?;
        // File names may carry server ids: the table says where each one is.
        let storage_ids = if g.bool("use_storage_id", false)? {
            let name = g.str("storage_ids_filename").unwrap_or("");
            if name.is_empty() {
                return Err(g.invalid(
                    "storage_ids_filename",
                    "the storage_ids.conf file (required by use_storage_id = true)",
                ));
            }
            Some(
                crate::storage_ids::load(ini.path(), name)
                    .map_err(|why| g.invalid("storage_ids_filename", &why))?,
            )
        } else {
            None
        };
        let mut url_have_group_name = g.bool("url_have_group_name", false)?;
        let group_count = g.int_in("group_count", 0, 0, 1024)? as usize;
        let mut groups = Vec::new();
        if group_count == 0 {
            let name = group_name(g)?;
            let base = g.str("base_path").filter(|v| !v.is_empty());
            groups.push(GroupConf {
                name,
                store_paths: store_paths(g, base)?,
                storage_server_port: port(g, "storage_server_port", 23000)?,
            });
        } else {
            if !url_have_group_name {
                return Err(g.invalid(
                    "url_have_group_name",
                    "true when group_count > 0 (the URL must name the group)",
                ));
            }
            for i in 1..=group_count {
                let sname = format!("group{i}");
                let sec = ini.section(&sname).ok_or_else(|| {
                    g.invalid(
                        "group_count",
                        &format!("a [{sname}] section for each group"),
                    )
                })?;
                let name = group_name(sec)?;
                if groups.iter().any(|gc: &GroupConf| gc.name == name) {
                    return Err(sec.invalid("group_name", "a group named only once"));
                }
                groups.push(GroupConf {
                    name,
                    store_paths: store_paths(sec, None)?,
                    storage_server_port: port(sec, "storage_server_port", 23000)?,
                });
            }
            url_have_group_name = true;
        }
        let response_mode = match g.str("response_mode").unwrap_or("proxy") {
            v if v.eq_ignore_ascii_case("redirect") => ResponseMode::Redirect,
            v if v.is_empty() || v.eq_ignore_ascii_case("proxy") => ResponseMode::Proxy,
            _ => return Err(g.invalid("response_mode", "proxy or redirect")),
        };
        let if_alias_prefix = g
            .str("if_alias_prefix")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let flv_support = g.bool("flv_support", false)?;
        let flv_extension = g
            .str("flv_extension")
            .filter(|v| !v.is_empty())
            .unwrap_or("flv")
            .to_string();
        let bypass_header = g
            .str("anti_steal_bypass_header_name")
            .filter(|v| !v.is_empty())
            .map(|n| {
                (
                    n.to_string(),
                    g.str("anti_steal_bypass_header_value")
                        .unwrap_or("")
                        .to_string(),
                )
            });
        let storage_http_port = port(g, "storage_http_port", 0)?;
        let tracker_refresh_interval = g.int_in("tracker_refresh_interval", 30, 1, 86400)? as u64;
        let http = HttpConf::from_section(g, &conf_dir)?;
        Ok(ModConf {
            path: ini.path().to_path_buf(),
            connect_timeout,
            network_timeout,
            tracker_servers,
            storage_sync_file_max_delay,
            url_have_group_name,
            multi_group: group_count > 0,
            groups,
            response_mode,
            if_alias_prefix,
            flv_support,
            flv_extension,
            bypass_header,
            storage_http_port,
            tracker_refresh_interval,
            http,
            storage_ids,
        })
    }

    /// The configured group called `name`.
    pub fn group(&self, name: &str) -> Option<&GroupConf> {
        self.groups.iter().find(|g| g.name == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temp dir with `mod_fastdfs.conf` = `extra` + one existing store path.
    pub(crate) fn conf_from(extra: &str) -> (TempDir, ModConf) {
        let d = TempDir::new();
        let store = d.0.join("store0");
        std::fs::create_dir_all(&store).unwrap();
        let text = format!("store_path0 = {}\n{extra}", store.display());
        let p = d.0.join("mod_fastdfs.conf");
        std::fs::write(&p, text).unwrap();
        let c = ModConf::load(&p).unwrap();
        (d, c)
    }

    pub(crate) struct TempDir(pub PathBuf);
    impl TempDir {
        pub(crate) fn new() -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "fdfs-modconf-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load_err(d: &TempDir, text: &str) -> String {
        let p = d.0.join("bad.conf");
        std::fs::write(&p, text).unwrap();
        ModConf::load(&p).unwrap_err().to_string()
    }

    #[test]
    fn storage_ids_are_read_when_on() {
        let d = TempDir::new();
        std::fs::write(d.0.join("ids.conf"), "100001 group1 10.0.0.1:23001\n").unwrap();
        let text = format!(
            "group_name = group1\nstore_path0 = {}\ntracker_server = 127.0.0.1:22122\n\
             use_storage_id = true\nstorage_ids_filename = ids.conf\n",
            d.0.display()
        );
        let p = d.0.join("mod_fastdfs.conf");
        std::fs::write(&p, &text).unwrap();
        let c = ModConf::load(&p).unwrap();
        assert_eq!(c.storage_ids.unwrap().by_id("100001").unwrap().port, 23001);
        let err = load_err(&d, &text.replace("ids.conf", "missing.conf"));
        assert!(err.contains("storage_ids_filename"), "{err}");
        let off = text.replace("use_storage_id = true", "use_storage_id = false");
        std::fs::write(&p, off).unwrap();
        assert!(ModConf::load(&p).unwrap().storage_ids.is_none());
    }

    #[test]
    fn defaults_and_include() {
        let d = TempDir::new();
        std::fs::create_dir_all(d.0.join("s0")).unwrap();
        std::fs::create_dir_all(d.0.join("s1")).unwrap();
        std::fs::write(
            d.0.join("mime.types"),
            "text/plain txt\nimage/jpeg jpg jpeg\n",
        )
        .unwrap();
        std::fs::write(d.0.join("fail.jpg"), "x").unwrap();
        std::fs::write(
            d.0.join("http.conf"),
            "http.mime_types_filename = mime.types\nhttp.anti_steal.check_token = true\n\
             http.anti_steal.secret_key = k\nhttp.anti_steal.token_check_fail = fail.jpg\n",
        )
        .unwrap();
        let text = format!(
            "group_name = group1\nstore_path_count = 2\nstore_path0 = {0}/s0/\nstore_path1 = {0}/s1\n\
             tracker_server = 127.0.0.1:22122\nresponse_mode = redirect\n#include http.conf\n",
            d.0.display()
        );
        let p = d.0.join("mod_fastdfs.conf");
        std::fs::write(&p, text).unwrap();
        let c = ModConf::load(&p).unwrap();
        assert_eq!(c.groups.len(), 1);
        assert_eq!(c.groups[0].store_paths[0], d.0.join("s0"));
        assert_eq!(c.response_mode, ResponseMode::Redirect);
        assert!(!c.url_have_group_name);
        assert!(c.http.check_token);
        assert_eq!(c.http.token_check_fail, Some(d.0.join("fail.jpg")));
        assert_eq!(c.http.content_type_of("a.JPG"), "image/jpeg");
        assert_eq!(c.http.content_type_of("a.bin"), "application/octet-stream");
        assert_eq!(c.tracker_servers[0].to_string(), "127.0.0.1:22122");
        assert_eq!(c.storage_sync_file_max_delay, 86400);
    }

    #[test]
    fn multi_group() {
        let d = TempDir::new();
        std::fs::create_dir_all(d.0.join("a")).unwrap();
        std::fs::create_dir_all(d.0.join("b")).unwrap();
        let text = format!(
            "group_count = 2\nurl_have_group_name = true\n[group1]\ngroup_name = group1\n\
             store_path0 = {0}/a\n[group2]\ngroup_name = group2\nstore_path0 = {0}/b\n",
            d.0.display()
        );
        let p = d.0.join("m.conf");
        std::fs::write(&p, text).unwrap();
        let c = ModConf::load(&p).unwrap();
        assert!(c.multi_group);
        assert_eq!(c.group("group2").unwrap().store_paths[0], d.0.join("b"));
        assert!(c.group("group3").is_none());
    }

    #[test]
    fn errors_name_file_and_line() {
        let d = TempDir::new();
        let e = load_err(
            &d,
            "group_name = g1\nstore_path0 = /\nurl_have_group_name = maybe\n",
        );
        assert!(
            e.contains("bad.conf:3:") && e.contains("url_have_group_name"),
            "{e}"
        );
        let e = load_err(&d, "group_name = g1\nstore_path0 = /nonexistent/x\n");
        assert!(
            e.contains("bad.conf:2:") && e.contains("store_path0"),
            "{e}"
        );
        let e = load_err(&d, "store_path0 = /\n");
        assert!(e.contains("group_name"), "{e}");
        let e = load_err(
            &d,
            "group_name = g1\nstore_path0 = /\ngroup_count = 1\nurl_have_group_name=1\n",
        );
        assert!(e.contains("[group1]"), "{e}");
        let e = load_err(
            &d,
            "group_name = g1\nstore_path0 = /\ntracker_server = nohost\n",
        );
        assert!(e.contains("bad.conf:3:"), "{e}");
        let e = load_err(
            &d,
            "group_name = g1\nstore_path0 = /\nhttp.anti_steal.check_token = true\n",
        );
        assert!(e.contains("secret_key"), "{e}");
        let e = load_err(
            &d,
            "group_name = g1\nstore_path0 = /\n#include nothere.conf\n",
        );
        assert!(e.contains("bad.conf:3:"), "{e}");
    }
}
