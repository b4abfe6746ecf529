//! Big-endian fixed-width fields: the only place that knows how integers and NUL-padded
//! text are laid out in a FastDFS body.

use crate::errno;

/// A body that does not have the shape its command requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("body is {got} bytes, expected {expected}")]
    Length { expected: String, got: usize },
    #[error("invalid {field}: {detail}")]
    Field { field: &'static str, detail: String },
    #[error("negative or oversized package length {0}")]
    PackageLength(i64),
}

impl ProtoError {
    pub fn field(field: &'static str, detail: impl Into<String>) -> Self {
        ProtoError::Field {
            field,
            detail: detail.into(),
        }
    }

    pub fn length(expected: impl ToString, got: usize) -> Self {
        ProtoError::Length {
            expected: expected.to_string(),
            got,
        }
    }

    /// Every malformed request is answered with EINVAL, as upstream does.
    pub fn errno(&self) -> u8 {
        errno::EINVAL
    }
}

/// Reads fields front to back from a body slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.remaining() < n {
            return Err(ProtoError::length(self.pos + n, self.buf.len()));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.bytes(1)?[0])
    }

    pub fn i64(&mut self) -> Result<i64, ProtoError> {
        Ok(i64::from_be_bytes(self.bytes(8)?.try_into().unwrap()))
    }

    pub fn i32(&mut self) -> Result<i32, ProtoError> {
        Ok(i32::from_be_bytes(self.bytes(4)?.try_into().unwrap()))
    }

    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.bytes(4)?.try_into().unwrap()))
    }

    /// An i64 that must be in `0..=max`.
    pub fn len_field(&mut self, field: &'static str, max: i64) -> Result<u64, ProtoError> {
        let v = self.i64()?;
        if v < 0 || v > max {
            return Err(ProtoError::field(
                field,
                format!("{v} out of range 0..={max}"),
            ));
        }
        Ok(v as u64)
    }

    /// A NUL-padded text field of `width` bytes.
    pub fn fixed_str(&mut self, width: usize, field: &'static str) -> Result<String, ProtoError> {
        text(self.bytes(width)?, field)
    }

    /// Variable text of `n` bytes (no padding).
    pub fn str(&mut self, n: usize, field: &'static str) -> Result<String, ProtoError> {
        text(self.bytes(n)?, field)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Fails if bytes are left over: every FastDFS body has an exact length.
    pub fn finish(&self) -> Result<(), ProtoError> {
        if self.remaining() != 0 {
            return Err(ProtoError::length(self.pos, self.buf.len()));
        }
        Ok(())
    }
}

/// Text up to the first NUL; must be UTF-8.
fn text(raw: &[u8], field: &'static str) -> Result<String, ProtoError> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8(raw[..end].to_vec()).map_err(|_| ProtoError::field(field, "not UTF-8"))
}

/// Appends fields to a body.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Text cut or NUL-padded to exactly `width` bytes.
    pub fn fixed_str(&mut self, s: &str, width: usize) -> &mut Self {
        let raw = s.as_bytes();
        let n = raw.len().min(width);
        self.buf.extend_from_slice(&raw[..n]);
        self.buf.resize(self.buf.len() + (width - n), 0);
        self
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_str_pads_and_truncates() {
        let mut w = Writer::new();
        w.fixed_str("group1", 16)
            .fixed_str("0123456789abcdefXYZ", 16);
        let b = w.finish();
        assert_eq!(&b[..6], b"group1");
        assert!(b[6..16].iter().all(|&x| x == 0));
        assert_eq!(&b[16..32], b"0123456789abcdef");
        let mut r = Reader::new(&b);
        assert_eq!(r.fixed_str(16, "g").unwrap(), "group1");
        assert_eq!(r.fixed_str(16, "g").unwrap(), "0123456789abcdef");
        r.finish().unwrap();
    }

    #[test]
    fn short_body_is_an_error() {
        let mut r = Reader::new(&[0, 0, 0]);
        assert!(matches!(r.i64(), Err(ProtoError::Length { .. })));
    }

    #[test]
    fn len_field_rejects_negative() {
        let b = (-5i64).to_be_bytes();
        let mut r = Reader::new(&b);
        assert!(r.len_field("size", 100).is_err());
    }
}
