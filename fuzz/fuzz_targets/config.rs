//! The ini reader (`IniFile::parse`) on arbitrary text, and every typed getter on every key
//! it finds. The file "lives" in an empty directory: relative `#include`s fail cleanly, and
//! inputs that name a file by absolute path are skipped (see `config_text_is_safe`).
#![no_main]

use fdfs_proto::config::{IniFile, Section, SpaceLimit, TimeOfDay, MAX_KEY_LEN, MAX_VALUE_LEN};
use libfuzzer_sys::fuzz_target;

fn exercise(sec: Section<'_>) {
    for key in sec.keys() {
        let e = sec.entry(key).expect("listed key has an entry");
        assert!(!e.key.is_empty() && e.key.len() <= MAX_KEY_LEN);
        assert!(e.value.len() <= MAX_VALUE_LEN);
        assert!(!e.key.contains('\n') && !e.value.contains('\n'));
        assert_eq!(e.key, e.key.trim());
        assert_eq!(e.value, e.value.trim());
        assert!(e.line >= 1);
        assert!(!sec.all(key).is_empty());
        assert_eq!(sec.str(key), Some(e.value.as_str()));
        let _ = sec.require_str(key);
        let _ = sec.bool(key, false);
        let _ = sec.int(key, 0);
        if let Ok(v) = sec.int_in(key, 5, -3, 1000) {
            assert!(v == 5 || (-3..=1000).contains(&v));
        }
        if let Ok(v) = sec.size(key, 0) {
            let _ = v;
        }
        match sec.space(key, SpaceLimit::Bytes(0)) {
            Ok(SpaceLimit::Ratio(r)) => {
                assert!(r > 0.0 && r < 1.0, "{r}");
                let _ = SpaceLimit::Ratio(r).reserved_mb(u64::MAX);
                let _ = SpaceLimit::Ratio(r).to_fdfs_string();
            }
            Ok(s @ SpaceLimit::Bytes(_)) => {
                let _ = s.reserved_mb(0);
                let _ = s.to_fdfs_string();
            }
            Err(_) => {}
        }
        let midnight = TimeOfDay { hour: 0, minute: 0 };
        if let Ok(t) = sec.time_of_day(key, midnight) {
            assert!(t.hour < 24 && t.minute < 60);
            assert_eq!(t.to_string().len(), 5);
        }
        let _ = sec.choice(key, &["IPv4", "IPv6", "auto"], 2);
        let err = sec.invalid(key, "something");
        assert!(!err.to_string().is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let text = fdfs_fuzz::lossy(data);
    if !fdfs_fuzz::config_text_is_safe(&text) {
        return;
    }
    let path = fdfs_fuzz::empty_dir().join("fuzz.conf");
    match IniFile::parse(&text, &path) {
        Ok(ini) => {
            assert_eq!(ini.path(), path);
            exercise(ini.global());
            for name in ini.section_names() {
                let sec = ini.section(name).expect("listed section exists");
                assert_eq!(sec.name(), name);
                exercise(sec);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
