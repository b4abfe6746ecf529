//! Metadata (`name\x02value` records joined by `\x01`): unpack, pack, merge.
#![no_main]

use fdfs_proto::metadata::*;
use libfuzzer_sys::fuzz_target;

fn check_pairs(pairs: &Pairs) {
    for (name, value) in pairs {
        assert!(name.len() <= NAME_MAX_LEN && value.len() <= VALUE_MAX_LEN);
        assert!(!name.contains(&RECORD_SEP) && !name.contains(&FIELD_SEP));
        assert!(!value.contains(&RECORD_SEP));
    }
}

fuzz_target!(|data: &[u8]| {
    let pairs = unpack(data);
    check_pairs(&pairs);
    let packed = pack(&pairs);
    // Packing is canonical: sorted, one record per name, and stable under a second pass.
    let again = unpack(&packed);
    check_pairs(&again);
    assert!(again.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(pack(&again), packed);
    assert!(again.len() <= pairs.len());
    // Merge: the second half wins on equal names; merging with nothing changes nothing.
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let (old, new) = data.split_at(cut);
    let merged = merge(old, new);
    let m: std::collections::BTreeMap<_, _> = unpack(&merged).into_iter().collect();
    let latest: std::collections::BTreeMap<_, _> = unpack(new).into_iter().collect();
    for (name, value) in &latest {
        assert_eq!(m.get(name), Some(value), "name {name:?}");
    }
    assert_eq!(merge(&packed, b""), packed);
    assert_eq!(merge(b"", &packed), packed);
});
