//! The content handler (serve a local file, or forward) and the rewrite-phase handler of
//! the internal proxy location (pick the next storage to try).
//!
//! What to answer is decided by `ngx_fastdfs_serve` from what the request says; this file
//! reads the request and carries the decision out through [`HttpRequest`].
//!
//! A request for a missing file that arrives before this worker's first storage listing
//! is parked (see `park.rs`): a timer checks every [`WAIT_POLL`] ms whether the first
//! fetch has ended; then, or after `peers::WAIT_MAX`, the request is served again from
//! the start (with the listing, or with none: 404).

use std::time::{SystemTime, UNIX_EPOCH};

use fdfs_proto::http::range::FLV_HEADER;
use fdfs_proto::http::{FileRequest, ModConf, Query};
use fdfs_proto::trunk::SLOT_HEADER_LEN;
use ngx::core::Status;
use ngx::ffi::*;
use ngx::http::{HTTPStatus, HttpModuleLocationConf, HttpModuleMainConf};
use ngx::ngx_log_error;
use ngx_fastdfs_serve::{
    decide, on_miss, Action, Arrival, Forward, ForwardState, Incoming, Level, Note, SendFile,
    Served, TrunkSlot,
};

use crate::conf::{MainConf, PROXY_LOCATION};
use crate::metrics;
use crate::park::park;
use crate::peers::Listing;
use crate::request::{Head, HttpRequest, OpenFile};
use crate::FastdfsModule;

/// How often a parked request checks for the first listing (ms).
const WAIT_POLL: ngx_msec_t = 25;

/// Sent in front of an FLV slice that does not start at 0. A static: nginx sends the
/// buffer after the handler has returned.
static FLV_PREFIX: [u8; FLV_HEADER.len()] = FLV_HEADER;

fn status(code: u16) -> Status {
    HTTPStatus(code as ngx_uint_t).into()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn log_note(log: *mut ngx_log_t, note: &Note) {
    let level = match note.level() {
        Level::Warn => NGX_LOG_WARN,
        Level::Info => NGX_LOG_INFO,
    };
    ngx_log_error!(level, log, "{}", note);
}

/// The location's content handler (`ngx_fastdfs_module;`).
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls the content handler with a live request.
    let mut req = unsafe { HttpRequest::from_raw(r) };
    serve(&mut req, false).0
}

/// Serves a request that was parked for the first listing (it is not parked again).
fn serve_after_wait(req: &mut HttpRequest<'_>) -> Status {
    serve(req, true)
}

/// Serves the request; `waited`: it was parked for the first listing already.
fn serve(req: &mut HttpRequest<'_>, waited: bool) -> Status {
    let Some(mcf) = FastdfsModule::main_conf(req.ngx()) else {
        return Status::NGX_ERROR;
    };
    // Counted when nginx logs the request, with its final status; refined below.
    metrics::mark(req, mcf, Served::None);
    if !req.is_get_or_head() {
        return HTTPStatus::NOT_ALLOWED.into();
    }
    let rc = req.discard_body();
    if rc != Status::NGX_OK {
        return rc;
    }
    let Some(conf) = mcf.conf.as_deref() else {
        return HTTPStatus::INTERNAL_SERVER_ERROR.into();
    };
    let incoming = Incoming {
        uri: req.uri(),
        args: req.args(),
        range: req.range(),
        bypass: conf
            .bypass_header
            .as_ref()
            .and_then(|(name, _)| req.header_in(name)),
    };
    let decision = decide(conf, &incoming, now());
    if !waited {
        // a request served again after waiting was counted the first time
        let token = match &decision {
            Ok(found) => found.token,
            Err(refusal) => refusal.token,
        };
        metrics::token(mcf, token);
    }
    let found = match decision {
        Ok(found) => found,
        Err(refusal) => {
            if let Some(note) = &refusal.note {
                log_note(req.log(), note);
            }
            return status(refusal.status);
        }
    };
    if let Some(note) = &found.note {
        log_note(req.log(), note);
    }
    metrics::mark(req, mcf, found.action.served());
    match &found.action {
        Action::TokenFailFile { path, send } => return send_file(req, &[*path], send),
        Action::Local { path, send } => {
            let rc = send_file(req, path, send);
            if rc != HTTPStatus::NOT_FOUND.into() {
                return rc;
            }
        }
        Action::Slot {
            path,
            trunk_file,
            slot,
            send,
        } => {
            let rc = send_slot(req, path, trunk_file, slot, send);
            if rc != HTTPStatus::NOT_FOUND.into() {
                return rc;
            }
        }
        Action::Elsewhere => {}
    }
    forward(req, mcf, conf, &found.file, &found.query, waited)
}

/// Opens `path` (through nginx's open file cache when `send.cached`) and sends it as a
/// file buffer. Answers 404 (before any header is sent) when the file does not exist.
fn send_file(req: &mut HttpRequest<'_>, path: &[&[u8]], send: &SendFile) -> Status {
    let file = match req.open_file(path, send.cached) {
        Ok(file) => file,
        Err(rc) => return rc,
    };
    let (size, mtime) = (file.size, file.mtime);
    send_content(req, &file, 0, size, mtime, send)
}

/// Sends a file a C storage packed into a trunk file, from its slot: with `sendfile`
/// at the slot's offset, where the C module copies it through a buffer. 404 (before any
/// header is sent) when the trunk file is missing or the slot no longer holds the file.
fn send_slot(
    req: &mut HttpRequest<'_>,
    path: &[&[u8]; 3],
    trunk_file: &str,
    slot: &TrunkSlot,
    send: &SendFile,
) -> Status {
    let pieces = [path[0], path[1], path[2], trunk_file.as_bytes()];
    let file = match req.open_file(&pieces, send.cached) {
        Ok(file) => file,
        Err(rc) => return rc,
    };
    let mut header = [0u8; SLOT_HEADER_LEN];
    if !file.read_exact_at(&mut header, slot.offset) {
        return HTTPStatus::NOT_FOUND.into();
    }
    let Some((start, size, mtime)) = slot.check(&header) else {
        return HTTPStatus::NOT_FOUND.into();
    };
    send_content(req, &file, start, size, mtime, send)
}

/// Sends `size` bytes of `file` from `start` as the file's content.
fn send_content(
    req: &mut HttpRequest<'_>,
    file: &OpenFile,
    start: i64,
    size: i64,
    mtime: i64,
    send: &SendFile,
) -> Status {
    let Ok(reply) = send.reply(size, mtime) else {
        return HTTPStatus::BAD_REQUEST.into();
    };
    let head = Head {
        content_length: reply.content_length,
        last_modified: reply.last_modified,
        allow_ranges: reply.allow_ranges,
        content_type: send.content_type.as_deref(),
        disposition: send.disposition.as_deref(),
    };
    if let Err(rc) = req.send_head(&head) {
        return rc;
    }
    let prefix = reply.flv_header.then_some(&FLV_PREFIX[..]);
    let bytes = start + reply.bytes.start..start + reply.bytes.end;
    req.send_file_body(prefix, file, bytes)
}

/// A file that is not here: 404, wait for the first listing, 302, or the proxy location.
fn forward(
    req: &mut HttpRequest<'_>,
    mcf: &MainConf,
    conf: &ModConf,
    file: &FileRequest,
    query: &Query,
    waited: bool,
) -> Status {
    let (local_addr, local_port) = req.local_addr();
    let arrival = Arrival {
        local_addr,
        local_port,
        unparsed_uri: req.unparsed_uri(),
        waited,
    };
    let (forward, notes) = on_miss(conf, file, query, &arrival, &Listing, now());
    for note in &notes {
        log_note(req.log(), note);
    }
    if let Some(served) = forward.served() {
        metrics::mark(req, mcf, served);
    }
    match forward {
        Forward::NotFound => HTTPStatus::NOT_FOUND.into(),
        Forward::Wait => park(
            req,
            WAIT_POLL,
            crate::peers::WAIT_MAX,
            crate::peers::first_fetch_done,
            serve_after_wait,
        ),
        Forward::Redirect { location } => req.redirect(&location),
        Forward::Proxy(state) => {
            // The state goes in a variable slot: it survives the internal redirect into
            // the proxy location, unlike the module context.
            if req.keep_in_variable(mcf.state_idx, state).is_err() {
                return Status::NGX_ERROR;
            }
            req.internal_redirect(PROXY_LOCATION)
        }
    }
}

/// Rewrite-phase handler (only acts in the internal proxy location).
pub unsafe extern "C" fn proxy_rewrite_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let mut req = unsafe { HttpRequest::from_raw(r) };
    next_candidate(&mut req).0
}

/// Rewrite phase of the proxy location: point `$ngx_fastdfs_proxy_target` at the next
/// storage, or end with 502 when every candidate failed.
fn next_candidate(req: &mut HttpRequest<'_>) -> Status {
    match FastdfsModule::location_conf(req.ngx()) {
        Some(lcf) if lcf.proxy_location => {}
        _ => return Status::NGX_DECLINED,
    }
    let Some(mcf) = FastdfsModule::main_conf(req.ngx()) else {
        return Status::NGX_ERROR;
    };
    let log = req.log();
    // SAFETY: only `forward` fills the state slot, with keep_in_variable::<ForwardState>.
    let Some(state) = (unsafe { req.kept_in_variable::<ForwardState>(mcf.state_idx) }) else {
        return HTTPStatus::NOT_FOUND.into();
    };
    let Some(next) = state.next_target() else {
        req.set_error_page();
        return HTTPStatus::BAD_GATEWAY.into();
    };
    if let Some(note) = &next.note {
        log_note(log, note);
    }
    let target = next.target;
    if req.set_variable(mcf.target_idx, &target).is_err() {
        return Status::NGX_ERROR;
    }
    Status::NGX_DECLINED
}
