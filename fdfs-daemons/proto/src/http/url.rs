//! What a request URL names: the group, the remote filename (`Mxx/XX/YY/name`), whether
//! this node's groups hold it, and the query arguments the module reads.

use std::path::{Path, PathBuf};

use super::modconf::ModConf;
use crate::fileid::{FileInfo, RemoteName, NORMAL_NAME_LEN};

/// Most query pairs kept (as upstream).
pub const MAX_QUERY_PAIRS: usize = 32;
/// Longest path + query accepted (upstream answers 400 from 4096 on).
pub const MAX_URL_LEN: usize = 4095;

/// Why a URL names no file: 400, except [`UrlError::NotDataFile`] (404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    TooLong,
    NoGroup,
    BadName(String),
    StorePathOutOfRange(u8),
    /// A file the storage keeps next to a data file (its metadata), not a file of its own.
    NotDataFile,
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlError::TooLong => write!(f, "URL too long"),
            UrlError::NoGroup => write!(f, "no group name in URL"),
            UrlError::BadName(why) => write!(f, "invalid file name: {why}"),
            UrlError::StorePathOutOfRange(i) => write!(f, "store path M{i:02X} not configured"),
            UrlError::NotDataFile => write!(f, "not a data file (metadata)"),
        }
    }
}

/// A file named by a request URL (borrowing from the URL and the config: the module
/// parses one per request, so it allocates only the local path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest<'a> {
    pub group: &'a str,
    /// `Mxx/XX/YY/name`: the file id without the group (what the token signs).
    pub remote: &'a str,
    /// What the name says about the file (source, creation time, size, kind).
    pub info: FileInfo,
    /// Set when one of this node's groups is the file's group: the store path and the
    /// path below its `data/` where the file lives on this node.
    pub local: Option<(&'a Path, &'a str)>,
}

impl<'a> FileRequest<'a> {
    /// The pieces of the file's path on this node, to be joined as they are:
    /// `<store>`, `/data/` (or `data/` after a trailing slash), `XX/YY/name`.
    pub fn local_pieces(&self) -> Option<[&'a [u8]; 3]> {
        let (store, rel) = self.local?;
        let store = store.as_os_str().as_encoded_bytes();
        let sep: &'static [u8] = if store.ends_with(b"/") {
            b"data/"
        } else {
            b"/data/"
        };
        Some([store, sep, rel.as_bytes()])
    }

    /// The absolute path of the file on this node: `<store>/data/XX/YY/name`.
    pub fn local_path(&self) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        let joined = self.local_pieces()?.concat();
        Some(PathBuf::from(std::ffi::OsString::from_vec(joined)))
    }

    /// `group/Mxx/XX/YY/name`.
    pub fn file_id(&self) -> String {
        format!("{}/{}", self.group, self.remote)
    }

    /// Parses the decoded request path (nginx's `r->uri`). Never yields a path outside a
    /// configured store path: the name must pass [`RemoteName::parse`].
    pub fn parse(path: &'a str, conf: &'a ModConf) -> Result<FileRequest<'a>, UrlError> {
        if path.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let path = path.strip_prefix('/').unwrap_or(path);
        let (group, remote) = if conf.url_have_group_name {
            let (g, rest) = path.split_once('/').ok_or(UrlError::NoGroup)?;
            if !crate::valid_group_name(g) {
                return Err(UrlError::NoGroup);
            }
            (g, rest)
        } else {
            (conf.groups[0].name.as_str(), path)
        };
        let name = RemoteName::parse(remote).map_err(|e| UrlError::BadName(e.to_string()))?;
        if name.is_metadata() {
            return Err(UrlError::NotDataFile);
        }
        if remote.len() < NORMAL_NAME_LEN {
            return Err(UrlError::BadName(format!("{remote:?} is too short")));
        }
        let info = name.info().map_err(|e| UrlError::BadName(e.to_string()))?;
        let local = match conf.group(group) {
            Some(g) => {
                let store = g
                    .store_paths
                    .get(name.store_path as usize)
                    .ok_or(UrlError::StorePathOutOfRange(name.store_path))?;
                Some((store.as_path(), name.data_relative()))
            }
            None => None,
        };
        Ok(FileRequest {
            group,
            remote,
            info,
            local,
        })
    }
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|v| v as u8)
}

/// Percent-decoding (`+` is a space), as libfastcommon's `urldecode`. Invalid escapes are
/// kept as they are; invalid UTF-8 is replaced.
pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parsed query arguments: pairs with `=` and a non-empty key, values decoded, keys not,
/// at most [`MAX_QUERY_PAIRS`]; lookups return the first match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// Parses a raw query string (nginx's `r->args`, without the `?`).
pub fn parse_query(args: &str) -> Query {
    if args.is_empty() {
        return Query::default(); // most requests: nothing to split
    }
    let pairs = args
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), url_decode(v)))
        })
        .take(MAX_QUERY_PAIRS)
        .collect();
    Query { pairs }
}

/// The URI sent to (or redirected to) the source storage: the raw request URI with
/// `redirect=1` appended, so the source never forwards it again.
pub fn forward_uri(unparsed_uri: &str) -> String {
    let sep = if unparsed_uri.contains('?') { '&' } else { '?' };
    format!("{unparsed_uri}{sep}redirect=1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::modconf::tests::conf_from;

    const NAME: &str = "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";

    #[test]
    fn with_group_name() {
        let (_d, conf) = conf_from("group_name=group1\nurl_have_group_name=true\n");
        let url = format!("/group1/{NAME}");
        let r = FileRequest::parse(&url, &conf).unwrap();
        assert_eq!(r.group, "group1");
        assert_eq!(r.remote, NAME);
        assert_eq!(r.info.file_size, 15);
        let p = r.local_path().unwrap();
        assert!(p.ends_with("data/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt"));
        // another group: no local path
        let url = format!("/group2/{NAME}");
        let r = FileRequest::parse(&url, &conf).unwrap();
        assert_eq!(r.local_path(), None);
        assert_eq!(r.file_id(), format!("group2/{NAME}"));
        assert_eq!(FileRequest::parse("/group1", &conf), Err(UrlError::NoGroup));
    }

    #[test]
    fn without_group_name() {
        let (_d, conf) = conf_from("group_name=group7\n");
        let url = format!("/{NAME}");
        let r = FileRequest::parse(&url, &conf).unwrap();
        assert_eq!(r.group, "group7");
        assert!(r.local_path().is_some());
    }

    #[test]
    fn traversal_and_garbage_are_refused() {
        let (_d, conf) = conf_from("group_name=group1\nurl_have_group_name=true\n");
        for bad in [
            "/group1/M00/00/00/../../../../etc/passwd",
            "/group1/M00/../00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt",
            "/group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt/..",
            "/group1/M00/00/0a/fwAAPWsEx2iADTARAAAADwL5vO4236.txt",
            "/group1/M00/00/00/short.txt",
            "/group1/M00/00/00/...........................1234567",
            "/group1/X00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt",
            "/group1/",
        ] {
            assert!(
                matches!(FileRequest::parse(bad, &conf), Err(UrlError::BadName(_))),
                "{bad}"
            );
        }
        assert_eq!(
            FileRequest::parse(
                "/group1/M01/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt",
                &conf
            ),
            Err(UrlError::StorePathOutOfRange(1))
        );
    }

    #[test]
    fn metadata_names_are_not_files() {
        let (_d, conf) = conf_from("group_name=group1\nurl_have_group_name=true\n");
        for suffix in ["-m", "-m.tmp"] {
            let url = format!("/group1/{NAME}{suffix}");
            assert_eq!(FileRequest::parse(&url, &conf), Err(UrlError::NotDataFile));
            // another group's metadata is not fetched either
            let url = format!("/group2/{NAME}{suffix}");
            assert_eq!(FileRequest::parse(&url, &conf), Err(UrlError::NotDataFile));
        }
        // metadata of a file without extension, of a slave
        for name in [
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO41234567-m",
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236_big.txt-m",
        ] {
            let url = format!("/group1/{name}");
            assert_eq!(FileRequest::parse(&url, &conf), Err(UrlError::NotDataFile));
        }
        // data files whose names merely end in -m
        for name in [
            // uploaded with the extension "-m"
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO41234.-m",
            // uploaded with the extension "-m.tmp"
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4.-m.tmp",
            // a slave with the prefix "-m" of a master with an extension
            "M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236-m.txt",
        ] {
            let url = format!("/group1/{name}");
            assert!(FileRequest::parse(&url, &conf).is_ok(), "{name}");
        }
        // not a data file name without the suffix either: a bad name (400), not metadata
        assert!(matches!(
            FileRequest::parse("/group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4-m", &conf),
            Err(UrlError::BadName(_))
        ));
        assert!(matches!(
            FileRequest::parse("/group1/M00/00/00/.tmp-0123456789abcdef0123456789", &conf),
            Err(UrlError::BadName(_))
        ));
    }

    #[test]
    fn query() {
        let q = parse_query("filename=a%20b+c.txt&x&=y&token=abc&token=def&bad=%zz");
        assert_eq!(q.get("filename"), Some("a b c.txt"));
        assert_eq!(q.get("token"), Some("abc"));
        assert_eq!(q.get("x"), None);
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(url_decode("%E4%BD%A0"), "你");
        assert_eq!(url_decode("50%"), "50%");
        assert_eq!(forward_uri("/g/M00/x"), "/g/M00/x?redirect=1");
        assert_eq!(forward_uri("/g/M00/x?a=1"), "/g/M00/x?a=1&redirect=1");
    }
}
