//! One TCP connection speaking the FastDFS framing. Every byte a daemon or a client tool
//! puts on the wire or takes off it goes through [`Connection`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fdfs_proto::header::HEADER_LEN;
use fdfs_proto::msg::{Reply, Request};
use fdfs_proto::{cmd, errno, Header, ProtoError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// What can go wrong talking to a FastDFS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server answered with a non-zero status (an errno).
    #[error("server answered errno {0} ({desc})", desc = errno::describe(*.0))]
    Status(u8),
    #[error("malformed reply: {0}")]
    Proto(#[from] ProtoError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The errno this error stands for, as the CLI tools report it.
    pub fn errno(&self) -> u8 {
        match self {
            Error::Io(e) => errno::from_io(e),
            Error::Status(s) => *s,
            Error::Proto(_) => errno::EINVAL,
            Error::Other(_) => errno::EIO,
        }
    }
}

/// A random nonce for the cluster secret handshake.
pub fn fresh_nonce() -> fdfs_proto::cluster_auth::Nonce {
    rand::random()
}

/// Bytes read from the socket at once when a read is smaller than this: one `recv`
/// then serves many small requests or replies (pipelined peers send them back to back).
const READ_BUF: usize = 64 * 1024;

pub struct Connection {
    stream: TcpStream,
    timeout: Duration,
    /// Input read ahead: `rbuf[rpos..]` is not consumed yet. Its capacity (allocated
    /// at the first read, never zeroed) bounds one read.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Output queued by [`Connection::queue_reply`], written before anything else is
    /// written and before the connection waits for input.
    wbuf: Vec<u8>,
    /// Bytes consumed since the last header was read: how much of a request's body its
    /// handler has read, so a refused request's rest can be skipped.
    body_read: u64,
    /// Our end's address, asked of the kernel once (a storage needs it for every upload).
    local: std::sync::OnceLock<SocketAddr>,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "network timeout")
}

impl Connection {
    /// Wraps an accepted or connected stream; every read and write must finish within
    /// `timeout` (the config's `network_timeout`).
    pub fn new(stream: TcpStream, timeout: Duration) -> Self {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            timeout,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            body_read: 0,
            local: std::sync::OnceLock::new(),
        }
    }

    /// Connects to `addr`, optionally from `bind` (storages bind their outgoing
    /// connections so the tracker sees their own address).
    pub async fn connect(
        addr: SocketAddr,
        bind: Option<IpAddr>,
        connect_timeout: Duration,
        network_timeout: Duration,
    ) -> io::Result<Self> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = bind {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = tokio::time::timeout(connect_timeout, socket.connect(addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                )
            })??;
        Ok(Connection::new(stream, network_timeout))
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        if let Some(a) = self.local.get() {
            return Ok(*a);
        }
        let a = self.stream.local_addr()?;
        Ok(*self.local.get_or_init(|| a))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes how long a read or a write may wait from now on (a peer that may think
    /// for long before it answers).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The raw stream. Input already read ahead and queued output are not in it: use
    /// it only on a connection that has done neither.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Input received but not consumed yet (whole requests a pipelining peer sent).
    pub fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    /// Bytes of output queued and not written yet.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Sends the acknowledgement of what was received now instead of delaying it. A
    /// peer that writes a request in pieces with Nagle's algorithm on (C FastDFS does)
    /// holds the next piece until the last one is acknowledged: without this, each
    /// piece would wait for the delayed ACK (about 40 ms on Linux).
    pub fn ack_now(&self) {
        let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(true);
    }

    /// Bytes read since the last header: the part of the current request's body that
    /// has been consumed.
    pub fn body_read(&self) -> u64 {
        self.body_read
    }

    /// Copies buffered input into `buf`; returns how many bytes.
    fn take_buffered(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.rbuf.len() - self.rpos).min(buf.len());
        buf[..n].copy_from_slice(&self.rbuf[self.rpos..self.rpos + n]);
        self.rpos += n;
        self.body_read += n as u64;
        n
    }

    /// One read from the socket into `buf`, or into the read-ahead buffer when `buf` is
    /// small (then served from it). Queued output goes first, so a peer waiting for
    /// it never deadlocks with us. Cancel safe: nothing is consumed until it returns.
    async fn read_socket(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.wbuf.is_empty() {
            self.flush().await?;
        }
        if buf.len() >= READ_BUF {
            let n = self.stream.read(buf).await?;
            self.body_read += n as u64;
            return Ok(n);
        }
        self.rbuf.clear();
        self.rpos = 0;
        if self.rbuf.capacity() < READ_BUF {
            self.rbuf.reserve_exact(READ_BUF);
        }
        self.stream.read_buf(&mut self.rbuf).await?;
        Ok(self.take_buffered(buf))
    }

    /// Reads up to `buf.len()` bytes, waiting at most `limit` for them.
    async fn read_within(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.rpos < self.rbuf.len() {
            return Ok(self.take_buffered(buf));
        }
        tokio::time::timeout(limit, self.read_socket(buf))
            .await
            .map_err(|_| timed_out())?
    }

    /// Reads the next header; `None` when the peer closed the connection cleanly between
    /// requests. `idle` bounds the wait for the first byte (servers allow idle keep-alive
    /// connections to wait longer than a request may take).
    pub async fn read_header(&mut self, idle: Duration) -> io::Result<Option<Header>> {
        let mut raw = [0u8; HEADER_LEN];
        if self.rbuf.len() - self.rpos >= HEADER_LEN {
            self.take_buffered(&mut raw);
        } else {
            let first = self.read_within(&mut raw, idle).await?;
            if first == 0 {
                return Ok(None);
            }
            if first < HEADER_LEN {
                self.read_exact(&mut raw[first..]).await?;
            }
        }
        self.body_read = 0;
        Ok(Some(Header::decode(&raw)))
    }

    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut done = self.take_buffered(buf);
        if done == buf.len() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        while done < buf.len() {
            if done > 0 {
                // Part of it came: the rest may be held back until that is acknowledged.
                self.ack_now();
            }
            let n = tokio::time::timeout_at(deadline, self.read_socket(&mut buf[done..]))
                .await
                .map_err(|_| timed_out())??;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes (at least one); 0 means the peer closed.
    pub async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_within(buf, self.timeout).await
    }

    pub async fn read_body(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut body = vec![0u8; len];
        self.read_exact(&mut body).await?;
        Ok(body)
    }

    /// Writes `data` (after any queued output).
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            if data.len() <= READ_BUF {
                self.wbuf.extend_from_slice(data);
                return self.flush().await;
            }
            self.flush().await?;
        }
        tokio::time::timeout(self.timeout, self.stream.write_all(data))
            .await
            .map_err(|_| timed_out())?
    }

    /// Writes the queued output.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = tokio::time::timeout(self.timeout, self.stream.write_all(&self.wbuf))
            .await
            .map_err(|_| timed_out());
        self.wbuf.clear();
        r?
    }

    /// Sends a header and a body in one write.
    pub async fn send(&mut self, header: Header, body: &[u8]) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.wbuf.extend_from_slice(&header.encode());
            self.wbuf.extend_from_slice(body);
            return self.flush().await;
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(body);
        self.write_all(&out).await
    }

    /// Queues a reply (as [`Connection::reply`]) without writing it: it goes out with the
    /// next write, at [`Connection::flush`], or before the connection waits for input.
    /// Lets a server answer a burst of pipelined requests with one write.
    pub fn queue_reply(&mut self, status: u8, body: &[u8]) {
        let body = if status == 0 { body } else { &[] };
        self.wbuf
            .extend_from_slice(&Header::response(status, body.len() as u64).encode());
        self.wbuf.extend_from_slice(body);
    }

    /// Sends a reply: status 0 with `body`, or an errno with an empty body.
    pub async fn reply(&mut self, status: u8, body: &[u8]) -> io::Result<()> {
        let body = if status == 0 { body } else { &[] };
        self.send(Header::response(status, body.len() as u64), body)
            .await
    }

    /// Reads a reply header and checks it; returns the body length.
    pub async fn read_reply_header(&mut self, max_body: u64) -> Result<u64, Error> {
        let header = self.read_header(self.timeout).await?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection")
        })?;
        if header.cmd != cmd::RESP {
            return Err(Error::Other(format!(
                "reply carries command {} instead of {}",
                header.cmd,
                cmd::RESP
            )));
        }
        if header.status != 0 {
            // Servers send no body with an error, but skip one if present.
            if let Ok(n) = header.body_len(1 << 16) {
                let _ = self.read_body(n as usize).await;
            }
            return Err(Error::Status(header.status));
        }
        Ok(header.body_len(max_body)?)
    }

    /// Sends a typed request and decodes its reply (an errno reply is
    /// [`Error::Status`]).
    pub async fn call<R: Request>(&mut self, req: &R) -> Result<R::Reply, Error> {
        let body = self.request(req.cmd(), &req.body()).await?;
        Ok(R::Reply::from_body(&body)?)
    }

    /// Sends a request and reads its whole reply body.
    pub async fn request(&mut self, cmd: u8, body: &[u8]) -> Result<Vec<u8>, Error> {
        self.request_with_status(cmd, 0, body).await
    }

    /// As [`Connection::request`], with the header status byte used as flags.
    pub async fn request_with_status(
        &mut self,
        cmd: u8,
        status: u8,
        body: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let header = Header {
            pkg_len: body.len() as i64,
            cmd,
            status,
        };
        self.send(header, body).await?;
        let len = self.read_reply_header(16 << 20).await?;
        Ok(self.read_body(len as usize).await?)
    }

    /// Proves `secret` to the server and checks that the server knows it too (the
    /// `cluster_secret` handshake of [`fdfs_proto::cluster_auth`]). Must come before any
    /// other request on the connection.
    pub async fn prove_secret(&mut self, secret: &[u8]) -> Result<(), Error> {
        use fdfs_proto::cluster_auth as auth;
        let a = fresh_nonce();
        let challenge = self
            .request_with_status(cmd::CLUSTER_AUTH, auth::HELLO, &a)
            .await
            .map_err(|e| match e {
                Error::Status(errno::EINVAL) => Error::Other(
                    "the server does not use a cluster_secret (it refused the handshake)".into(),
                ),
                other => other,
            })?;
        let (b, proof) = auth::split_challenge(&challenge)
            .ok_or_else(|| Error::Other("malformed cluster_secret challenge".into()))?;
        if !auth::check_responder(secret, &a, &b, proof) {
            return Err(Error::Other(
                "the server does not know our cluster_secret".into(),
            ));
        }
        let mine = auth::initiator_proof(secret, &a, &b);
        self.request_with_status(cmd::CLUSTER_AUTH, auth::PROOF, &mine)
            .await
            .map_err(|e| match e {
                Error::Status(errno::EACCES) => {
                    Error::Other("the server refused our cluster_secret".into())
                }
                other => other,
            })?;
        Ok(())
    }

    /// Politely ends a session (QUIT gets no reply).
    pub async fn quit(mut self) {
        let _ = self.send(Header::request(cmd::QUIT, 0), &[]).await;
        let _ = self.stream.shutdown().await;
    }
}
