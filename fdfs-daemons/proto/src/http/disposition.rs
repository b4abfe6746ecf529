//! `Content-Disposition` for the `filename=` query argument (RFC 6266 / RFC 8187).

/// Longest file name (in bytes, before encoding) put into the header.
pub const MAX_NAME_LEN: usize = 512;

fn attr_char(b: u8) -> bool {
    // RFC 8187 attr-char
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b)
}

/// `attachment; filename="..."` with an ASCII fallback, plus `filename*=UTF-8''...` when
/// the name is not plain printable ASCII (or holds `"`/`\`/`%`). Control characters and
/// path separators are dropped. `None` for a name that is empty after cleaning.
pub fn content_disposition(name: &str) -> Option<String> {
    let mut cleaned = String::new();
    for c in name.chars() {
        if c.is_control() || c == '/' || c == '\\' {
            continue;
        }
        if cleaned.len() + c.len_utf8() > MAX_NAME_LEN {
            break;
        }
        cleaned.push(c);
    }
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        return None;
    }
    let plain = cleaned
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'%');
    if plain {
        return Some(format!("attachment; filename=\"{cleaned}\""));
    }
    let fallback: String = cleaned
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '%' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in cleaned.bytes() {
        if attr_char(b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Some(format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_name_is_quoted() {
        assert_eq!(
            content_disposition("report 2024.pdf").unwrap(),
            "attachment; filename=\"report 2024.pdf\""
        );
    }

    #[test]
    fn utf8_name_gets_filename_star() {
        assert_eq!(
            content_disposition("résumé.txt").unwrap(),
            "attachment; filename=\"r_sum_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"
        );
    }

    #[test]
    fn quotes_and_separators_cannot_break_the_header() {
        let v = content_disposition("a\"b/..\\c\r\nX: y").unwrap();
        assert!(!v.contains('\r') && !v.contains('\n'));
        assert_eq!(
            v,
            "attachment; filename=\"a_b..cX: y\"; filename*=UTF-8''a%22b..cX%3A%20y"
        );
        assert_eq!(content_disposition(" \r\n"), None);
    }
}
