//! A thin safe layer over the `ngx_http_request_t` nginx hands the module's handlers:
//! what they read from a request (URI, arguments, headers, the connection's address) and
//! what they do with it (send a file through sendfile, redirect, hand over to the proxy
//! location, keep state in a variable slot). Each raw nginx call the handlers need sits
//! here, in a short `unsafe` block that names what it relies on.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::Range;
use core::ptr::{null_mut, NonNull};
use std::net::Ipv4Addr;

use ngx::core::{Pool, Status};
use ngx::ffi::*;
use ngx::http::{
    list_iterator, HTTPStatus, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule,
    Request,
};

/// A request nginx handed to one of the module's handlers, for the length of that call
/// (`'r`). The request's strings (URI, arguments, header values) and its pool stay where
/// they are until nginx finalizes the request, after `'r`: the accessors below hand out
/// slices that live for `'r`, so that they can be held across the calls that answer.
pub struct HttpRequest<'r> {
    raw: NonNull<ngx_http_request_t>,
    _request: PhantomData<&'r mut ngx_http_request_t>,
}

/// nginx's plain C structs the module allocates zeroed, as nginx does with `ngx_pcalloc`.
///
/// # Safety
///
/// All-zero bytes are a valid value of the type.
unsafe trait Zeroed {}
// SAFETY: integers, raw pointers, bitfields and `Option`s of function pointers only.
unsafe impl Zeroed for ngx_buf_t {}
// SAFETY: as above.
unsafe impl Zeroed for ngx_file_t {}
// SAFETY: as above.
unsafe impl Zeroed for ngx_chain_t {}

/// A file opened for a response (see [`HttpRequest::open_file`]). The descriptor is the
/// open file cache's, or the request pool's to close.
pub struct OpenFile {
    fd: ngx_fd_t,
    /// The NUL-terminated path, in the request pool.
    name: ngx_str_t,
    directio: u32,
    pub size: i64,
    pub mtime: i64,
}

impl OpenFile {
    /// Reads exactly `buf.len()` bytes at `offset`; false on any failure or a short read.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> bool {
        let Ok(offset) = libc::off_t::try_from(offset) else {
            return false;
        };
        // SAFETY: fd is open for the request's lifetime (its pool closes it) and buf is a
        // valid, writable slice of buf.len() bytes.
        let n = unsafe { libc::pread(self.fd, buf.as_mut_ptr().cast(), buf.len(), offset) };
        n >= 0 && n as usize == buf.len()
    }
}

/// The headers of a 200 response with a file.
pub struct Head<'a> {
    pub content_length: i64,
    pub last_modified: i64,
    /// Let nginx's range filter answer a `Range` header.
    pub allow_ranges: bool,
    /// `None`: nginx's `types` by the URI's extension.
    pub content_type: Option<&'a str>,
    pub disposition: Option<&'a str>,
}

impl<'r> HttpRequest<'r> {
    /// # Safety
    ///
    /// `r` points at a live request that nginx does not finalize during `'r`, and nothing
    /// else uses it meanwhile (nginx runs one handler of a request at a time).
    pub unsafe fn from_raw(r: *mut ngx_http_request_t) -> Self {
        HttpRequest {
            // SAFETY: by the caller, r points at a live request (so it is not null).
            raw: unsafe { NonNull::new_unchecked(r) },
            _request: PhantomData,
        }
    }

    fn get(&self) -> &ngx_http_request_t {
        // SAFETY: from_raw's contract: live and not used elsewhere during 'r.
        unsafe { self.raw.as_ref() }
    }

    fn get_mut(&mut self) -> &mut ngx_http_request_t {
        // SAFETY: as in get; `&mut self` makes this the only reference made here.
        unsafe { self.raw.as_mut() }
    }

    /// ngx-rust's view of the request, for its own safe methods and conf lookups.
    pub fn ngx(&self) -> &Request {
        // SAFETY: Request is a repr(transparent) wrapper of a live ngx_http_request_t.
        unsafe { &*self.raw.as_ptr().cast::<Request>() }
    }

    fn ngx_mut(&mut self) -> &mut Request {
        // SAFETY: as in ngx; `&mut self` makes this the only reference made here.
        unsafe { Request::from_ngx_http_request(self.raw.as_ptr()) }
    }

    pub fn as_ptr(&self) -> *mut ngx_http_request_t {
        self.raw.as_ptr()
    }

    pub fn log(&self) -> *mut ngx_log_t {
        self.ngx().log()
    }

    pub fn connection(&self) -> *mut ngx_connection_t {
        self.get().connection
    }

    fn pool(&self) -> Pool {
        self.ngx().pool()
    }

    /// The bytes of one of the request's strings.
    ///
    /// # Safety
    ///
    /// `s` is one of this request's strings: `len` bytes at `data`, in its pool or header
    /// buffers, which nginx keeps unchanged until the request is finalized.
    unsafe fn bytes(s: ngx_str_t) -> &'r [u8] {
        if s.len == 0 || s.data.is_null() {
            return &[];
        }
        // SAFETY: by the caller; finalizing comes after 'r.
        unsafe { core::slice::from_raw_parts(s.data, s.len) }
    }

    pub fn is_get_or_head(&self) -> bool {
        self.get().method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as ngx_uint_t != 0
    }

    pub fn discard_body(&mut self) -> Status {
        self.ngx_mut().discard_request_body()
    }

    /// The decoded path (`r->uri`).
    pub fn uri(&self) -> &'r [u8] {
        // SAFETY: r->uri is one of the request's strings.
        unsafe { Self::bytes(self.get().uri) }
    }

    /// The raw query string (`r->args`).
    pub fn args(&self) -> &'r [u8] {
        // SAFETY: r->args is one of the request's strings.
        unsafe { Self::bytes(self.get().args) }
    }

    /// The request URI as the client sent it (`r->unparsed_uri`).
    pub fn unparsed_uri(&self) -> &'r [u8] {
        // SAFETY: r->unparsed_uri is one of the request's strings.
        unsafe { Self::bytes(self.get().unparsed_uri) }
    }

    /// The value of the first request header called `name` (case-insensitive), if it is
    /// UTF-8.
    pub fn header_in(&self, name: &str) -> Option<&'r str> {
        // SAFETY: the header list is complete once the request reaches a handler; it is
        // only read here, and its names and values are strings of the request.
        let mut headers = unsafe { list_iterator(&(*self.raw.as_ptr()).headers_in.headers) };
        headers
            .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, v)| v.to_str().ok())
    }

    /// The `Range` header nginx picked out while reading the headers, if it is UTF-8.
    pub fn range(&self) -> Option<&'r str> {
        let h = self.get().headers_in.range;
        if h.is_null() {
            return None;
        }
        // SAFETY: a non-null headers_in.range is an element of the request's header
        // list, and its value one of the request's strings.
        let value = unsafe { Self::bytes((*h).value) };
        std::str::from_utf8(value).ok()
    }

    /// Local address (IPv4 only) and port of the connection the request came in on.
    pub fn local_addr(&self) -> (Option<Ipv4Addr>, u16) {
        let c = self.connection();
        // SAFETY: the connection of a live request is live; a null buffer asks for the
        // address only (no text).
        if unsafe { ngx_connection_local_sockaddr(c, null_mut(), 0) } != NGX_OK as ngx_int_t {
            return (None, 0);
        }
        // SAFETY: c is live, and once ngx_connection_local_sockaddr succeeded its
        // local_sockaddr points at a socket address of the family it names.
        unsafe {
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

    /// A zeroed `T` in the request pool.
    fn calloc<T: Zeroed>(&self) -> Option<&'r mut T> {
        let p = self.pool().calloc(size_of::<T>()).cast::<T>();
        // SAFETY: p is null or a fresh, zeroed allocation of T's size in the request pool
        // (word-aligned, as the C structs that are Zeroed need), which outlives 'r; zero
        // bytes are a T (Zeroed).
        unsafe { p.as_mut() }
    }

    /// Copies `value` into the request pool (freed with the request, never dropped).
    pub fn alloc<T: Copy>(&self, value: T) -> Option<&'r mut T> {
        const { assert!(align_of::<T>() <= align_of::<usize>()) };
        let p = self.pool().alloc(size_of::<T>()).cast::<T>();
        if p.is_null() {
            return None;
        }
        // SAFETY: p is a fresh allocation of T's size in the request pool, aligned to a
        // word (enough for T, checked above), which outlives 'r.
        unsafe {
            p.write(value);
            Some(&mut *p)
        }
    }

    /// Opens `path` (its pieces joined as they are) through nginx's open file cache (when
    /// `cached`) with the location's `open_file_cache`, `directio` and `read_ahead`.
    /// Errors: 404 (missing, or not a regular file), 403, 500, or NGX_ERROR.
    pub fn open_file(&mut self, path: &[&[u8]], cached: bool) -> Result<OpenFile, Status> {
        // The NUL-terminated name nginx opens, joined straight into the request pool.
        let len: usize = path.iter().map(|p| p.len()).sum();
        let data = self.pool().alloc_unaligned(len + 1).cast::<u8>();
        if data.is_null() {
            return Err(Status::NGX_ERROR);
        }
        // SAFETY: data is a fresh allocation of len + 1 bytes in the request pool.
        let buf = unsafe { core::slice::from_raw_parts_mut(data, len + 1) };
        let mut at = 0;
        for piece in path {
            buf[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        buf[len] = 0;
        let mut name = ngx_str_t { len, data };
        let Some(clcf) = NgxHttpCoreModule::location_conf(self.ngx()) else {
            return Err(Status::NGX_ERROR);
        };
        // SAFETY: ngx_open_file_info_t is a plain C struct that nginx zeroes before use.
        let mut of: ngx_open_file_info_t = unsafe { core::mem::zeroed() };
        of.read_ahead = clcf.read_ahead;
        of.directio = clcf.directio;
        of.valid = clcf.open_file_cache_valid;
        of.min_uses = clcf.open_file_cache_min_uses;
        of.set_errors(clcf.open_file_cache_errors as _);
        of.set_events(clcf.open_file_cache_events as _);
        let cache = if cached {
            clcf.open_file_cache
        } else {
            null_mut()
        };
        // SAFETY: name is NUL-terminated in the request pool; the cache (or null) is the
        // location's and the pool the live request's, which owns the descriptor.
        let rc = unsafe { ngx_open_cached_file(cache, &mut name, &mut of, self.get().pool) };
        if rc != NGX_OK as ngx_int_t {
            return Err(match of.err as u32 {
                0 => HTTPStatus::INTERNAL_SERVER_ERROR,
                NGX_ENOENT | NGX_ENOTDIR | NGX_ENAMETOOLONG => HTTPStatus::NOT_FOUND,
                NGX_EACCES => HTTPStatus::FORBIDDEN,
                _ => HTTPStatus::INTERNAL_SERVER_ERROR,
            }
            .into());
        }
        if of.is_file() == 0 {
            return Err(HTTPStatus::NOT_FOUND.into());
        }
        Ok(OpenFile {
            fd: of.fd,
            name,
            directio: of.is_directio() as u32,
            size: of.size,
            mtime: of.mtime,
        })
    }

    /// Sends the headers of a 200 response (with an ETag). `Err` carries what the handler
    /// answers when no body follows: an error, a status that took over (such as a 304
    /// from nginx's not_modified filter), or the status of a HEAD request.
    pub fn send_head(&mut self, head: &Head) -> Result<(), Status> {
        let pool = self.get().pool;
        let r = self.get_mut();
        r.headers_out.status = NGX_HTTP_OK as ngx_uint_t;
        r.headers_out.content_length_n = head.content_length;
        r.headers_out.last_modified_time = head.last_modified;
        if head.allow_ranges {
            r.set_allow_ranges(1);
        }
        // SAFETY: the request is live.
        if unsafe { ngx_http_set_etag(self.as_ptr()) } != NGX_OK as ngx_int_t {
            return Err(Status::NGX_ERROR);
        }
        match head.content_type {
            Some(ct) => {
                // SAFETY: pool is the live request's.
                let Some(s) = (unsafe { ngx_str_t::from_bytes(pool, ct.as_bytes()) }) else {
                    return Err(Status::NGX_ERROR);
                };
                let r = self.get_mut();
                r.headers_out.content_type = s;
                r.headers_out.content_type_len = s.len;
            }
            None => {
                // SAFETY: the request is live.
                if unsafe { ngx_http_set_content_type(self.as_ptr()) } != NGX_OK as ngx_int_t {
                    return Err(Status::NGX_ERROR);
                }
            }
        }
        if let Some(d) = head.disposition {
            if self
                .ngx_mut()
                .add_header_out("Content-Disposition", d)
                .is_none()
            {
                return Err(Status::NGX_ERROR);
            }
        }
        // SAFETY: the request is live.
        let rc = unsafe { ngx_http_send_header(self.as_ptr()) };
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || self.get().header_only() != 0
        {
            return Err(Status(rc));
        }
        Ok(())
    }

    /// Sends `prefix` (if any), then `bytes` of `file` as an nginx file buffer (sendfile),
    /// as the whole body.
    pub fn send_file_body(
        &mut self,
        prefix: Option<&'static [u8]>,
        file: &OpenFile,
        bytes: Range<i64>,
    ) -> Status {
        let mut bufs: [Option<&'r mut ngx_buf_t>; 2] = [None, None];
        if let Some(data) = prefix {
            let Some(b) = self.calloc::<ngx_buf_t>() else {
                return Status::NGX_ERROR;
            };
            // A memory buffer is only read: nothing writes through the pointer.
            b.pos = data.as_ptr().cast_mut();
            b.last = b.pos.wrapping_add(data.len());
            b.set_memory(1);
            bufs[0] = Some(b);
        }
        let (Some(b), Some(f)) = (self.calloc::<ngx_buf_t>(), self.calloc::<ngx_file_t>()) else {
            return Status::NGX_ERROR;
        };
        f.fd = file.fd;
        f.name = file.name;
        f.log = self.log();
        f.set_directio(file.directio as _);
        b.file = f;
        b.file_pos = bytes.start;
        b.file_last = bytes.end;
        b.set_in_file((bytes.end > bytes.start) as _);
        b.set_last_buf(self.ngx().is_main() as _);
        b.set_last_in_chain(1);
        bufs[1] = Some(b);

        let mut out: *mut ngx_chain_t = null_mut();
        for b in bufs.into_iter().rev().flatten() {
            let Some(cl) = self.calloc::<ngx_chain_t>() else {
                return Status::NGX_ERROR;
            };
            cl.buf = b;
            cl.next = out;
            out = cl;
        }
        // SAFETY: the request is live and out a chain of buffers in its pool.
        Status(unsafe { ngx_http_output_filter(self.as_ptr(), out) })
    }

    /// Answers 302 with `Location: location` (and nginx's page).
    pub fn redirect(&mut self, location: &str) -> Status {
        let pool = self.get().pool;
        // SAFETY: pool is the live request's.
        let Some(value) = (unsafe { ngx_str_t::from_bytes(pool, location.as_bytes()) }) else {
            return Status::NGX_ERROR;
        };
        let r = self.get_mut();
        // SAFETY: headers_out.headers is the request's list of ngx_table_elt_t.
        let h = unsafe { ngx_list_push(&mut r.headers_out.headers) }.cast::<ngx_table_elt_t>();
        if h.is_null() {
            return Status::NGX_ERROR;
        }
        // SAFETY: h is a fresh element of that list, zeroed before use (`next` exists only
        // from nginx 1.23 on): zero bytes are an ngx_table_elt_t.
        let h = unsafe {
            h.write_bytes(0, 1);
            &mut *h
        };
        h.hash = 1;
        h.key = ngx::ngx_string!("Location");
        h.value = value;
        r.headers_out.location = h;
        HTTPStatus::MOVED_TEMPORARILY.into()
    }

    /// Marks the request as answered by an error page (so that a 502 from a rewrite
    /// handler does not loop through `error_page` again).
    pub fn set_error_page(&mut self) {
        self.get_mut().set_error_page(1);
    }

    pub fn internal_redirect(&self, location: &str) -> Status {
        self.ngx().internal_redirect(location)
    }

    /// Keeps the request alive after its handler answers NGX_DONE, until
    /// `ngx_http_finalize_request` drops this reference.
    pub fn add_reference(&mut self) {
        // SAFETY: the main request of a live request is live; no reference to it is held.
        let main = unsafe { &mut *self.get().main };
        main.set_count(main.count() + 1);
    }

    /// The slot of indexed variable `idx` in this request.
    fn variable(&mut self, idx: ngx_uint_t) -> Option<&mut ngx_variable_value_t> {
        let count = NgxHttpCoreModule::main_conf(self.ngx())?.variables.nelts;
        let slots = self.get().variables;
        if idx >= count || slots.is_null() {
            return None;
        }
        // SAFETY: r->variables has a slot for each variable of the core main conf (nginx
        // allocates them with the request); idx is below their count.
        Some(unsafe { &mut *slots.add(idx) })
    }

    /// Sets indexed variable `idx` to `value` (copied into the request pool).
    pub fn set_variable(&mut self, idx: ngx_uint_t, value: &str) -> Result<(), ()> {
        let pool = self.get().pool;
        // SAFETY: pool is the live request's.
        let s = unsafe { ngx_str_t::from_bytes(pool, value.as_bytes()) }.ok_or(())?;
        let v = self.variable(idx).ok_or(())?;
        v.data = s.data;
        v.set_len(s.len as _);
        v.set_valid(1);
        v.set_no_cacheable(0);
        v.set_not_found(0);
        Ok(())
    }

    /// Sets indexed variable `idx` to a static string (no copy).
    pub fn set_variable_static(&mut self, idx: ngx_uint_t, value: &'static str) -> Result<(), ()> {
        let v = self.variable(idx).ok_or(())?;
        // The slot is only read through: nothing writes to a variable's value.
        v.data = value.as_ptr().cast_mut();
        v.set_len(value.len() as _);
        v.set_valid(1);
        v.set_no_cacheable(0);
        v.set_not_found(0);
        Ok(())
    }

    /// The value the module set in the slot of indexed variable `idx`, if any (the slot
    /// itself: no get handler runs).
    pub fn variable_value(&mut self, idx: ngx_uint_t) -> Option<&[u8]> {
        let v = self.variable(idx)?;
        if v.valid() == 0 || v.not_found() != 0 || v.data.is_null() {
            return None;
        }
        // SAFETY: a valid slot holds `len` bytes at `data`: a string in the request pool
        // or a static one (set_variable, set_variable_static).
        Some(unsafe { core::slice::from_raw_parts(v.data, v.len() as usize) })
    }

    /// The response status as nginx logs it (`$status`): an error page's status, else
    /// the status sent, else 9 for HTTP/0.9, else 0 (nothing was sent).
    pub fn final_status(&self) -> u32 {
        let r = self.get();
        let status = if r.err_status != 0 {
            r.err_status
        } else if r.headers_out.status != 0 {
            r.headers_out.status
        } else if r.http_version == NGX_HTTP_VERSION_9 as ngx_uint_t {
            9
        } else {
            0
        };
        u32::try_from(status).unwrap_or(0)
    }

    /// Bytes of the response body sent so far (`$body_bytes_sent`).
    pub fn body_bytes_sent(&self) -> u64 {
        let r = self.get();
        // SAFETY: the connection of a live request is live.
        let sent = unsafe { (*r.connection).sent };
        u64::try_from(sent - r.header_size as off_t).unwrap_or(0)
    }

    /// Answers 200 with `body` (copied into the request pool) as `content_type`.
    pub fn send_text(&mut self, content_type: &'static str, body: &[u8]) -> Status {
        let data = self.pool().alloc_unaligned(body.len().max(1)).cast::<u8>();
        if data.is_null() {
            return Status::NGX_ERROR;
        }
        // SAFETY: data is a fresh allocation of at least body.len() bytes in the request
        // pool, which outlives the response.
        unsafe { core::ptr::copy_nonoverlapping(body.as_ptr(), data, body.len()) };
        let r = self.get_mut();
        r.headers_out.status = NGX_HTTP_OK as ngx_uint_t;
        r.headers_out.content_length_n = body.len() as off_t;
        r.headers_out.content_type = ngx_str_t {
            len: content_type.len(),
            data: content_type.as_ptr().cast_mut(),
        };
        r.headers_out.content_type_len = content_type.len();
        // SAFETY: the request is live.
        let rc = unsafe { ngx_http_send_header(self.as_ptr()) };
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || self.get().header_only() != 0
        {
            return Status(rc);
        }
        let Some(b) = self.calloc::<ngx_buf_t>() else {
            return Status::NGX_ERROR;
        };
        // A memory buffer is only read: nothing writes through the pointer.
        b.pos = data;
        b.last = data.wrapping_add(body.len());
        b.set_memory(1);
        b.set_last_buf(self.ngx().is_main() as _);
        b.set_last_in_chain(1);
        let Some(cl) = self.calloc::<ngx_chain_t>() else {
            return Status::NGX_ERROR;
        };
        cl.buf = b;
        // SAFETY: the request is live and cl a chain of one buffer in its pool.
        Status(unsafe { ngx_http_output_filter(self.as_ptr(), cl) })
    }

    /// Keeps `value` in the slot of indexed variable `idx` (which, unlike the module
    /// context, survives internal redirects) until the request is freed, then drops it.
    pub fn keep_in_variable<T>(&mut self, idx: ngx_uint_t, value: T) -> Result<(), ()> {
        // SAFETY: the pool is the live request's.
        let cln = unsafe { ngx_pool_cleanup_add(self.get().pool, 0) };
        // SAFETY: cln is null or a fresh cleanup entry of the pool, without a handler yet.
        let cln = unsafe { cln.as_mut() }.ok_or(())?;
        let kept = Box::into_raw(Box::new(value));
        cln.handler = Some(drop_kept::<T>);
        cln.data = kept.cast();
        let v = self.variable(idx).ok_or(())?;
        v.data = kept.cast();
        v.set_len(0);
        v.set_valid(1);
        v.set_no_cacheable(0);
        v.set_not_found(0);
        Ok(())
    }

    /// What [`HttpRequest::keep_in_variable`] keeps in the slot of variable `idx`.
    ///
    /// # Safety
    ///
    /// Only `keep_in_variable::<T>` sets that variable.
    pub unsafe fn kept_in_variable<T>(&mut self, idx: ngx_uint_t) -> Option<&mut T> {
        let v = self.variable(idx)?;
        if v.valid() == 0 || v.data.is_null() {
            return None;
        }
        // SAFETY: by the caller, data is the Box<T> keep_in_variable made, which lives
        // until the request pool is destroyed; `&mut self` makes this the only reference.
        Some(unsafe { &mut *v.data.cast::<T>() })
    }
}

/// The pool cleanup of [`HttpRequest::keep_in_variable`].
unsafe extern "C" fn drop_kept<T>(data: *mut c_void) {
    // SAFETY: data is the Box<T> this cleanup was registered for; cleanups run once.
    drop(unsafe { Box::from_raw(data.cast::<T>()) });
}
