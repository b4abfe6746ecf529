//! The module's counters, shared by all of nginx's workers, and `fastdfs_metrics;`.
//!
//! The counters live in a shared memory zone (`ngx_fastdfs_metrics`) that nginx maps in
//! the master while it loads the configuration, before it starts the workers, so every
//! worker adds to the same words (atomically). On `nginx -s reload` the new cycle asks for
//! the same zone, which nginx hands over with its contents: the counts carry on. They start
//! from zero when nginx starts (and on a binary upgrade, whose new master maps its own).
//!
//! What is counted and how it is rendered is `ngx_fastdfs_serve::metrics`; here: the
//! zone, marking a request with how the module served it (`$ngx_fastdfs_served`, a
//! variable slot, which survives the internal redirect into the proxy location), counting
//! it when nginx logs it (log phase: its final status and body size are known then), and
//! the scrape handler.

use core::ffi::c_void;
use core::ptr::{addr_of, NonNull};
use std::sync::atomic::AtomicU64;

use ngx::core::Status;
use ngx::ffi::*;
use ngx::http::{HTTPStatus, HttpModuleMainConf};
use ngx_fastdfs_serve::{
    holds_counters, Counters, Finished, RangeKind, Served, TokenCheck, HEADER_WORDS,
};

use crate::conf::MainConf;
use crate::request::HttpRequest;
use crate::FastdfsModule;

/// The shared memory zone's name.
const ZONE: &str = "ngx_fastdfs_metrics";
/// What a scrape is answered with (Prometheus' text format).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Table = [AtomicU64; Counters::WORDS];

/// Declares the zone (once per configuration; nginx maps it after the configuration is
/// read, and then calls [`init_zone`]).
///
/// # Safety
///
/// `cf` is nginx's live configuration.
pub unsafe fn add_zone(cf: *mut ngx_conf_t) -> Option<NonNull<ngx_shm_zone_t>> {
    // SAFETY: cf is live (by the caller); the name is copied into its pool, which lives
    // as long as the cycle that keeps the zone.
    let mut name = unsafe { ngx_str_t::from_bytes((*cf).pool, ZONE.as_bytes()) }?;
    // The smallest zone nginx itself accepts for a slab pool (8 pages), which leaves
    // room for the table.
    // SAFETY: nginx sets ngx_pagesize once at start-up, before reading any configuration.
    let size = 8 * unsafe { ngx_pagesize };
    let tag = addr_of!(crate::ngx_http_fastdfs_module).cast_mut().cast();
    // SAFETY: cf is live; the tag is the module's address, the same in every cycle that
    // loads this module, so a reload finds the zone again.
    let zone = unsafe { ngx_shared_memory_add(cf, &mut name, size, tag) };
    let mut zone = NonNull::new(zone)?;
    // SAFETY: zone is the cycle's entry for this name, created or found just now.
    unsafe { zone.as_mut().init = Some(init_zone) };
    Some(zone)
}

/// nginx's init callback of the zone, in the master: `data` is the table of the zone
/// this one takes over on a reload (its counts stay), null for a fresh zone (a new table
/// is allocated in it).
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx passes the cycle's zone entry, now mapped.
    let zone = unsafe { &mut *zone };
    if !data.is_null() {
        // SAFETY: data is what this callback stored for the previous cycle: a table in
        // the same mapping, which begins with the header every version writes.
        let header = unsafe { &*data.cast::<[AtomicU64; HEADER_WORDS]>() };
        if holds_counters(header) {
            zone.data = data;
            return NGX_OK as ngx_int_t;
        }
    }
    let pool = zone.shm.addr.cast::<ngx_slab_pool_t>();
    // SAFETY: a mapped zone starts with the slab pool nginx initialised in it; the
    // allocation takes the pool's lock.
    let table = unsafe { ngx_slab_alloc(pool, size_of::<Table>()) };
    if table.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: a fresh slab allocation of the table's size, aligned to at least 8 bytes
    // (slab chunks are aligned to their power-of-two size); attach zeroes it.
    Counters::attach(unsafe { &*table.cast::<Table>() });
    zone.data = table;
    NGX_OK as ngx_int_t
}

/// The shared counters, once the zone is mapped.
pub fn counters(mcf: &MainConf) -> Option<Counters<'_>> {
    let zone = mcf.metrics_zone?;
    // SAFETY: the zone entry lives in the cycle this main conf belongs to.
    let data = unsafe { zone.as_ref().data };
    if data.is_null() {
        return None;
    }
    // SAFETY: init_zone set data to a table of the current layout in the shared mapping,
    // which every worker inherited from the master and which lives as long as the cycle.
    Counters::existing(unsafe { &*data.cast::<Table>() })
}

/// Notes how the module serves the request (counted when nginx logs it).
pub fn mark(req: &mut HttpRequest<'_>, mcf: &MainConf, served: Served) {
    // The label is a static string: the slot points at it, no copy into the pool.
    let _ = req.set_variable_static(mcf.served_idx, served.label());
}

/// Counts a token check.
pub fn token(mcf: &MainConf, check: Option<TokenCheck>) {
    if let (Some(check), Some(c)) = (check, counters(mcf)) {
        c.token(check);
    }
}

/// Log-phase handler: counts a request the module's content handler took.
pub unsafe extern "C" fn log_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let mut req = unsafe { HttpRequest::from_raw(r) };
    count(&mut req);
    NGX_OK as ngx_int_t
}

fn count(req: &mut HttpRequest<'_>) {
    let Some(mcf) = FastdfsModule::main_conf(req.ngx()) else {
        return;
    };
    let Some(served) = req
        .variable_value(mcf.served_idx)
        .and_then(Served::from_label)
    else {
        return; // not a request of the module
    };
    let Some(c) = counters(mcf) else {
        return;
    };
    c.finished(&Finished {
        status: req.final_status(),
        served,
        range: RangeKind::of(req.range()),
        body_bytes: req.body_bytes_sent(),
    });
}

/// The content handler of `fastdfs_metrics;`.
pub unsafe extern "C" fn scrape_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls the content handler with a live request.
    let mut req = unsafe { HttpRequest::from_raw(r) };
    scrape(&mut req).0
}

fn scrape(req: &mut HttpRequest<'_>) -> Status {
    if !req.is_get_or_head() {
        return HTTPStatus::NOT_ALLOWED.into();
    }
    let rc = req.discard_body();
    if rc != Status::NGX_OK {
        return rc;
    }
    let Some(c) = FastdfsModule::main_conf(req.ngx()).and_then(counters) else {
        return HTTPStatus::INTERNAL_SERVER_ERROR.into();
    };
    req.send_text(CONTENT_TYPE, c.render().as_bytes())
}
