//! Parking a request without blocking the worker: the request holds a reference on itself
//! (`r->main->count`), its handler answers `NGX_DONE`, and a timer checks every `poll` ms
//! whether what it waits for is ready. Then, or at the deadline, the request is served
//! again from the start and finalized with that answer.

use core::ffi::c_void;
use std::time::{Duration, Instant};

use ngx::core::Status;
use ngx::ffi::*;

use crate::request::HttpRequest;

/// Serves a parked request again.
pub type Resume = fn(&mut HttpRequest<'_>) -> Status;

/// A parked request's timer, in the request pool.
#[repr(C)]
#[derive(Clone, Copy)]
struct Parked {
    /// First: the timer's handler is given a pointer to it.
    ev: ngx_event_t,
    until: Instant,
    poll: ngx_msec_t,
    ready: fn() -> bool,
    resume: Resume,
}

/// Parks `req` until `ready()` holds or `max` has passed, then serves it with `resume`.
/// Answers what the handler returns to nginx.
pub fn park(
    req: &mut HttpRequest<'_>,
    poll: ngx_msec_t,
    max: Duration,
    ready: fn() -> bool,
    resume: Resume,
) -> Status {
    let parked = Parked {
        // SAFETY: zero bytes are an idle ngx_event_t (nginx allocates its own zeroed).
        ev: unsafe { core::mem::zeroed() },
        until: Instant::now() + max,
        poll,
        ready,
        resume,
    };
    let Some(parked) = req.alloc(parked) else {
        return Status::NGX_ERROR;
    };
    // SAFETY: req is live, and so is its pool.
    let cln = unsafe { ngx_pool_cleanup_add((*req.as_ptr()).pool, 0) };
    // SAFETY: cln is null or a fresh cleanup entry of the pool, without a handler yet.
    let Some(cln) = (unsafe { cln.as_mut() }) else {
        return Status::NGX_ERROR;
    };
    cln.handler = Some(unpark_on_free);
    cln.data = (parked as *mut Parked).cast();
    parked.ev.handler = Some(parked_tick);
    parked.ev.data = req.as_ptr().cast();
    parked.ev.log = req.log();
    // SAFETY: the event is idle and lives in the request pool, whose cleanup above takes
    // it out of the timer tree before the pool is freed.
    unsafe { ngx_add_timer(&mut parked.ev, poll) };
    req.add_reference();
    Status::NGX_DONE
}

unsafe extern "C" fn unpark_on_free(data: *mut c_void) {
    // SAFETY: data is the Parked of a request whose pool is being destroyed: the cleanups
    // run before its memory is freed.
    let ev = unsafe { &mut (*data.cast::<Parked>()).ev };
    if ev.timer_set() != 0 {
        // SAFETY: the event is in the timer tree.
        unsafe { ngx_del_timer(ev) };
    }
}

unsafe extern "C" fn parked_tick(ev: *mut ngx_event_t) {
    // SAFETY: ev is the first field of a Parked (repr(C)) in the pool of the request
    // ev->data, which park's reference keeps alive.
    let parked = unsafe { &mut *ev.cast::<Parked>() };
    if !(parked.ready)() && Instant::now() < parked.until {
        // SAFETY: the event lives as long as the request; it just fired, so it is out of
        // the timer tree.
        unsafe { ngx_add_timer(&mut parked.ev, parked.poll) };
        return;
    }
    let r = parked.ev.data.cast::<ngx_http_request_t>();
    let resume = parked.resume;
    // SAFETY: r is live until the finalize below drops park's reference.
    let mut req = unsafe { HttpRequest::from_raw(r) };
    let c = req.connection();
    let rc = resume(&mut req);
    // SAFETY: r and its connection are live; finalizing drops park's reference (and ends
    // the request unless rc continues it), then nginx's posted requests run as after any
    // event of the connection.
    unsafe {
        ngx_http_finalize_request(r, rc.0);
        ngx_http_run_posted_requests(c);
    }
}
