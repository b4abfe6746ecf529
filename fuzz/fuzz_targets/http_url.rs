//! The nginx module's URL handling: `FileRequest::parse` (under two mod_fastdfs.conf
//! layouts), query parsing and percent-decoding, the forwarded URI, Content-Disposition
//! for `filename=`, and the order of storages tried for a file not held locally.
#![no_main]

use std::net::Ipv4Addr;
use std::path::Component;
use std::sync::OnceLock;

use fdfs_proto::config::IniFile;
use fdfs_proto::fileid::{PackedName, RemoteName, NORMAL_NAME_LEN, REMOTE_NAME_MAX_LEN};
use fdfs_proto::http::disposition::content_disposition;
use fdfs_proto::http::peers::{self, Peer};
use fdfs_proto::http::url::{forward_uri, url_decode, MAX_QUERY_PAIRS};
use fdfs_proto::http::{parse_query, FileRequest, ModConf, UrlError};
use fdfs_proto::status;
use libfuzzer_sys::fuzz_target;

/// [with the group in the URL, two store paths; without, one store path].
fn confs() -> &'static [ModConf; 2] {
    static CONFS: OnceLock<[ModConf; 2]> = OnceLock::new();
    CONFS.get_or_init(|| {
        let d = fdfs_fuzz::store_dir();
        let load = |text: String| {
            let ini = IniFile::parse(&text, d.join("mod_fastdfs.conf")).unwrap();
            ModConf::from_ini(&ini).unwrap()
        };
        [
            load(format!(
                "group_name = group1\nurl_have_group_name = true\nstore_path_count = 2\n\
                 store_path0 = {0}/s0\nstore_path1 = {0}/s1\n",
                d.display()
            )),
            load(format!(
                "group_name = group1\nstore_path0 = {}/s0\n",
                d.display()
            )),
        ]
    })
}

/// Whether `remote` names a data file's metadata, written out here rather than taken from
/// the crate: `-m` or `-m.tmp` after a name of at least a normal file's length, of the form
/// `Mxx/XX/YY/<name characters>`, whose first 27 name characters decode.
fn names_metadata(remote: &str) -> bool {
    let Some(stem) = remote
        .strip_suffix("-m")
        .or_else(|| remote.strip_suffix("-m.tmp"))
    else {
        return false;
    };
    let b = stem.as_bytes();
    let hex = |c: &u8| c.is_ascii_digit() || (b'A'..=b'F').contains(c);
    (NORMAL_NAME_LEN..=REMOTE_NAME_MAX_LEN).contains(&b.len())
        && b[0] == b'M'
        && b[1..3].iter().all(hex)
        && b[3] == b'/'
        && b[4..6].iter().all(hex)
        && b[6] == b'/'
        && b[7..9].iter().all(hex)
        && b[9] == b'/'
        && b[10] != b'.'
        && b[10..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        && PackedName::decode(&stem[10..37]).is_ok()
}

fn check_request<'a>(path: &'a str, conf: &'a ModConf) -> Option<FileRequest<'a>> {
    let parsed = FileRequest::parse(path, conf);
    if parsed == Err(UrlError::NotDataFile) {
        let rest = path.strip_prefix('/').unwrap_or(path);
        let remote = if conf.url_have_group_name {
            rest.split_once('/').expect("a group before the name").1
        } else {
            rest
        };
        assert!(names_metadata(remote), "{remote:?} taken for metadata");
    }
    let r = parsed.ok()?;
    // only data files are served or fetched
    assert!(!names_metadata(r.remote), "{:?} served", r.remote);
    assert!(fdfs_proto::valid_group_name(&r.group));
    assert!(r.remote.len() >= NORMAL_NAME_LEN);
    RemoteName::parse(&r.remote).expect("remote name was checked");
    assert_eq!(r.file_id(), format!("{}/{}", r.group, r.remote));
    if let Some(local) = &r.local_path() {
        // Never outside `<store path>/data`, never with `..` or `.` in it.
        let g = conf.group(r.group).expect("local path only for our group");
        assert!(g
            .store_paths
            .iter()
            .any(|s| local.starts_with(s.join("data"))));
        assert!(local
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
        assert!(local.ends_with(&r.remote[4..]));
    }
    Some(r)
}

fuzz_target!(|data: &[u8]| {
    let Some((sel, rest)) = fdfs_fuzz::split_selector(data) else {
        return;
    };
    let text = fdfs_fuzz::lossy(rest);
    let (path, args) = text.split_once('?').unwrap_or((&text, ""));
    let conf = &confs()[(sel & 1) as usize];
    let req = check_request(path, conf);
    // nginx hands the module a decoded path; try that form too.
    check_request(&url_decode(path), conf);

    let q = parse_query(args);
    let mut n = 0;
    for key in ["filename", "token", "ts", "start", "end", "redirect"] {
        if let Some(v) = q.get(key) {
            assert!(q.has(key));
            n += 1;
            let _ = v;
        }
    }
    assert!(n <= MAX_QUERY_PAIRS);
    if !args.contains(['%', '+']) {
        assert_eq!(url_decode(args), args);
    }
    let fwd = forward_uri(&text);
    assert!(fwd.starts_with(&*text) && fwd.ends_with("redirect=1"));

    // Content-Disposition: one quoted ASCII value, no way to break out of the header.
    for name in [q.get("filename").unwrap_or(""), &text] {
        if let Some(v) = content_disposition(name) {
            assert!(v.is_ascii());
            assert!(!v.bytes().any(|b| b.is_ascii_control()));
            assert!(v.starts_with("attachment; filename=\""));
            assert_eq!(v.matches('"').count(), 2, "{v}");
        }
    }

    // Which storages to try when the file is not here.
    const STATUSES: [u8; 10] = [
        status::INIT,
        status::WAIT_SYNC,
        status::SYNCING,
        status::IP_CHANGED,
        status::DELETED,
        status::OFFLINE,
        status::ONLINE,
        status::ACTIVE,
        status::RECOVERY,
        status::NONE,
    ];
    let list: Vec<Peer> = args
        .split(',')
        .take(16)
        .enumerate()
        .filter_map(|(i, ip)| {
            Some(Peer {
                ip: ip.parse().ok()?,
                status: STATUSES[(usize::from(sel) + i * 7) % STATUSES.len()],
            })
        })
        .collect();
    let local: Vec<Ipv4Addr> = list.iter().step_by(3).map(|p| p.ip).collect();
    let source = match &req {
        Some(r) => peers::source_ip(&r.info, None),
        None => rest.get(..4).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3])),
    };
    let c = peers::candidates(source, &list, |ip| local.contains(&ip));
    assert_eq!(
        c.source_listed,
        source.is_some_and(|s| list.iter().any(|p| p.ip == s))
    );
    for (i, ip) in c.ips.iter().enumerate() {
        assert!(!ip.is_unspecified() && !local.contains(ip));
        assert!(!c.ips[..i].contains(ip));
        // only listed members, never one being added, removed or moved: the source in a
        // name is never trusted by itself
        assert!(list.iter().any(|p| p.ip == *ip
            && !matches!(
                p.status,
                status::INIT | status::IP_CHANGED | status::DELETED | status::NONE
            )));
    }
    if let Some(s) = source {
        let listed_active = list.iter().any(|p| p.status == status::ACTIVE && p.ip == s);
        if listed_active && !local.contains(&s) && !s.is_unspecified() {
            assert_eq!(c.ips.first(), Some(&s));
        }
    }
    if let Some(r) = &req {
        let now = 1_800_000_000 + i64::from(sel);
        let _ = peers::on_local_miss(r.local.is_some(), &r.info, sel & 2 == 2, now, 86400);
        let _ = peers::on_local_miss(true, &r.info, false, now, i64::MAX);
    }
});
