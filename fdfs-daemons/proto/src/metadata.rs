//! Metadata: `name\x02value` pairs joined by `\x01`, kept sorted by name.

pub const RECORD_SEP: u8 = 0x01;
pub const FIELD_SEP: u8 = 0x02;
pub const NAME_MAX_LEN: usize = 64;
pub const VALUE_MAX_LEN: usize = 256;

/// Set-metadata operation flags.
pub const OP_OVERWRITE: u8 = b'O';
pub const OP_MERGE: u8 = b'M';

pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Parses the packed form; long names and values are cut as upstream does; a record
/// without a field separator becomes a name with an empty value.
pub fn unpack(raw: &[u8]) -> Pairs {
    raw.split(|&b| b == RECORD_SEP)
        .filter(|rec| !rec.is_empty())
        .map(|rec| {
            let (name, value) = match rec.iter().position(|&b| b == FIELD_SEP) {
                Some(p) => (&rec[..p], &rec[p + 1..]),
                None => (rec, &rec[rec.len()..]),
            };
            (
                name[..name.len().min(NAME_MAX_LEN)].to_vec(),
                value[..value.len().min(VALUE_MAX_LEN)].to_vec(),
            )
        })
        .collect()
}

/// Packs pairs sorted by name; on equal names the later one wins.
pub fn pack(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut sorted: std::collections::BTreeMap<&[u8], &[u8]> = Default::default();
    for (n, v) in pairs {
        sorted.insert(n, v);
    }
    let mut out = Vec::new();
    for (i, (n, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(RECORD_SEP);
        }
        out.extend_from_slice(n);
        out.push(FIELD_SEP);
        out.extend_from_slice(v);
    }
    out
}

/// Merges `update` into `existing` (new values win) and packs the result.
pub fn merge(existing: &[u8], update: &[u8]) -> Vec<u8> {
    let mut pairs = unpack(existing);
    pairs.extend(unpack(update));
    pack(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_metadata_round_trips_sorted() {
        let raw = b"ext_name\x02jpg\x01width\x02160\x01height\x0280\x01file_size\x02115120";
        let pairs = unpack(raw);
        assert_eq!(pairs.len(), 4);
        assert_eq!(
            pack(&pairs),
            b"ext_name\x02jpg\x01file_size\x02115120\x01height\x0280\x01width\x02160".to_vec()
        );
    }

    #[test]
    fn merge_new_value_wins() {
        let merged = merge(b"a\x021\x01b\x022", b"b\x023\x01c\x024");
        assert_eq!(merged, b"a\x021\x01b\x023\x01c\x024".to_vec());
        assert_eq!(merge(b"", b""), Vec::<u8>::new());
    }
}
