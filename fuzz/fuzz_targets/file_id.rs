//! File IDs: `RemoteName::parse`, what a name says (`info`), `split_file_id`,
//! `PackedName::decode`, on arbitrary text; and the round trip of the 27 packed chars.
#![no_main]

use std::path::{Component, Path};

use fdfs_proto::fileid::*;
use libfuzzer_sys::fuzz_target;

/// Position of a character in FastDFS's base64 alphabet (URL-safe: `-` and `_`).
fn b64_index(c: u8) -> u8 {
    match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("{c:?} is not a base64 character"),
    }
}

/// 27 chars carry 162 bits for 20 bytes: the last char's 2 low bits are not kept.
fn same_modulo_trailing_bits(a: &str, b: &str) {
    assert_eq!(a.len(), BASE64_LEN);
    assert_eq!(b.len(), BASE64_LEN);
    assert_eq!(a[..BASE64_LEN - 1], b[..BASE64_LEN - 1]);
    let (x, y) = (a.as_bytes()[BASE64_LEN - 1], b.as_bytes()[BASE64_LEN - 1]);
    assert_eq!(b64_index(x) & !3, b64_index(y) & !3, "{a} vs {b}");
}

fn check_remote(s: &str) {
    let Ok(name) = RemoteName::parse(s) else {
        return;
    };
    // Only a plain file name inside `data/XX/YY/` gets through.
    assert!(s.len() <= REMOTE_NAME_MAX_LEN);
    assert!(name.base.len() >= BASE64_LEN);
    // `..` may occur inside a name (`…11..jpg` from an ext of `.jpg`), but the name is
    // always one plain path component: no `/`, no leading `.`, so never `.` or `..`.
    assert!(!name.base.contains('/'));
    assert!(!name.base.starts_with('.'));
    assert!(fdfs_proto::valid_name_part(name.base));
    let rel = Path::new(name.data_relative());
    assert_eq!(rel.components().count(), 3);
    assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
    assert_eq!(rel.file_name().and_then(|f| f.to_str()), Some(name.base));
    // The path part is canonical (uppercase hex), so the name rebuilds exactly.
    assert_eq!(
        remote_name(name.store_path, name.high, name.low, name.base),
        s
    );
    if let Ok(p) = name.packed() {
        same_modulo_trailing_bits(&p.encode(), &name.base[..BASE64_LEN]);
        assert_eq!(PackedName::decode(&p.encode()).unwrap(), p);
        let info = name.info().unwrap();
        assert_eq!(info.source, p.source);
        assert_eq!(info.timestamp, p.timestamp);
        assert!(info.file_size <= p.size_field);
    } else {
        assert!(name.info().is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s: &str = &text;

    check_remote(s);
    if let Ok((group, remote)) = split_file_id(s) {
        assert!(fdfs_proto::valid_group_name(group));
        assert_eq!(format!("{group}/{remote}"), s);
        assert!(RemoteName::parse(remote).is_ok());
    }
    // The packed part alone, at every offset a 27-char window fits (bounded).
    for start in (0..s.len().saturating_sub(BASE64_LEN - 1)).take(8) {
        if let Some(w) = s.get(start..start + BASE64_LEN) {
            if let Ok(p) = PackedName::decode(w) {
                same_modulo_trailing_bits(&p.encode(), w);
            }
        }
    }
    let _ = PackedName::decode(s);

    // Local file names and extensions (fdfs_upload_file).
    let ext = ext_from_local_name(s);
    assert!(valid_ext(ext));
    if valid_ext(s) {
        let mut n = 0u8;
        let tail = formatted_ext(s, || {
            n = n.wrapping_add(7);
            n
        });
        assert_eq!(tail.len(), FEXT_LEN);
    }

    // Any 20 bytes make a name that parses back to them.
    if data.len() >= 24 {
        let raw = &data[..20];
        let p = PackedName {
            source: Source::from_bytes(raw[..4].try_into().unwrap()),
            timestamp: u32::from_be_bytes(raw[4..8].try_into().unwrap()),
            size_field: u64::from_be_bytes(raw[8..16].try_into().unwrap()),
            crc32: u32::from_be_bytes(raw[16..20].try_into().unwrap()),
        };
        assert_eq!(p.source.to_bytes(), raw[..4]);
        let packed = p.encode();
        assert_eq!(PackedName::decode(&packed).unwrap(), p);
        let ext = ["", "txt", "a-b_c", "tar.gz"][data[20] as usize % 4];
        let mut d = data[21];
        let tail = formatted_ext(ext, || {
            d = d.wrapping_mul(31).wrapping_add(1);
            d
        });
        let slave = if data[22] & 1 == 1 { "_big" } else { "" };
        let full = remote_name(
            data[21],
            data[22],
            data[23],
            &format!("{packed}{slave}{tail}"),
        );
        let name = RemoteName::parse(&full).expect("a generated name parses");
        assert_eq!(name.packed().unwrap(), p);
        let info = name.info().unwrap();
        if p.size_field & SIZE_FLAG_APPENDER != 0 {
            assert_eq!(info.kind, FileKind::Appender);
        } else if !slave.is_empty() && p.size_field & SIZE_FLAG_TRUNK == 0 {
            assert_eq!(info.kind, FileKind::Slave);
        }
        check_remote(&full);
    }
});
