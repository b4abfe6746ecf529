//! One TCP connection speaking the FastDFS framing. Every byte a daemon or a client tool
//! puts on the wire or takes off it goes through [`Connection`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fdfs_proto::header::HEADER_LEN;
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

pub struct Connection {
    stream: TcpStream,
    timeout: Duration,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "network timeout")
}

impl Connection {
    /// Wraps an accepted or connected stream; every read and write must finish within
    /// `timeout` (the config's `network_timeout`).
    pub fn new(stream: TcpStream, timeout: Duration) -> Self {
        let _ = stream.set_nodelay(true);
        Connection { stream, timeout }
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
        self.stream.local_addr()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads the next header; `None` when the peer closed the connection cleanly between
    /// requests. `idle` bounds the wait for the first byte (servers allow idle keep-alive
    /// connections to wait longer than a request may take).
    pub async fn read_header(&mut self, idle: Duration) -> io::Result<Option<Header>> {
        let mut raw = [0u8; HEADER_LEN];
        let first = tokio::time::timeout(idle, self.stream.read(&mut raw))
            .await
            .map_err(|_| timed_out())??;
        if first == 0 {
            return Ok(None);
        }
        if first < HEADER_LEN {
            self.read_exact(&mut raw[first..]).await?;
        }
        Ok(Some(Header::decode(&raw)))
    }

    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        tokio::time::timeout(self.timeout, self.stream.read_exact(buf))
            .await
            .map_err(|_| timed_out())??;
        Ok(())
    }

    /// Reads up to `buf.len()` bytes (at least one); 0 means the peer closed.
    pub async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::time::timeout(self.timeout, self.stream.read(buf))
            .await
            .map_err(|_| timed_out())?
    }

    pub async fn read_body(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut body = vec![0u8; len];
        self.read_exact(&mut body).await?;
        Ok(body)
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        tokio::time::timeout(self.timeout, self.stream.write_all(data))
            .await
            .map_err(|_| timed_out())?
    }

    /// Sends a header and a body in one write.
    pub async fn send(&mut self, header: Header, body: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(body);
        self.write_all(&out).await
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

    /// Politely ends a session (QUIT gets no reply).
    pub async fn quit(mut self) {
        let _ = self.send(Header::request(cmd::QUIT, 0), &[]).await;
        let _ = self.stream.shutdown().await;
    }
}
