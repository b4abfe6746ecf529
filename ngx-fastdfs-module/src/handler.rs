//! The content handler (serve a local file, or forward) and the rewrite-phase handler of
//! the internal proxy location (pick the next storage to try).
//!
//! A request for a missing file that arrives before this worker's first storage listing
//! is parked without blocking the worker: it holds a reference on the request
//! (`r->main->count`), answers `NGX_DONE`, and a timer checks every [`WAIT_POLL`] ms
//! whether the first fetch has ended; then, or after `peers::WAIT_MAX`, the request is
//! served again from the start (with the listing, or with none: 404).

use core::ffi::c_void;
use core::ptr::null_mut;
use std::net::Ipv4Addr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fdfs_proto::fileid::FileKind;
use fdfs_proto::http::disposition::content_disposition;
use fdfs_proto::http::peers::{self, Miss};
use fdfs_proto::http::range::{flv_slice, range_count, FlvSlice, FLV_HEADER};
use fdfs_proto::http::url::forward_uri;
use fdfs_proto::http::{parse_query, FileRequest, ModConf, Query, ResponseMode, UrlError};
use fdfs_proto::token::check_token;
use ngx::core::Status;
use ngx::ffi::*;
use ngx::http::{
    HTTPStatus, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request,
};
use ngx::ngx_log_error;

use crate::conf::{MainConf, PROXY_LOCATION};
use crate::peers::{Lookup, Report};
use crate::FastdfsModule;

/// How often a parked request checks for the first listing (ms).
const WAIT_POLL: ngx_msec_t = 25;

fn status(code: HTTPStatus) -> Status {
    code.into()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn ngx_bytes(s: &ngx_str_t) -> &[u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: nginx strings point at len valid bytes.
        unsafe { core::slice::from_raw_parts(s.data, s.len) }
    }
}

/// The value of request header `name` (case-insensitive), if present.
fn header_in<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers_in_iterator()
        .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(name.as_bytes()))
        .and_then(|(_, v)| v.to_str().ok())
}

/// Local address (IPv4 only) and port of the connection the request came in on.
fn local_addr(r: *mut ngx_http_request_t) -> (Option<Ipv4Addr>, u16) {
    // SAFETY: r and its connection are live for the request.
    unsafe {
        let c = (*r).connection;
        if ngx_connection_local_sockaddr(c, null_mut(), 0) != NGX_OK as ngx_int_t {
            return (None, 0);
        }
        let sa = (*c).local_sockaddr;
        if sa.is_null() || (*sa).sa_family as i32 != libc::AF_INET {
            return (None, 0);
        }
        let sin = &*(sa as *const libc::sockaddr_in);
        (
            Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
            u16::from_be(sin.sin_port),
        )
    }
}

/// The location's content handler (`ngx_fastdfs_module;`).
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls the content handler with a live request.
    unsafe { serve(Request::from_ngx_http_request(r), false).0 }
}

/// How a found file is sent.
struct Body {
    size: i64,
    mtime: i64,
    content_type: Option<String>,
    flv: FlvSlice,
    disposition: Option<String>,
    ranges: bool,
    /// Whether nginx's open file cache may hold the descriptor. Not for appender files:
    /// they grow and shrink in place, and a cached descriptor comes with the size it had
    /// when it was opened (for up to `open_file_cache_valid`).
    cached: bool,
}

/// Serves the request; `waited`: it was parked for the first listing already (it is not
/// parked again).
unsafe fn serve(req: &mut Request, waited: bool) -> Status {
    let r: *mut ngx_http_request_t = req.into();
    let method = unsafe { (*r).method };
    if method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as ngx_uint_t == 0 {
        return status(HTTPStatus::NOT_ALLOWED);
    }
    let rc = req.discard_request_body();
    if rc != Status::NGX_OK {
        return rc;
    }
    let Some(mcf) = FastdfsModule::main_conf(req) else {
        return Status::NGX_ERROR;
    };
    let Some(conf) = mcf.conf.as_deref() else {
        return status(HTTPStatus::INTERNAL_SERVER_ERROR);
    };
    let log = req.log();
    // Borrowed from the request. A path that is not UTF-8 names no file.
    let Ok(uri) = std::str::from_utf8(ngx_bytes(unsafe { &(*r).uri })) else {
        return status(HTTPStatus::BAD_REQUEST);
    };
    let raw_args = ngx_bytes(unsafe { &(*r).args });
    let args = match std::str::from_utf8(raw_args) {
        Ok(a) => std::borrow::Cow::Borrowed(a),
        Err(_) => String::from_utf8_lossy(raw_args),
    };
    let file = match FileRequest::parse(uri, conf) {
        Ok(f) => f,
        Err(UrlError::NotDataFile) => {
            // a metadata file: served neither from here nor from another storage
            return status(HTTPStatus::NOT_FOUND);
        }
        Err(e) => {
            ngx_log_error!(NGX_LOG_INFO, log, "fastdfs: {}: {}", uri, e);
            return status(HTTPStatus::BAD_REQUEST);
        }
    };
    let query = parse_query(&args);

    if conf.http.check_token && !conf.http.disabled && !bypass(req, conf) {
        let (Some(token), Some(ts)) = (query.get("token"), query.get("ts")) else {
            return status(HTTPStatus::BAD_REQUEST);
        };
        let ts: i64 = ts.trim().parse().unwrap_or(0);
        if let Err(e) = check_token(
            file.remote,
            &conf.http.secret_key,
            token,
            ts,
            now(),
            conf.http.token_ttl,
        ) {
            ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "fastdfs: token of {} refused: {:?}",
                file.remote,
                e
            );
            return match &conf.http.token_check_fail {
                Some(path) => {
                    let ct = conf
                        .http
                        .content_type_of(&path.to_string_lossy())
                        .to_string();
                    let body = Body {
                        size: 0,
                        mtime: 0,
                        content_type: Some(ct),
                        flv: FlvSlice::Whole,
                        disposition: None,
                        ranges: false,
                        cached: true,
                    };
                    let bytes = path.as_os_str().as_encoded_bytes();
                    unsafe { send_file(req, &[bytes], body, true) }
                }
                None => status(HTTPStatus::BAD_REQUEST),
            };
        }
    }

    if let Some(path) = file.local_pieces() {
        // The Range header nginx already picked out while reading the headers.
        let range = unsafe {
            let h = (*r).headers_in.range;
            if h.is_null() {
                None
            } else {
                std::str::from_utf8(ngx_bytes(&(*h).value)).ok()
            }
        };
        if range.is_some_and(|h| !conf.http.multi_range_enabled && range_count(h) > 1) {
            return status(HTTPStatus::RANGE_NOT_SATISFIABLE);
        }
        let is_flv = conf.flv_support
            && range.is_none()
            && file
                .remote
                .rsplit_once('.')
                .is_some_and(|(_, e)| e == conf.flv_extension);
        let body = Body {
            size: 0,
            // Upstream's Last-Modified for normal files: the creation time in the file id,
            // the same on every storage of the group (so ETags agree too).
            mtime: if file.info.kind == FileKind::Normal {
                file.info.timestamp as i64
            } else {
                0
            },
            content_type: None,
            flv: if is_flv {
                FlvSlice::Slice { start: 0, end: 0 }
            } else {
                FlvSlice::Whole
            },
            disposition: query.get("filename").and_then(content_disposition),
            ranges: !is_flv,
            cached: file.info.kind != FileKind::Appender,
        };
        let rc = unsafe { send_file_with_query(req, &path, body, &query) };
        if rc != status(HTTPStatus::NOT_FOUND) {
            return rc;
        }
    }
    unsafe { on_miss(req, mcf, conf, &file, &query, waited) }
}

fn bypass(req: &Request, conf: &ModConf) -> bool {
    match &conf.bypass_header {
        Some((name, value)) => header_in(req, name).is_some_and(|v| v == value),
        None => false,
    }
}

unsafe fn send_file_with_query(
    req: &mut Request,
    path: &[&[u8]],
    body: Body,
    query: &Query,
) -> Status {
    if matches!(body.flv, FlvSlice::Slice { .. }) {
        // The slice is resolved once the size is known; until then the whole file, with
        // the file's own mtime.
        let body = Body {
            mtime: 0,
            flv: FlvSlice::Whole,
            ..body
        };
        let flv = Some((query.get("start"), query.get("end")));
        return unsafe { send_file_inner(req, path, body, false, flv) };
    }
    unsafe { send_file(req, path, body, false) }
}

unsafe fn send_file(req: &mut Request, path: &[&[u8]], body: Body, fail_file: bool) -> Status {
    unsafe { send_file_inner(req, path, body, fail_file, None) }
}

/// FLV `start` and `end` arguments.
type FlvArgs<'a> = Option<(Option<&'a str>, Option<&'a str>)>;

/// Opens `path` (through nginx's open file cache when `body.cached`) and sends it as a
/// file buffer. Returns 404 (before any header is sent) when the file does not exist.
unsafe fn send_file_inner(
    req: &mut Request,
    path: &[&[u8]],
    mut body: Body,
    fail_file: bool,
    flv: FlvArgs,
) -> Status {
    let r: *mut ngx_http_request_t = req.into();
    unsafe {
        let pool = (*r).pool;
        // The NUL-terminated name nginx opens, joined from `path`'s pieces straight
        // into the request pool.
        let len: usize = path.iter().map(|p| p.len()).sum();
        let data = ngx_pnalloc(pool, len + 1) as *mut u8;
        if data.is_null() {
            return Status::NGX_ERROR;
        }
        let mut at = 0;
        for piece in path {
            core::ptr::copy_nonoverlapping(piece.as_ptr(), data.add(at), piece.len());
            at += piece.len();
        }
        *data.add(len) = 0;
        let mut name = ngx_str_t { len, data };
        let Some(clcf) = NgxHttpCoreModule::location_conf(req) else {
            return Status::NGX_ERROR;
        };
        let mut of: ngx_open_file_info_t = core::mem::zeroed();
        of.read_ahead = clcf.read_ahead;
        of.directio = clcf.directio;
        of.valid = clcf.open_file_cache_valid;
        of.min_uses = clcf.open_file_cache_min_uses;
        of.set_errors(clcf.open_file_cache_errors as _);
        of.set_events(clcf.open_file_cache_events as _);
        let cache = if body.cached {
            clcf.open_file_cache
        } else {
            null_mut()
        };
        if ngx_open_cached_file(cache, &mut name, &mut of, pool) != NGX_OK as ngx_int_t {
            return match of.err as u32 {
                0 => status(HTTPStatus::INTERNAL_SERVER_ERROR),
                NGX_ENOENT | NGX_ENOTDIR | NGX_ENAMETOOLONG => status(HTTPStatus::NOT_FOUND),
                NGX_EACCES => status(HTTPStatus::FORBIDDEN),
                _ => status(HTTPStatus::INTERNAL_SERVER_ERROR),
            };
        }
        if of.is_file() == 0 {
            return status(HTTPStatus::NOT_FOUND);
        }
        body.size = of.size;
        if body.mtime == 0 || fail_file {
            body.mtime = of.mtime;
        }
        let (mut first, mut last) = (0i64, of.size);
        let mut prefix = false;
        if let Some((start, end)) = flv {
            match flv_slice(start, end, of.size as u64) {
                FlvSlice::Whole => {}
                FlvSlice::Invalid => return status(HTTPStatus::BAD_REQUEST),
                s @ FlvSlice::Slice { start, end } => {
                    first = start as i64;
                    last = end as i64 + 1;
                    prefix = start > 0;
                    body.flv = s;
                }
            }
        }

        (*r).headers_out.status = NGX_HTTP_OK as ngx_uint_t;
        (*r).headers_out.content_length_n = match body.flv {
            FlvSlice::Slice { .. } => body.flv.content_length(of.size as u64) as i64,
            _ => of.size,
        };
        (*r).headers_out.last_modified_time = body.mtime;
        if body.ranges {
            (*r).set_allow_ranges(1);
        }
        if ngx_http_set_etag(r) != NGX_OK as ngx_int_t {
            return Status::NGX_ERROR;
        }
        match &body.content_type {
            Some(ct) => {
                let Some(s) = ngx_str_t::from_bytes(pool, ct.as_bytes()) else {
                    return Status::NGX_ERROR;
                };
                (*r).headers_out.content_type = s;
                (*r).headers_out.content_type_len = s.len;
            }
            None => {
                if ngx_http_set_content_type(r) != NGX_OK as ngx_int_t {
                    return Status::NGX_ERROR;
                }
            }
        }
        if let Some(d) = &body.disposition {
            if req.add_header_out("Content-Disposition", d).is_none() {
                return Status::NGX_ERROR;
            }
        }
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return Status(rc);
        }

        let mut out: *mut ngx_chain_t = null_mut();
        let mut tail: *mut *mut ngx_chain_t = &mut out;
        let mut push = |b: *mut ngx_buf_t| -> bool {
            let cl = ngx_pcalloc(pool, size_of::<ngx_chain_t>()) as *mut ngx_chain_t;
            if cl.is_null() {
                return false;
            }
            (*cl).buf = b;
            *tail = cl;
            tail = &mut (*cl).next;
            true
        };
        if prefix {
            let b = ngx_pcalloc(pool, size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
            if b.is_null() {
                return Status::NGX_ERROR;
            }
            (*b).pos = FLV_HEADER.as_ptr() as *mut u8;
            (*b).last = (*b).pos.add(FLV_HEADER.len());
            (*b).set_memory(1);
            if !push(b) {
                return Status::NGX_ERROR;
            }
        }
        let b = ngx_pcalloc(pool, size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
        let f = ngx_pcalloc(pool, size_of::<ngx_file_t>()) as *mut ngx_file_t;
        if b.is_null() || f.is_null() {
            return Status::NGX_ERROR;
        }
        (*f).fd = of.fd;
        (*f).name = name;
        (*f).log = (*(*r).connection).log;
        (*f).set_directio(of.is_directio());
        (*b).file = f;
        (*b).file_pos = first;
        (*b).file_last = last;
        (*b).set_in_file((last > first) as _);
        (*b).set_last_buf(((*r).main == r) as _);
        (*b).set_last_in_chain(1);
        if !push(b) {
            return Status::NGX_ERROR;
        }
        Status(ngx_http_output_filter(r, out))
    }
}

/// Per-request forwarding state, kept in a variable slot (it survives the internal
/// redirects into the proxy location, unlike the module context).
struct ForwardState {
    candidates: Vec<Ipv4Addr>,
    next: usize,
    port: u16,
    uri: String,
}

unsafe extern "C" fn drop_state(data: *mut c_void) {
    // SAFETY: data is the Box pointer stored by on_miss.
    unsafe { drop(Box::from_raw(data as *mut ForwardState)) };
}

unsafe fn on_miss(
    req: &mut Request,
    mcf: &MainConf,
    conf: &ModConf,
    file: &FileRequest,
    query: &Query,
    waited: bool,
) -> Status {
    let r: *mut ngx_http_request_t = req.into();
    let log = req.log();
    if query.has("redirect") {
        // Already forwarded once: do not forward again (upstream answers 400 here).
        return status(HTTPStatus::NOT_FOUND);
    }
    let (local_ip, local_port) = local_addr(r);
    let is_local = |ip: Ipv4Addr| Some(ip) == local_ip || crate::peers::local_ips().contains(&ip);
    let source = peers::source_ip(&file.info);
    let source_is_local = source.is_some_and(is_local);
    let same_group = file.local.is_some();
    if peers::on_local_miss(
        same_group,
        &file.info,
        source_is_local,
        now(),
        conf.storage_sync_file_max_delay,
    ) == Miss::NotFound
    {
        return status(HTTPStatus::NOT_FOUND);
    }
    // Only storages the trackers list for the file's group: the source in the name is
    // whatever the requester wrote there.
    let created = i64::from(file.info.timestamp);
    let members = match crate::peers::group_members(file.group, created, conf) {
        Lookup::Ready(members) => members,
        Lookup::Pending if !waited => return unsafe { park(r) },
        Lookup::Pending => {
            ngx_log_error!(
                NGX_LOG_INFO,
                log,
                "fastdfs: no storage list from the trackers yet: {} not fetched",
                file.file_id()
            );
            return status(HTTPStatus::NOT_FOUND);
        }
    };
    let found = peers::candidates(source, &members, is_local);
    if let Some(s) = source.filter(|_| !found.source_listed) {
        ngx_log_error!(
            warn_first(crate::peers::source_unlisted(file.group, created, conf)),
            log,
            "fastdfs: source {} of {} is not a storage of {} as the trackers list it: not asked",
            s,
            file.file_id(),
            file.group
        );
    }
    let candidates = found.ips;
    if candidates.is_empty() {
        ngx_log_error!(
            warn_first(crate::peers::report(Report::NoCandidate, file.group, conf)),
            log,
            "fastdfs: no storage to fetch {} from",
            file.file_id()
        );
        return status(HTTPStatus::NOT_FOUND);
    }
    let port = if conf.storage_http_port != 0 {
        conf.storage_http_port
    } else {
        local_port
    };
    let unparsed = String::from_utf8_lossy(ngx_bytes(unsafe { &(*r).unparsed_uri })).into_owned();
    let uri = forward_uri(&unparsed);

    if conf.response_mode == ResponseMode::Redirect {
        let host = if port == 80 {
            candidates[0].to_string()
        } else {
            format!("{}:{}", candidates[0], port)
        };
        let location = format!("http://{host}{uri}");
        unsafe {
            let Some(loc) = ngx_str_t::from_bytes((*r).pool, location.as_bytes()) else {
                return Status::NGX_ERROR;
            };
            let h = ngx_list_push(&mut (*r).headers_out.headers) as *mut ngx_table_elt_t;
            if h.is_null() {
                return Status::NGX_ERROR;
            }
            // zeroed first: `next` exists only from nginx 1.23 on
            core::ptr::write_bytes(h, 0, 1);
            (*h).hash = 1;
            (*h).key = ngx::ngx_string!("Location");
            (*h).value = loc;
            (*r).headers_out.location = h;
        }
        return status(HTTPStatus::MOVED_TEMPORARILY);
    }

    // proxy: hand the candidates to the internal proxy location
    unsafe {
        let state = Box::into_raw(Box::new(ForwardState {
            candidates,
            next: 0,
            port,
            uri,
        }));
        let cln = ngx_pool_cleanup_add((*r).pool, 0);
        if cln.is_null() {
            drop(Box::from_raw(state));
            return Status::NGX_ERROR;
        }
        (*cln).handler = Some(drop_state);
        (*cln).data = state as *mut c_void;
        let v = &mut *(*r).variables.add(mcf.state_idx);
        v.data = state as *mut u8;
        v.set_len(0);
        v.set_valid(1);
        v.set_no_cacheable(0);
        v.set_not_found(0);
    }
    req.internal_redirect(PROXY_LOCATION)
}

/// Rewrite-phase handler (only acts in the internal proxy location).
pub unsafe extern "C" fn proxy_rewrite_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    unsafe { next_candidate(Request::from_ngx_http_request(r)).0 }
}

/// Rewrite phase of the proxy location: point `$ngx_fastdfs_proxy_target` at the next
/// storage, or end with 502 when every candidate failed.
unsafe fn next_candidate(req: &mut Request) -> Status {
    match FastdfsModule::location_conf(req) {
        Some(lcf) if lcf.proxy_location => {}
        _ => return Status::NGX_DECLINED,
    }
    let r: *mut ngx_http_request_t = req.into();
    let Some(mcf) = FastdfsModule::main_conf(req) else {
        return Status::NGX_ERROR;
    };
    unsafe {
        let sv = &*(*r).variables.add(mcf.state_idx);
        if sv.valid() == 0 || sv.data.is_null() {
            return status(HTTPStatus::NOT_FOUND);
        }
        let state = &mut *(sv.data as *mut ForwardState);
        let Some(ip) = state.candidates.get(state.next).copied() else {
            (*r).set_error_page(1);
            return status(HTTPStatus::BAD_GATEWAY);
        };
        state.next += 1;
        if state.next > 1 {
            ngx_log_error!(
                NGX_LOG_WARN,
                req.log(),
                "fastdfs: trying storage {} for {}",
                ip,
                state.uri
            );
        }
        let target = format!("{}:{}{}", ip, state.port, state.uri);
        let Some(t) = ngx_str_t::from_bytes((*r).pool, target.as_bytes()) else {
            return Status::NGX_ERROR;
        };
        let v = &mut *(*r).variables.add(mcf.target_idx);
        v.data = t.data;
        v.set_len(t.len as _);
        v.set_valid(1);
        v.set_no_cacheable(0);
        v.set_not_found(0);
    }
    Status::NGX_DECLINED
}

/// A request parked until this worker's first listing: the timer event that polls for it.
#[repr(C)]
struct Parked {
    ev: ngx_event_t,
    until: Instant,
}

unsafe extern "C" fn unpark_on_free(data: *mut c_void) {
    // SAFETY: data is the Parked of a request whose pool is being destroyed.
    unsafe {
        let ev = &mut (*(data as *mut Parked)).ev;
        if ev.timer_set() != 0 {
            ngx_del_timer(ev);
        }
    }
}

/// Parks the request (see the module comment): nothing blocks, the worker serves its
/// other connections meanwhile.
unsafe fn park(r: *mut ngx_http_request_t) -> Status {
    unsafe {
        let pool = (*r).pool;
        let p = ngx_pcalloc(pool, size_of::<Parked>()) as *mut Parked;
        if p.is_null() {
            return Status::NGX_ERROR;
        }
        let cln = ngx_pool_cleanup_add(pool, 0);
        if cln.is_null() {
            return Status::NGX_ERROR;
        }
        core::ptr::addr_of_mut!((*p).until).write(Instant::now() + crate::peers::WAIT_MAX);
        (*cln).handler = Some(unpark_on_free);
        (*cln).data = p as *mut c_void;
        let ev = &mut (*p).ev;
        ev.handler = Some(parked_tick);
        ev.data = r as *mut c_void;
        ev.log = (*(*r).connection).log;
        ngx_add_timer(ev, WAIT_POLL);
        let main = &mut *(*r).main;
        main.set_count(main.count() + 1);
    }
    Status::NGX_DONE
}

unsafe extern "C" fn parked_tick(ev: *mut ngx_event_t) {
    // SAFETY: ev is the first field of a Parked in the pool of the live request ev.data.
    unsafe {
        let p = ev as *mut Parked;
        if !crate::peers::first_fetch_done() && Instant::now() < (*p).until {
            ngx_add_timer(ev, WAIT_POLL);
            return;
        }
        let r = (*ev).data as *mut ngx_http_request_t;
        let c = (*r).connection;
        let rc = serve(Request::from_ngx_http_request(r), true);
        // drops the reference park took (and ends the request unless rc continues it)
        ngx_http_finalize_request(r, rc.0);
        ngx_http_run_posted_requests(c);
    }
}

/// The log level of a report that is a warning the first time in an interval and
/// information after that (so a flood of bad requests does not flood the log).
fn warn_first(first: bool) -> u32 {
    if first {
        NGX_LOG_WARN
    } else {
        NGX_LOG_INFO
    }
}
