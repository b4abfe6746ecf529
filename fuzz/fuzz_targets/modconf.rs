//! `mod_fastdfs.conf` (the nginx module's config): `IniFile::parse` then `ModConf::from_ini`.
//! Store paths may name real directories (`s0`/`s1` under a scratch dir are made for
//! that); inputs that would read a file by absolute path are skipped.
#![no_main]

use fdfs_proto::config::IniFile;
use fdfs_proto::http::{ModConf, ResponseMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = fdfs_fuzz::lossy(data);
    if !fdfs_fuzz::config_text_is_safe(&text) {
        return;
    }
    // `@STORE@` in an input stands for the scratch dir that has s0/ and s1/.
    let store = fdfs_fuzz::store_dir();
    let text = text.replace("@STORE@", &store.display().to_string());
    let Ok(ini) = IniFile::parse(&text, fdfs_fuzz::empty_dir().join("mod_fastdfs.conf")) else {
        return;
    };
    match ModConf::from_ini(&ini) {
        Ok(c) => {
            assert!(!c.groups.is_empty());
            for g in &c.groups {
                assert!(fdfs_proto::valid_group_name(&g.name));
                assert!(!g.store_paths.is_empty() && g.store_paths.len() <= 256);
                assert!(c.group(&g.name).is_some());
            }
            if c.multi_group {
                assert!(c.url_have_group_name);
            }
            assert!(c.connect_timeout > 0 && c.network_timeout > 0);
            assert!(c.http.token_ttl >= 1);
            assert!(c.http.secret_key.len() <= 128);
            assert!(!c.http.check_token || !c.http.secret_key.is_empty());
            assert!(matches!(
                c.response_mode,
                ResponseMode::Proxy | ResponseMode::Redirect
            ));
            assert!(c.if_alias_prefix.iter().all(|p| !p.is_empty()));
            assert!(!c.flv_extension.is_empty());
            for t in &c.tracker_servers {
                assert!(t.hosts.iter().all(|h| !h.is_empty()) && t.port > 0);
                assert!(!t.to_string().is_empty());
            }
            let _ = c.http.content_type_of(&text);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // The mime.types reader the module uses on `http.mime_types_filename`.
    let types = fdfs_proto::http::modconf::parse_mime_types(&text);
    for k in types.keys() {
        assert!(!k.ends_with(';'));
        assert!(!k
            .bytes()
            .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace()));
    }
});
