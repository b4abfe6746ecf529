use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use fdfs_proto::fileid::{appender_size_field, normal_size_field, PackedName, Source};
use fdfs_proto::http::peers::Peer;
use fdfs_proto::status::ACTIVE;
use fdfs_proto::token::{make_token, TokenError};

use super::*;

const NOW: i64 = 1_700_000_100;
const SOURCE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 3);
const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 9);

/// A temp dir holding `mod_fastdfs.conf` (group1, one store path, plus `extra`).
struct Setup {
    dir: PathBuf,
    conf: ModConf,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ngx-fastdfs-serve-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(dir.join("store0")).unwrap();
        std::fs::write(dir.join("fail.jpg"), "x").unwrap();
        std::fs::write(dir.join("mime.types"), "image/jpeg jpg\n").unwrap();
        let text = format!(
            "group_name = group1\nstore_path0 = {}/store0\nurl_have_group_name = true\n{}",
            dir.display(),
            extra.replace("$DIR", &dir.display().to_string())
        );
        let path = dir.join("mod_fastdfs.conf");
        std::fs::write(&path, text).unwrap();
        let conf = ModConf::load(&path).unwrap();
        Setup { dir, conf }
    }

    fn store(&self) -> Vec<u8> {
        self.dir
            .join("store0")
            .into_os_string()
            .into_encoded_bytes()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `M00/00/00/<name>` of a file created at `created` on `source`.
fn remote(source: Ipv4Addr, created: u32, size_field: u64, ext: &str) -> String {
    let packed = PackedName {
        source: Source::Ip(source),
        timestamp: created,
        size_field,
        crc32: 0x1234_abcd,
    };
    format!("M00/00/00/{}{ext}", packed.encode())
}

fn normal(ext: &str) -> String {
    remote(SOURCE, 1_700_000_000, normal_size_field(12345, 0x42), ext)
}

fn get<'a>(uri: &'a str, args: &'a str) -> Incoming<'a> {
    Incoming {
        uri: uri.as_bytes(),
        args: args.as_bytes(),
        ..Incoming::default()
    }
}

fn refusal(r: Result<Found<'_>, Refusal<'_>>) -> (u16, Option<String>) {
    let r = r.expect_err("a refusal");
    (r.status, r.note.map(|n| n.to_string()))
}

#[test]
fn urls_that_name_no_file() {
    let s = Setup::new("");
    let bad = Incoming {
        uri: b"/group1/\xff",
        ..Incoming::default()
    };
    assert_eq!(refusal(decide(&s.conf, &bad, NOW)), (400, None));
    let (status, note) = refusal(decide(&s.conf, &get("/group1/M00/x", ""), NOW));
    assert_eq!(status, 400);
    assert!(note
        .unwrap()
        .starts_with("fastdfs: /group1/M00/x: invalid file name"));
    let meta = format!("/group1/{}-m", normal("123.jpg"));
    assert_eq!(refusal(decide(&s.conf, &get(&meta, ""), NOW)), (404, None));
}

#[test]
fn a_file_in_a_trunk_slot() {
    let s = Setup::new("");
    // The reference notes' worked example: trunk file 1 in 00/01, offset 0, 256 bytes.
    let uri = "/group1/M00/00/01/wKgAxGsEx2iIDTARAAAADwL5vO4AAAAAQAAAAAAAAEA236.txt";
    let found = decide(&s.conf, &get(uri, ""), NOW).unwrap();
    let Action::Slot {
        path,
        trunk_file,
        slot,
        send,
    } = found.action
    else {
        panic!("{:?}", found.action)
    };
    assert_eq!(
        [&path.concat()[..], trunk_file.as_bytes()].concat(),
        [s.store(), b"/data/00/01/000001".to_vec()].concat()
    );
    assert_eq!(send.body, Body::Whole { ranges: true });
    assert_eq!(slot.offset, 0);
    let mut header = slot.expected.encode();
    assert_eq!(slot.check(&header), Some((24, 15, 0x6b04_c768)));
    // Freed (zeroed) or taken by another file: a miss.
    assert_eq!(slot.check(&[0; 24]), None);
    header[12] ^= 1;
    assert_eq!(slot.check(&header), None);
    // A trunk-length name whose location part does not decode names nothing.
    let bad = "/group1/M00/00/01/wKgAxGsEx2iIDTARAAAADwL5vO4AAAAAQAAAAAAA*EA236.txt";
    assert!(decide(&s.conf, &get(bad, ""), NOW).is_err());
}

#[test]
fn a_local_file() {
    let s = Setup::new("");
    let name = normal("123.jpg");
    let uri = format!("/group1/{name}");
    let found = decide(&s.conf, &get(&uri, "filename=a.jpg"), NOW).unwrap();
    assert_eq!(found.file.group, "group1");
    assert_eq!(found.note, None);
    let Action::Local { path, send } = found.action else {
        panic!("{:?}", found.action)
    };
    assert_eq!(
        path.concat(),
        [s.store(), format!("/data/{}", &name[4..]).into_bytes()].concat()
    );
    assert_eq!(
        send,
        SendFile {
            last_modified: Some(1_700_000_000),
            content_type: None,
            disposition: content_disposition("a.jpg"),
            body: Body::Whole { ranges: true },
            cached: true,
        }
    );

    // an appender file: its own mtime, never through the open file cache
    let uri = format!(
        "/group1/{}",
        remote(SOURCE, 1_700_000_000, appender_size_field(0), "1234567")
    );
    let Action::Local { send, .. } = decide(&s.conf, &get(&uri, ""), NOW).unwrap().action else {
        panic!()
    };
    assert_eq!((send.last_modified, send.cached), (None, false));
}

#[test]
fn flv_is_its_own_body() {
    let s = Setup::new("flv_support = true\n");
    let uri = format!("/group1/{}", normal("123.flv"));
    let Action::Local { send, .. } = decide(&s.conf, &get(&uri, "start=10"), NOW).unwrap().action
    else {
        panic!()
    };
    let flv = Body::Flv {
        start: Some("10".into()),
        end: None,
    };
    assert_eq!((send.body, send.last_modified), (flv, None));

    // a Range header: an ordinary file, left to nginx's range filter
    let req = Incoming {
        range: Some("bytes=0-1"),
        ..get(&uri, "start=10")
    };
    let Action::Local { send, .. } = decide(&s.conf, &req, NOW).unwrap().action else {
        panic!()
    };
    assert_eq!(send.body, Body::Whole { ranges: true });

    // another extension, or FLV support off
    let jpg = format!("/group1/{}", normal("123.jpg"));
    let Action::Local { send, .. } = decide(&s.conf, &get(&jpg, "start=10"), NOW).unwrap().action
    else {
        panic!()
    };
    assert_eq!(send.body, Body::Whole { ranges: true });
    let off = Setup::new("");
    let Action::Local { send, .. } = decide(&off.conf, &get(&uri, "start=10"), NOW)
        .unwrap()
        .action
    else {
        panic!()
    };
    assert_eq!(send.body, Body::Whole { ranges: true });
}

#[test]
fn several_ranges_when_multi_range_is_off() {
    let s = Setup::new("http.multi_range.enabled = false\n");
    let uri = format!("/group1/{}", normal("123.jpg"));
    let two = Incoming {
        range: Some("bytes=0-1,4-5"),
        ..get(&uri, "")
    };
    assert_eq!(refusal(decide(&s.conf, &two, NOW)), (416, None));
    let one = Incoming {
        range: Some("bytes=0-1"),
        ..get(&uri, "")
    };
    assert!(decide(&s.conf, &one, NOW).is_ok());
    // only checked for a file of this node's groups
    let other = format!("/group2/{}", normal("123.jpg"));
    let two = Incoming {
        range: Some("bytes=0-1,4-5"),
        ..get(&other, "")
    };
    assert_eq!(
        decide(&s.conf, &two, NOW).unwrap().action,
        Action::Elsewhere
    );
}

#[test]
fn anti_steal_token() {
    const TOKEN: &str = "http.anti_steal.check_token = true\nhttp.anti_steal.secret_key = k\n\
                         anti_steal_bypass_header_name = X-Bypass\n\
                         anti_steal_bypass_header_value = yes\n";
    let s = Setup::new(TOKEN);
    let name = normal("123.jpg");
    let uri = format!("/group1/{name}");
    assert_eq!(refusal(decide(&s.conf, &get(&uri, ""), NOW)), (400, None));
    assert_eq!(
        refusal(decide(&s.conf, &get(&uri, "ts=1"), NOW)),
        (400, None)
    );

    let good = format!("token={}&ts={}", make_token(&name, "k", NOW - 5), NOW - 5);
    assert!(matches!(
        decide(&s.conf, &get(&uri, &good), NOW).unwrap().action,
        Action::Local { .. }
    ));

    let bad = format!("token={}&ts={}", "0".repeat(32), NOW);
    let (status, note) = refusal(decide(&s.conf, &get(&uri, &bad), NOW));
    assert_eq!(status, 400);
    assert_eq!(
        note.unwrap(),
        format!("fastdfs: token of {name} refused: Mismatch")
    );

    let bypass = Incoming {
        bypass: Some("yes"),
        ..get(&uri, "")
    };
    assert!(matches!(
        decide(&s.conf, &bypass, NOW).unwrap().action,
        Action::Local { .. }
    ));
    let wrong = Incoming {
        bypass: Some("no"),
        ..get(&uri, "")
    };
    assert_eq!(refusal(decide(&s.conf, &wrong, NOW)).0, 400);

    // with a token_check_fail file: that file, with its type by extension
    let s = Setup::new(&format!(
        "{TOKEN}http.mime_types_filename = mime.types\n\
         http.anti_steal.token_check_fail = $DIR/fail.jpg\n"
    ));
    let found = decide(&s.conf, &get(&uri, "token=short&ts=1"), NOW).unwrap();
    assert_eq!(
        found.note,
        Some(Note::TokenRefused {
            remote: &name,
            error: TokenError::Malformed
        })
    );
    let fail = s.dir.join("fail.jpg").into_os_string().into_encoded_bytes();
    let send = SendFile {
        last_modified: None,
        content_type: Some("image/jpeg".into()),
        disposition: None,
        body: Body::Whole { ranges: false },
        cached: true,
    };
    assert_eq!(found.action, Action::TokenFailFile { path: &fail, send });
}

/// The token's verdict that `decide` reports for the module's counters.
fn verdict(r: &Result<Found<'_>, Refusal<'_>>) -> Option<TokenCheck> {
    match r {
        Ok(found) => found.token,
        Err(refusal) => refusal.token,
    }
}

#[test]
fn token_verdicts_for_the_counters() {
    let name = normal("123.jpg");
    let uri = format!("/group1/{name}");
    // tokens off: no verdict
    let s = Setup::new("");
    assert_eq!(verdict(&decide(&s.conf, &get(&uri, ""), NOW)), None);

    const TOKEN: &str = "http.anti_steal.check_token = true\nhttp.anti_steal.secret_key = k\n\
                         http.anti_steal.token_ttl = 900\n\
                         anti_steal_bypass_header_name = X-Bypass\n\
                         anti_steal_bypass_header_value = yes\n";
    let s = Setup::new(TOKEN);
    let good = format!("token={}&ts={}", make_token(&name, "k", NOW - 5), NOW - 5);
    let old = NOW - 10_000;
    let expired = format!("token={}&ts={}", make_token(&name, "k", old), old);
    let wrong = format!("token={}&ts={}", make_token(&name, "x", NOW), NOW);
    let cases: [(&str, Option<&str>, TokenCheck, u16); 6] = [
        (&good, None, TokenCheck::Ok, 0),
        (&expired, None, TokenCheck::Expired, 400),
        (&wrong, None, TokenCheck::Bad, 400),
        ("token=short&ts=1", None, TokenCheck::Bad, 400),
        ("ts=1", None, TokenCheck::Missing, 400),
        ("", Some("yes"), TokenCheck::Bypass, 0),
    ];
    for (args, bypass, check, status) in cases {
        let req = Incoming {
            bypass,
            ..get(&uri, args)
        };
        let r = decide(&s.conf, &req, NOW);
        assert_eq!(verdict(&r), Some(check), "{args}");
        assert_eq!(r.as_ref().err().map_or(0, |r| r.status), status, "{args}");
    }
    // a good token, then a refusal for the range: the verdict stays
    let multi = Incoming {
        range: Some("bytes=0-1,3-4"),
        ..get(&uri, &good)
    };
    let s = Setup::new(&format!("{TOKEN}http.multi_range.enabled = false\n"));
    let r = decide(&s.conf, &multi, NOW);
    assert_eq!(
        (refusal_status(&r), verdict(&r)),
        (416, Some(TokenCheck::Ok))
    );
    // refused with the token_check_fail file: served as such
    let s = Setup::new(&format!(
        "{TOKEN}http.anti_steal.token_check_fail = $DIR/fail.jpg\n"
    ));
    let found = decide(&s.conf, &get(&uri, &expired), NOW).unwrap();
    assert_eq!(found.token, Some(TokenCheck::Expired));
    assert_eq!(found.action.served(), Served::FailFile);
}

fn refusal_status(r: &Result<Found<'_>, Refusal<'_>>) -> u16 {
    r.as_ref().err().map_or(0, |r| r.status)
}

#[test]
fn how_requests_are_served() {
    let s = Setup::new("");
    let uri = format!("/group1/{}", normal("123.jpg"));
    let found = decide(&s.conf, &get(&uri, ""), NOW).unwrap();
    assert_eq!(found.action.served(), Served::Local);
    let trunk = "/group1/M00/00/01/wKgAxGsEx2iIDTARAAAADwL5vO4AAAAAQAAAAAAAAEA236.txt";
    let found = decide(&s.conf, &get(trunk, ""), NOW).unwrap();
    assert_eq!(found.action.served(), Served::Trunk);
    assert_eq!(Action::Elsewhere.served(), Served::None);
    assert_eq!(Forward::NotFound.served(), Some(Served::None));
    assert_eq!(Forward::Wait.served(), None);
    let redirect = Forward::Redirect {
        location: "http://x/".into(),
    };
    assert_eq!(redirect.served(), Some(Served::Redirect));
}

/// A cluster whose listing holds `members` for group1 and group2 (`None`: pending).
struct FakeCluster {
    members: Option<Vec<Ipv4Addr>>,
}

impl Cluster for FakeCluster {
    fn local_ips(&self) -> &[Ipv4Addr] {
        &[ME]
    }
    fn group_members(&self, _group: &str, _created: i64, _conf: &ModConf) -> Lookup {
        match &self.members {
            Some(ips) => Lookup::Ready(
                ips.iter()
                    .map(|&ip| Peer { ip, status: ACTIVE })
                    .collect::<Vec<_>>()
                    .into(),
            ),
            None => Lookup::Pending,
        }
    }
    fn source_unlisted(&self, _group: &str, _created: i64, _conf: &ModConf) -> bool {
        true
    }
    fn no_candidate(&self, _group: &str, _conf: &ModConf) -> bool {
        false
    }
}

fn cluster(members: &[Ipv4Addr]) -> FakeCluster {
    FakeCluster {
        members: Some(members.to_vec()),
    }
}

fn arrival(uri: &str) -> Arrival<'_> {
    Arrival {
        local_addr: Some(Ipv4Addr::new(127, 0, 0, 1)),
        local_port: 8888,
        unparsed_uri: uri.as_bytes(),
        waited: false,
    }
}

/// The answer for a missing `uri` (`?args`) at `now`, and the notes as logged.
fn miss(
    s: &Setup,
    uri: &str,
    args: &str,
    cluster: &FakeCluster,
    waited: bool,
    now: i64,
) -> (Forward, Vec<String>) {
    let found = decide(&s.conf, &get(uri, args), now).unwrap();
    let unparsed = if args.is_empty() {
        uri.to_string()
    } else {
        format!("{uri}?{args}")
    };
    let at = Arrival {
        waited,
        ..arrival(&unparsed)
    };
    let (forward, notes) = on_miss(&s.conf, &found.file, &found.query, &at, cluster, now);
    (forward, notes.iter().map(|n| n.to_string()).collect())
}

#[test]
fn missing_here_for_good() {
    let s = Setup::new("");
    let all = cluster(&[SOURCE, OTHER]);
    let uri = format!("/group1/{}", normal("123.jpg"));
    // already forwarded once
    assert_eq!(
        miss(&s, &uri, "redirect=1", &all, false, NOW).0,
        Forward::NotFound
    );
    // older than the sync window
    let old = NOW + 86400 + 1;
    assert_eq!(miss(&s, &uri, "", &all, false, old).0, Forward::NotFound);
    // this node is the source
    let mine = format!(
        "/group1/{}",
        remote(ME, 1_700_000_000, normal_size_field(1, 0), "123.jpg")
    );
    assert_eq!(miss(&s, &mine, "", &all, false, NOW).0, Forward::NotFound);
    // a file of another group is never gone for good
    let other = format!("/group2/{}", normal("123.jpg"));
    assert!(matches!(
        miss(&s, &other, "", &all, false, old).0,
        Forward::Proxy(_)
    ));
}

#[test]
fn waits_once_for_the_first_listing() {
    let s = Setup::new("");
    let pending = FakeCluster { members: None };
    let name = normal("123.jpg");
    let uri = format!("/group1/{name}");
    assert_eq!(
        miss(&s, &uri, "", &pending, false, NOW),
        (Forward::Wait, vec![])
    );
    let (forward, notes) = miss(&s, &uri, "", &pending, true, NOW);
    assert_eq!(forward, Forward::NotFound);
    assert_eq!(
        notes,
        [format!(
            "fastdfs: no storage list from the trackers yet: group1/{name} not fetched"
        )]
    );
}

#[test]
fn no_storage_to_ask() {
    let s = Setup::new("");
    let name = normal("123.jpg");
    let uri = format!("/group1/{name}");
    let (forward, notes) = miss(&s, &uri, "", &cluster(&[ME]), false, NOW);
    assert_eq!(forward, Forward::NotFound);
    assert_eq!(
        notes,
        [
            format!(
                "fastdfs: source {SOURCE} of group1/{name} is not a storage of group1 as the \
                 trackers list it: not asked"
            ),
            format!("fastdfs: no storage to fetch group1/{name} from"),
        ]
    );
    let found = decide(&s.conf, &get(&uri, ""), NOW).unwrap();
    let (_, notes) = on_miss(
        &s.conf,
        &found.file,
        &found.query,
        &arrival(&uri),
        &cluster(&[]),
        NOW,
    );
    let levels: Vec<Level> = notes.iter().map(Note::level).collect();
    assert_eq!(levels, [Level::Warn, Level::Info]);
}

#[test]
fn proxy_tries_the_source_then_the_others() {
    let s = Setup::new("");
    let uri = format!("/group1/{}", normal("123.jpg"));
    let (forward, notes) = miss(&s, &uri, "a=b", &cluster(&[OTHER, SOURCE, ME]), false, NOW);
    assert!(notes.is_empty());
    let Forward::Proxy(mut state) = forward else {
        panic!("{forward:?}")
    };
    let first = state.next_target().unwrap();
    assert_eq!(first.target, format!("{SOURCE}:8888{uri}?a=b&redirect=1"));
    assert!(first.note.is_none());
    let second = state.next_target().unwrap();
    assert_eq!(second.target, format!("{OTHER}:8888{uri}?a=b&redirect=1"));
    assert_eq!(
        second.note.unwrap().to_string(),
        format!("fastdfs: trying storage {OTHER} for {uri}?a=b&redirect=1")
    );
    assert!(state.next_target().is_none());
}

#[test]
fn redirect_mode() {
    let s = Setup::new("response_mode = redirect\n");
    let uri = format!("/group1/{}", normal("123.jpg"));
    let (forward, _) = miss(&s, &uri, "", &cluster(&[SOURCE]), false, NOW);
    let location = format!("http://{SOURCE}:8888{uri}?redirect=1");
    assert_eq!(forward, Forward::Redirect { location });

    // port 80 is left out; storage_http_port wins over the port the request came in on
    let s = Setup::new("response_mode = redirect\nstorage_http_port = 80\n");
    let (forward, _) = miss(&s, &uri, "x=1", &cluster(&[SOURCE]), false, NOW);
    let location = format!("http://{SOURCE}{uri}?x=1&redirect=1");
    assert_eq!(forward, Forward::Redirect { location });
}
