//! Moving file bodies between a socket and a file in bounded chunks, so memory stays flat
//! whatever the file size.

use std::fs::File;
use std::io::{self, Write};

use fdfs_runtime::Connection;

/// Largest chunk moved at once.
pub const CHUNK: usize = 256 * 1024;

/// Which side of a transfer failed: the network (close the connection) or the disk
/// (answer with an errno; the connection goes on once the rest of the request is read).
#[derive(Debug)]
pub enum TransferError {
    Net(io::Error),
    Disk(io::Error),
}

impl TransferError {
    pub fn into_io(self) -> io::Error {
        match self {
            TransferError::Net(e) | TransferError::Disk(e) => e,
        }
    }
}

/// Reads exactly `len` bytes from the connection into `file`, feeding `crc` on the way.
pub async fn receive_into(
    conn: &mut Connection,
    file: &mut impl Write,
    len: u64,
    mut crc: Option<&mut crc32fast::Hasher>,
) -> Result<(), TransferError> {
    let mut buf = vec![0u8; (len as usize).clamp(1, CHUNK)];
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = conn
            .read_some(&mut buf[..want])
            .await
            .map_err(TransferError::Net)?;
        if n == 0 {
            return Err(TransferError::Net(io::ErrorKind::UnexpectedEof.into()));
        }
        if let Some(h) = crc.as_deref_mut() {
            h.update(&buf[..n]);
        }
        left -= n as u64;
        file.write_all(&buf[..n]).map_err(TransferError::Disk)?;
    }
    Ok(())
}

/// Reads and throws away `len` bytes, so a rejected request leaves the stream in sync.
pub async fn discard(conn: &mut Connection, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; (len as usize).clamp(1, CHUNK)];
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = conn.read_some(&mut buf[..want]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    Ok(())
}

/// Writes `len` bytes of `file` from `offset` to the connection, with `sendfile(2)`: the
/// content goes from the page cache to the socket without passing through us.
pub async fn send_range(
    conn: &mut Connection,
    file: &mut File,
    offset: u64,
    len: u64,
) -> Result<(), TransferError> {
    use tokio::io::Interest;
    conn.flush().await.map_err(TransferError::Net)?;
    let timeout = conn.timeout();
    let stream = &*conn.stream_mut();
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let want = (end - pos).min(1 << 30) as usize;
        let sent = stream.try_io(Interest::WRITABLE, || {
            Ok(rustix::fs::sendfile(stream, &*file, Some(&mut pos), want)?)
        });
        match sent {
            Ok(0) => {
                // The file is shorter than it was: nothing more to send.
                return Err(TransferError::Disk(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(timeout, stream.writable())
                    .await
                    .map_err(|_| {
                        TransferError::Net(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "network timeout",
                        ))
                    })?
                    .map_err(TransferError::Net)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransferError::Net(e)),
        }
    }
    Ok(())
}
