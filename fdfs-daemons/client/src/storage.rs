//! One connection to one storage server, and every client command it understands.
//!
//! File content is streamed: uploads and downloads move at most [`CHUNK_SIZE`] bytes at a
//! time between the socket and the file (a download into a local file uses three 1 MiB
//! buffers, so that receiving and writing overlap), so memory does not grow with the
//! file size.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fdfs_proto::fileid::valid_ext;
use fdfs_proto::metadata::{self, Pairs};
use fdfs_proto::msg::{ActiveTest, DeleteFile, GetMetadata, Request};
use fdfs_proto::msg::{
    AppendHead, Download, FileInfoReply, FileRef, ModifyHead, SetMetadata, SlaveHead, StoredFile,
    Truncate, UploadHead,
};
use fdfs_proto::{cmd, valid_name_part, Header, PREFIX_MAX_LEN};
use fdfs_runtime::{Connection, Error};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes moved per read/write while streaming file content.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Buffer size and count of a download into a local file (receiving and writing overlap).
const FILE_CHUNK: usize = 1024 * 1024;
const FILE_BUFFERS: usize = 3;
/// Largest reply to an upload / regenerate (group + remote filename) a client accepts.
const MAX_NAME_REPLY: u64 = 16 + 128;

/// A session with one storage server.
pub struct StorageClient {
    conn: Connection,
    addr: SocketAddr,
}

/// The storage closed the connection while `remaining` content bytes were still due.
fn closed_early(remaining: u64) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("storage closed the connection with {remaining} bytes still due"),
    ))
}

fn check_ext(ext: &str) -> Result<(), Error> {
    if !valid_ext(ext) {
        return Err(crate::invalid_input("ext name", format!("{ext:?}")));
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<(), Error> {
    if prefix.is_empty() || prefix.len() > PREFIX_MAX_LEN || !valid_name_part(prefix) {
        return Err(crate::invalid_input("prefix name", format!("{prefix:?}")));
    }
    Ok(())
}

/// Opens a local file for reading and returns it with its size.
pub(crate) async fn open_local(path: &Path) -> Result<(tokio::fs::File, u64), Error> {
    let file = tokio::fs::File::open(path).await?;
    let meta = file.metadata().await?;
    if !meta.is_file() {
        return Err(Error::Io(rustix::io::Errno::ISDIR.into()));
    }
    Ok((file, meta.len()))
}

impl StorageClient {
    pub async fn connect(
        addr: SocketAddr,
        connect_timeout: Duration,
        network_timeout: Duration,
    ) -> Result<Self, Error> {
        let conn = Connection::connect(addr, None, connect_timeout, network_timeout).await?;
        Ok(StorageClient { conn, addr })
    }

    /// Wraps an already connected session.
    pub fn from_connection(conn: Connection, addr: SocketAddr) -> Self {
        StorageClient { conn, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends the session politely.
    pub async fn quit(self) {
        self.conn.quit().await
    }

    /// 111: checks the storage is alive.
    pub async fn active_test(&mut self) -> Result<(), Error> {
        self.conn.call(&ActiveTest).await
    }

    /// Sends `head` then exactly `size` bytes from `reader`, in chunks, and reads the
    /// reply body (at most `max_reply` bytes).
    async fn send_streamed<R: AsyncRead + Unpin>(
        &mut self,
        command: u8,
        head: &[u8],
        reader: &mut R,
        size: u64,
        max_reply: u64,
    ) -> Result<Vec<u8>, Error> {
        let total = (head.len() as u64)
            .checked_add(size)
            .filter(|&t| t <= i64::MAX as u64)
            .ok_or_else(|| crate::invalid_input("file size", size))?;
        let header = Header {
            pkg_len: total as i64,
            cmd: command,
            status: 0,
        };
        if let Err(e) = self.conn.send(header, head).await {
            return Err(self.error_after_write_failure(e).await);
        }
        let mut buf = vec![0u8; (size.min(CHUNK_SIZE as u64) as usize).max(1)];
        let mut remaining = size;
        while remaining > 0 {
            let want = remaining.min(buf.len() as u64) as usize;
            let n = reader.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(Error::Other(format!(
                    "local data ended {remaining} bytes before the announced size {size}"
                )));
            }
            if let Err(e) = self.conn.write_all(&buf[..n]).await {
                return Err(self.error_after_write_failure(e).await);
            }
            remaining -= n as u64;
        }
        let len = self.conn.read_reply_header(max_reply).await?;
        Ok(self.conn.read_body(len as usize).await?)
    }

    /// The storage may answer with an errno and close before taking all the content;
    /// report that errno rather than the broken pipe.
    async fn error_after_write_failure(&mut self, err: std::io::Error) -> Error {
        match self.conn.read_reply_header(0).await {
            Err(Error::Status(s)) => Error::Status(s),
            _ => Error::Io(err),
        }
    }

    async fn upload_cmd<R: AsyncRead + Unpin>(
        &mut self,
        command: u8,
        reader: &mut R,
        size: u64,
        ext: &str,
        store_path_index: i8,
    ) -> Result<StoredFile, Error> {
        check_ext(ext)?;
        let head = UploadHead {
            store_path_index,
            file_size: size,
            ext: ext.to_string(),
        }
        .encode();
        let reply = self
            .send_streamed(command, &head, reader, size, MAX_NAME_REPLY)
            .await?;
        Ok(StoredFile::decode(&reply)?)
    }

    /// 11: uploads `size` bytes read from `reader`. `store_path_index` −1 lets the
    /// storage choose.
    pub async fn upload_reader<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        size: u64,
        ext: &str,
        store_path_index: i8,
    ) -> Result<StoredFile, Error> {
        self.upload_cmd(cmd::UPLOAD_FILE, reader, size, ext, store_path_index)
            .await
    }

    pub async fn upload_buffer(
        &mut self,
        data: &[u8],
        ext: &str,
        store_path_index: i8,
    ) -> Result<StoredFile, Error> {
        let mut r = data;
        self.upload_reader(&mut r, data.len() as u64, ext, store_path_index)
            .await
    }

    pub async fn upload_file(
        &mut self,
        path: &Path,
        ext: &str,
        store_path_index: i8,
    ) -> Result<StoredFile, Error> {
        let (mut f, size) = open_local(path).await?;
        self.upload_reader(&mut f, size, ext, store_path_index)
            .await
    }

    /// 23: uploads an appender file.
    pub async fn upload_appender_reader<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        size: u64,
        ext: &str,
        store_path_index: i8,
    ) -> Result<StoredFile, Error> {
        self.upload_cmd(
            cmd::UPLOAD_APPENDER_FILE,
            reader,
            size,
            ext,
            store_path_index,
        )
        .await
    }

    pub async fn upload_appender_buffer(
        &mut self,
        data: &[u8],
        ext: &str,
        store_path_index: i8,
    ) -> Result<StoredFile, Error> {
        let mut r = data;
        self.upload_appender_reader(&mut r, data.len() as u64, ext, store_path_index)
            .await
    }

    pub async fn upload_appender_file(
        &mut self,
        path: &Path,
        ext: &str,
        store_path_index: i8,
    ) -> Result<StoredFile, Error> {
        let (mut f, size) = open_local(path).await?;
        self.upload_appender_reader(&mut f, size, ext, store_path_index)
            .await
    }

    /// 21: uploads a slave of `master` (a remote filename, no group).
    pub async fn upload_slave_reader<R: AsyncRead + Unpin>(
        &mut self,
        master: &str,
        prefix: &str,
        ext: &str,
        reader: &mut R,
        size: u64,
    ) -> Result<StoredFile, Error> {
        check_prefix(prefix)?;
        check_ext(ext)?;
        let head = SlaveHead {
            master_len: master.len(),
            file_size: size,
            prefix: prefix.to_string(),
            ext: ext.to_string(),
        }
        .encode(master);
        let reply = self
            .send_streamed(cmd::UPLOAD_SLAVE_FILE, &head, reader, size, MAX_NAME_REPLY)
            .await?;
        Ok(StoredFile::decode(&reply)?)
    }

    pub async fn upload_slave_buffer(
        &mut self,
        master: &str,
        prefix: &str,
        ext: &str,
        data: &[u8],
    ) -> Result<StoredFile, Error> {
        let mut r = data;
        self.upload_slave_reader(master, prefix, ext, &mut r, data.len() as u64)
            .await
    }

    pub async fn upload_slave_file(
        &mut self,
        master: &str,
        prefix: &str,
        ext: &str,
        path: &Path,
    ) -> Result<StoredFile, Error> {
        let (mut f, size) = open_local(path).await?;
        self.upload_slave_reader(master, prefix, ext, &mut f, size)
            .await
    }

    /// 24: appends `size` bytes to the appender file `filename` (remote name, no group).
    pub async fn append_reader<R: AsyncRead + Unpin>(
        &mut self,
        filename: &str,
        reader: &mut R,
        size: u64,
    ) -> Result<(), Error> {
        let head = AppendHead::encode(filename, size);
        self.send_streamed(cmd::APPEND_FILE, &head, reader, size, 0)
            .await
            .map(|_| ())
    }

    pub async fn append_buffer(&mut self, filename: &str, data: &[u8]) -> Result<(), Error> {
        let mut r = data;
        self.append_reader(filename, &mut r, data.len() as u64)
            .await
    }

    pub async fn append_file(&mut self, filename: &str, path: &Path) -> Result<(), Error> {
        let (mut f, size) = open_local(path).await?;
        self.append_reader(filename, &mut f, size).await
    }

    /// 34: overwrites `size` bytes of an appender file from `offset` on.
    pub async fn modify_reader<R: AsyncRead + Unpin>(
        &mut self,
        filename: &str,
        offset: u64,
        reader: &mut R,
        size: u64,
    ) -> Result<(), Error> {
        let head = ModifyHead::encode(filename, offset, size);
        self.send_streamed(cmd::MODIFY_FILE, &head, reader, size, 0)
            .await
            .map(|_| ())
    }

    pub async fn modify_buffer(
        &mut self,
        filename: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Error> {
        let mut r = data;
        self.modify_reader(filename, offset, &mut r, data.len() as u64)
            .await
    }

    pub async fn modify_file(
        &mut self,
        filename: &str,
        offset: u64,
        path: &Path,
    ) -> Result<(), Error> {
        let (mut f, size) = open_local(path).await?;
        self.modify_reader(filename, offset, &mut f, size).await
    }

    /// 36: truncates (or extends) an appender file.
    pub async fn truncate(&mut self, filename: &str, new_size: u64) -> Result<(), Error> {
        self.expect_empty(&Truncate {
            filename: filename.to_string(),
            new_size,
        })
        .await
    }

    /// 38: turns an appender file into a normal file; returns its new name.
    pub async fn regenerate_appender_filename(
        &mut self,
        filename: &str,
    ) -> Result<StoredFile, Error> {
        let reply = self
            .request_limited(
                cmd::REGENERATE_APPENDER_FILENAME,
                filename.as_bytes(),
                MAX_NAME_REPLY,
            )
            .await?;
        Ok(StoredFile::decode(&reply)?)
    }

    /// 12: deletes a file (and its metadata).
    pub async fn delete(&mut self, group: &str, filename: &str) -> Result<(), Error> {
        self.expect_empty(&DeleteFile(file_ref(group, filename)))
            .await
    }

    /// 13: sets metadata; `op` is [`metadata::OP_OVERWRITE`] or [`metadata::OP_MERGE`].
    pub async fn set_metadata(
        &mut self,
        group: &str,
        filename: &str,
        op: u8,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), Error> {
        if op != metadata::OP_OVERWRITE && op != metadata::OP_MERGE {
            return Err(crate::invalid_input("metadata op", format!("{op:#x}")));
        }
        self.expect_empty(&SetMetadata {
            op,
            group: group.to_string(),
            filename: filename.to_string(),
            packed: metadata::pack(pairs),
        })
        .await
    }

    /// 15: reads the metadata of a file.
    pub async fn get_metadata(&mut self, group: &str, filename: &str) -> Result<Pairs, Error> {
        let reply = self
            .conn
            .call(&GetMetadata(file_ref(group, filename)))
            .await?;
        Ok(metadata::unpack(&reply))
    }

    /// 22: size, timestamp, CRC32 and source of a file; `flags` from
    /// [`fdfs_proto::msg::file_info_flag`].
    pub async fn query_file_info(
        &mut self,
        group: &str,
        filename: &str,
        flags: u8,
    ) -> Result<FileInfoReply, Error> {
        let body = file_ref(group, filename).encode();
        let header = Header {
            pkg_len: body.len() as i64,
            cmd: cmd::QUERY_FILE_INFO,
            status: flags,
        };
        self.conn.send(header, &body).await?;
        let len = self.conn.read_reply_header(70).await?;
        let reply = self.conn.read_body(len as usize).await?;
        Ok(FileInfoReply::decode(&reply)?)
    }

    /// 14: streams `count` bytes (0 = to the end) from `offset` into `writer`; returns
    /// the number of bytes written.
    pub async fn download_to_writer<W: AsyncWrite + Unpin>(
        &mut self,
        group: &str,
        filename: &str,
        offset: u64,
        count: u64,
        writer: &mut W,
    ) -> Result<u64, Error> {
        let len = self.start_download(group, filename, offset, count).await?;
        self.copy_download(len, writer).await?;
        writer.flush().await?;
        Ok(len)
    }

    /// 14 into a local file. The file is created only once the storage has accepted
    /// the request, and removed again if the transfer fails.
    pub async fn download_to_file(
        &mut self,
        group: &str,
        filename: &str,
        offset: u64,
        count: u64,
        path: &Path,
    ) -> Result<u64, Error> {
        let len = self.start_download(group, filename, offset, count).await?;
        let result = async {
            let file = tokio::fs::File::create(path).await?.into_std().await;
            // Written and closed, not flushed to disk: as upstream's tool, and as `cp`.
            self.copy_download_to_file(len, file).await
        }
        .await;
        if let Err(e) = result {
            // Only a regular file is removed: never a device such as /dev/null.
            if tokio::fs::symlink_metadata(path)
                .await
                .is_ok_and(|m| m.file_type().is_file())
            {
                let _ = tokio::fs::remove_file(path).await;
            }
            return Err(e);
        }
        Ok(len)
    }

    /// 14 into memory (for small files).
    pub async fn download_to_vec(
        &mut self,
        group: &str,
        filename: &str,
        offset: u64,
        count: u64,
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.download_to_writer(group, filename, offset, count, &mut out)
            .await?;
        Ok(out)
    }

    /// Sends the download request and returns the announced content length.
    async fn start_download(
        &mut self,
        group: &str,
        filename: &str,
        offset: u64,
        count: u64,
    ) -> Result<u64, Error> {
        if offset > i64::MAX as u64 || count > i64::MAX as u64 {
            return Err(crate::invalid_input(
                "download range",
                "offset or count too large",
            ));
        }
        let body = Download {
            offset,
            count,
            group: group.to_string(),
            filename: filename.to_string(),
        }
        .encode();
        self.conn
            .send(Header::request(cmd::DOWNLOAD_FILE, body.len()), &body)
            .await?;
        let len = self.conn.read_reply_header(i64::MAX as u64).await?;
        if count > 0 && len > count {
            return Err(Error::Other(format!(
                "storage announced {len} bytes for a download of {count}"
            )));
        }
        Ok(len)
    }

    async fn copy_download<W: AsyncWrite + Unpin>(
        &mut self,
        len: u64,
        writer: &mut W,
    ) -> Result<(), Error> {
        let mut buf = vec![0u8; (len.min(CHUNK_SIZE as u64) as usize).max(1)];
        let mut remaining = len;
        while remaining > 0 {
            let want = remaining.min(buf.len() as u64) as usize;
            let n = self.conn.read_some(&mut buf[..want]).await?;
            if n == 0 {
                return Err(closed_early(remaining));
            }
            writer.write_all(&buf[..n]).await?;
            remaining -= n as u64;
        }
        Ok(())
    }

    /// Streams `len` bytes of content into `file`: this task fills buffers from the
    /// socket while a blocking thread writes the previous ones, so receiving and writing
    /// overlap. At most [`FILE_BUFFERS`] buffers of [`FILE_CHUNK`] bytes exist at once.
    async fn copy_download_to_file(&mut self, len: u64, file: std::fs::File) -> Result<(), Error> {
        use std::io::Write;
        use tokio::sync::mpsc;
        let (full_tx, mut full_rx) = mpsc::channel::<Vec<u8>>(FILE_BUFFERS);
        let (empty_tx, mut empty_rx) = mpsc::channel::<Vec<u8>>(FILE_BUFFERS);
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut file = file;
            while let Some(buf) = full_rx.blocking_recv() {
                file.write_all(&buf)?;
                // The reader may be gone already (it failed): then the buffer is dropped.
                let _ = empty_tx.blocking_send(buf);
            }
            Ok(())
        });
        let chunk = len.min(FILE_CHUNK as u64) as usize;
        let mut made = 0;
        let mut remaining = len;
        let received: Result<(), Error> = async {
            while remaining > 0 {
                let mut buf = if made < FILE_BUFFERS {
                    made += 1;
                    vec![0u8; chunk]
                } else {
                    match empty_rx.recv().await {
                        Some(b) => b,
                        None => return Ok(()), // the writer failed: its error is reported
                    }
                };
                let want = remaining.min(chunk as u64) as usize;
                buf.truncate(want);
                // network_timeout bounds each read, as upstream, not the whole buffer.
                let mut filled = 0;
                while filled < want {
                    let n = self.conn.read_some(&mut buf[filled..]).await?;
                    if n == 0 {
                        return Err(closed_early(remaining - filled as u64));
                    }
                    filled += n;
                }
                remaining -= want as u64;
                if full_tx.send(buf).await.is_err() {
                    return Ok(()); // the writer failed: its error is reported
                }
            }
            Ok(())
        }
        .await;
        drop(full_tx);
        drop(empty_rx);
        let written = writer
            .await
            .map_err(|e| Error::Other(format!("file writer: {e}")))?;
        received?;
        written?;
        Ok(())
    }

    async fn request_limited(
        &mut self,
        command: u8,
        body: &[u8],
        max_reply: u64,
    ) -> Result<Vec<u8>, Error> {
        self.conn
            .send(Header::request(command, body.len()), body)
            .await?;
        let len = self.conn.read_reply_header(max_reply).await?;
        Ok(self.conn.read_body(len as usize).await?)
    }

    /// A request whose successful reply has an empty body.
    async fn expect_empty(&mut self, req: &impl Request<Reply = ()>) -> Result<(), Error> {
        self.request_limited(req.cmd(), &req.body(), 0)
            .await
            .map(|_| ())
    }
}

fn file_ref(group: &str, filename: &str) -> FileRef {
    FileRef {
        group: group.to_string(),
        filename: filename.to_string(),
    }
}
