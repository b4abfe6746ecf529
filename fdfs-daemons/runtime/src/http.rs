//! The daemons' small HTTP side: `/metrics`, `/healthz`, `/readyz` and, on trackers, the
//! console. It is off unless the config names an address (`metrics_listen`), answers
//! only GET and HEAD, and shows nothing to an address outside the daemon's
//! `allow_hosts` (403, empty body).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fdfs_proto::allow_hosts::AllowHosts;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::server::Shutdown;

/// The content type of Prometheus's text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a page handler answers.
pub struct Page {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Page {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Page {
        Page {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Page {
        Page {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }

    pub fn not_found() -> Page {
        Page::text(404, "not found\n")
    }
}

pub type PageFuture = Pin<Box<dyn Future<Output = Page> + Send>>;

/// Answers one path (without the query string; the query is passed apart).
pub type Handler = Arc<dyn Fn(String, String) -> PageFuture + Send + Sync>;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection is closed after this long (the client opens another).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Connections served at once; more wait in the listen backlog (scrapers and consoles
/// are few, and none of them may use up the daemon's file descriptors).
const MAX_CONNECTIONS: usize = 64;

/// Serves `handler` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    allow: Arc<AllowHosts>,
    handler: Handler,
    mut shutdown: Shutdown,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("never closed"),
            _ = shutdown.recv() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => return,
        };
        let handler = handler.clone();
        let allowed = allow.allows(peer.ip());
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| answer(req, peer, allowed, handler.clone()));
            // Outsiders get their 403 and the connection ends.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(allowed)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) => debug!("http {peer}: {e}"),
                Ok(Ok(())) => {}
                Err(_) => debug!("http {peer}: connection closed after {CONNECTION_LIFETIME:?}"),
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    peer: SocketAddr,
    allowed: bool,
    handler: Handler,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let page = if !allowed {
        debug!("http {peer}: not in allow_hosts");
        Page {
            status: 403,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
        }
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        Page::text(405, "only GET and HEAD\n")
    } else {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        handler(path, query).await
    };
    let head = req.method() == Method::HEAD;
    let mut resp = Response::new(Full::new(if head {
        Bytes::new()
    } else {
        Bytes::from(page.body)
    }));
    *resp.status_mut() = StatusCode::from_u16(page.status).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(page.content_type));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Binds `addr` for [`serve`], with a message naming the key when that fails.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("metrics_listen = {addr}: cannot bind: {e}"),
        )
    })
}
