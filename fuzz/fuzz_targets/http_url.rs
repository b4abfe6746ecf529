//! The nginx module's URL handling: `FileRequest::parse` (under two mod_fastdfs.conf
//! layouts), query parsing and percent-decoding, the forwarded URI, Content-Disposition
//! for `filename=`, and the order of storages tried for a file not held locally.
#![no_main]

use std::net::Ipv4Addr;
use std::path::Component;
use std::sync::OnceLock;

use fdfs_proto::config::IniFile;
use fdfs_proto::fileid::{RemoteName, NORMAL_NAME_LEN};
use fdfs_proto::http::disposition::content_disposition;
use fdfs_proto::http::peers::{self, Peer};
use fdfs_proto::http::url::{forward_uri, url_decode, MAX_QUERY_PAIRS};
use fdfs_proto::http::{parse_query, FileRequest, ModConf};
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

fn check_request<'a>(path: &'a str, conf: &'a ModConf) -> Option<FileRequest<'a>> {
    let r = FileRequest::parse(path, conf).ok()?;
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
    if let Some(r) = &req {
        assert!(!fdfs_proto::http::url::is_metadata_name(r.remote));
    }
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
    let list: Vec<Peer> = args
        .split(',')
        .take(16)
        .enumerate()
        .map(|(i, ip)| Peer {
            ip: ip.to_string(),
            active: (sel >> (i % 8)) & 1 == 1,
        })
        .collect();
    let local: Vec<String> = list.iter().step_by(3).map(|p| p.ip.clone()).collect();
    let source = match &req {
        Some(r) => peers::source_ip(&r.info),
        None => rest.get(..4).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3])),
    };
    let c = peers::candidates(source, &list, &local);
    for (i, ip) in c.iter().enumerate() {
        assert!(!ip.is_empty() && !local.contains(ip));
        assert!(!c[..i].contains(ip));
        // only listed members: the source in a name is never trusted by itself
        assert!(list.iter().any(|p| &p.ip == ip));
    }
    if let Some(s) = source.filter(|s| peers::is_member(*s, &list)) {
        let listed_active = list
            .iter()
            .any(|p| p.active && p.ip.parse::<Ipv4Addr>() == Ok(s));
        if listed_active && !local.contains(&s.to_string()) {
            assert_eq!(c.first().and_then(|ip| ip.parse().ok()), Some(s));
        }
    }
    if let Some(r) = &req {
        let now = 1_800_000_000 + i64::from(sel);
        let _ = peers::on_local_miss(r.local.is_some(), &r.info, sel & 2 == 2, now, 86400);
        let _ = peers::on_local_miss(true, &r.info, false, now, i64::MAX);
    }
});
