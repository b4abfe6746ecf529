//! Directives, configuration structs and configuration-time hooks.
//!
//! * `fastdfs_conf <path>;` (http): the module's config file, default
//!   `/etc/fdfs/mod_fastdfs.conf`. It is read and checked when nginx loads its
//!   configuration, so `nginx -t` reports a bad value with file and line.
//! * `ngx_fastdfs_module;` (location): serve FastDFS files here. The first use in a
//!   `server` also adds an internal named location (`@ngx_fastdfs_proxy`) that fetches
//!   files not here yet from their source storage through nginx's proxy module, so
//!   nothing else is needed in nginx.conf.
//! * `fastdfs_metrics;` (location): answer with the module's counters in Prometheus' text
//!   format (see `metrics.rs`), as `stub_status` does for nginx's own.

use core::ffi::{c_char, c_void};
use core::ptr::{null_mut, NonNull};
use std::sync::Arc;

use fdfs_proto::http::modconf::{ModConf, DEFAULT_PATH};
use ngx::core::{Pool, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::*;
use ngx::http::{
    HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf, Merge, MergeConfigError,
    NgxHttpCoreModule,
};
use ngx::{ngx_conf_log_error, ngx_string};

use crate::FastdfsModule;

/// Name of the internal location that proxies to other storages.
pub const PROXY_LOCATION: &str = "@ngx_fastdfs_proxy";
/// Variable holding `ip:port/uri?args&redirect=1` for that location's `proxy_pass`.
const TARGET_VAR: &str = "ngx_fastdfs_proxy_target";
/// Variable whose slot holds the per-request forwarding state (never read by nginx).
const STATE_VAR: &str = "ngx_fastdfs_proxy_state";
/// Variable holding how the module served the request (`local`, `proxy`...): counted
/// when nginx logs the request, and usable in `log_format`.
const SERVED_VAR: &str = "ngx_fastdfs_served";

/// The location added to each server that uses the module. Tries the next storage on a
/// connect error or timeout (`error_page` back into the same location; the rewrite-phase
/// handler picks the next candidate, or answers 502 when none is left).
const PROXY_BLOCK: &str = "location @ngx_fastdfs_proxy {
    ngx_fastdfs_proxy_location;
    proxy_pass http://$ngx_fastdfs_proxy_target;
    proxy_pass_request_body off;
    proxy_set_header Content-Length \"\";
    proxy_connect_timeout 5s;
    proxy_send_timeout 60s;
    proxy_read_timeout 60s;
    proxy_max_temp_file_size 0;
    proxy_next_upstream off;
    recursive_error_pages on;
    error_page 502 504 = @ngx_fastdfs_proxy;
}
}";

#[derive(Debug, Default)]
pub struct MainConf {
    /// From `fastdfs_conf`.
    pub conf_path: Option<String>,
    /// Some location uses `ngx_fastdfs_module`.
    pub used: bool,
    pub conf: Option<Arc<ModConf>>,
    pub target_idx: ngx_uint_t,
    pub state_idx: ngx_uint_t,
    pub served_idx: ngx_uint_t,
    /// Some location uses `fastdfs_metrics`.
    pub metrics_used: bool,
    /// The counters' shared memory zone (when the module or `fastdfs_metrics` is used).
    pub metrics_zone: Option<NonNull<ngx_shm_zone_t>>,
}

#[derive(Debug, Default)]
pub struct SrvConf {
    proxy_location_added: bool,
}

impl Merge for SrvConf {
    fn merge(&mut self, _prev: &Self) -> Result<(), MergeConfigError> {
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct LocConf {
    /// This is the internal proxy location.
    pub proxy_location: bool,
}

impl Merge for LocConf {
    fn merge(&mut self, _prev: &Self) -> Result<(), MergeConfigError> {
        Ok(())
    }
}

unsafe impl HttpModuleMainConf for FastdfsModule {
    type MainConf = MainConf;
}
unsafe impl HttpModuleServerConf for FastdfsModule {
    type ServerConf = SrvConf;
}
unsafe impl HttpModuleLocationConf for FastdfsModule {
    type LocationConf = LocConf;
}

pub static mut COMMANDS: [ngx_command_t; 5] = [
    ngx_command_t {
        name: ngx_string!("fastdfs_conf"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_fastdfs_conf),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ngx_fastdfs_module"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_ngx_fastdfs_module),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("ngx_fastdfs_proxy_location"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_proxy_location),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("fastdfs_metrics"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_fastdfs_metrics),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: null_mut(),
    },
    ngx_command_t::empty(),
];

fn arg(cf: &ngx_conf_t, i: usize) -> Option<&str> {
    // SAFETY: cf->args is an array of ngx_str_t while a directive is being handled.
    let args: &[ngx_str_t] = unsafe { (*cf.args).as_slice() };
    args.get(i).and_then(|a| a.to_str().ok())
}

extern "C" fn set_fastdfs_conf(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our main conf (NGX_HTTP_MAIN_CONF_OFFSET).
    let (cfr, mcf) = unsafe { (&*cf, &mut *(conf as *mut MainConf)) };
    if mcf.conf_path.is_some() {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"fastdfs_conf\" directive is duplicate");
        return NGX_CONF_ERROR;
    }
    match arg(cfr, 1) {
        Some(p) if !p.is_empty() => {
            mcf.conf_path = Some(p.to_string());
            NGX_CONF_OK
        }
        _ => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid \"fastdfs_conf\" path");
            NGX_CONF_ERROR
        }
    }
}

extern "C" fn set_proxy_location(
    _cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: conf is our location conf.
    unsafe { (*(conf as *mut LocConf)).proxy_location = true };
    NGX_CONF_OK
}

extern "C" fn set_ngx_fastdfs_module(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: called by nginx's config parser inside a location of a server.
    let cfr = unsafe { &mut *cf };
    let Some(clcf) = NgxHttpCoreModule::location_conf_mut(cfr) else {
        return NGX_CONF_ERROR;
    };
    clcf.handler = Some(crate::handler::content_handler);
    if let Some(mcf) = FastdfsModule::main_conf_mut(cfr) {
        mcf.used = true;
    }
    let Some(scf) = FastdfsModule::server_conf_mut(cfr) else {
        return NGX_CONF_ERROR;
    };
    if !scf.proxy_location_added {
        scf.proxy_location_added = true;
        // SAFETY: nginx is parsing this directive inside a server's location.
        return unsafe { add_proxy_location(cf) };
    }
    NGX_CONF_OK
}

extern "C" fn set_fastdfs_metrics(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: called by nginx's config parser inside a location.
    let cfr = unsafe { &mut *cf };
    let Some(clcf) = NgxHttpCoreModule::location_conf_mut(cfr) else {
        return NGX_CONF_ERROR;
    };
    clcf.handler = Some(crate::metrics::scrape_handler);
    let Some(mcf) = FastdfsModule::main_conf_mut(cfr) else {
        return NGX_CONF_ERROR;
    };
    mcf.metrics_used = true;
    NGX_CONF_OK
}

/// Parses [`PROXY_BLOCK`] as if it were written at this server's level: nginx's parser
/// reads it from an in-memory buffer (as it does for `-g` directives) with the server's
/// context, then the real file's parse resumes.
///
/// # Safety
///
/// `cf` is the configuration nginx is parsing, at a directive inside a server's location.
unsafe fn add_proxy_location(cf: *mut ngx_conf_t) -> *mut c_char {
    // SAFETY: by the caller, cf is live; nothing else uses it during this call.
    let cfr = unsafe { &mut *cf };
    let Some(cscf) = NgxHttpCoreModule::server_conf(cfr) else {
        return NGX_CONF_ERROR;
    };
    let srv_ctx = cscf.ctx;
    // SAFETY: the configuration's pool is live.
    let pool = unsafe { Pool::from_ngx_pool(cfr.pool) };
    let len = PROXY_BLOCK.len();
    let text = pool.alloc_unaligned(len).cast::<u8>();
    let b = pool.calloc_type::<ngx_buf_t>();
    let file = pool.calloc_type::<ngx_conf_file_t>();
    if text.is_null() || b.is_null() || file.is_null() {
        return NGX_CONF_ERROR;
    }
    // SAFETY: fresh allocations in the configuration pool: len bytes, and two zeroed C
    // structs (zero bytes are an ngx_buf_t and an ngx_conf_file_t).
    let (text, b, file) = unsafe {
        (
            core::slice::from_raw_parts_mut(text, len),
            &mut *b,
            &mut *file,
        )
    };
    text.copy_from_slice(PROXY_BLOCK.as_bytes());
    let bytes = text.as_mut_ptr_range();
    b.start = bytes.start;
    b.pos = bytes.start;
    b.last = bytes.end;
    b.end = bytes.end;
    b.set_temporary(1);
    // SAFETY: while a directive is handled, cf->conf_file is the file being parsed.
    let parsed = unsafe { &*cfr.conf_file };
    // A valid-looking fd makes the parser treat this as a block ending in `}`; it is
    // never read from (the text ends before the buffer does).
    file.file.fd = 0;
    file.file.name = parsed.file.name;
    file.file.log = cfr.log;
    file.line = parsed.line;
    file.buffer = b;

    let saved_file = cfr.conf_file;
    let saved_ctx = cfr.ctx;
    let saved_type = cfr.cmd_type;
    cfr.conf_file = file;
    cfr.ctx = srv_ctx as *mut c_void;
    cfr.cmd_type = NGX_HTTP_SRV_CONF as ngx_uint_t;
    // SAFETY: cf is live, now reading the block above in the server's context.
    let rv = unsafe { ngx_conf_parse(cf, null_mut()) };
    // SAFETY: as at the top; the parse has returned.
    let cfr = unsafe { &mut *cf };
    cfr.conf_file = saved_file;
    cfr.ctx = saved_ctx;
    cfr.cmd_type = saved_type;
    if rv != NGX_CONF_OK {
        return NGX_CONF_ERROR;
    }
    NGX_CONF_OK
}

unsafe extern "C" fn variable_not_set(
    _r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes the request's value slot of the variable.
    unsafe { (*v).set_not_found(1) };
    NGX_OK as ngx_int_t
}

/// # Safety
///
/// `cf` is nginx's live configuration.
pub unsafe fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    for name in [TARGET_VAR, STATE_VAR, SERVED_VAR] {
        let mut s = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        // SAFETY: nginx copies the name into its own pool.
        let v = unsafe { ngx_http_add_variable(cf, &mut s, 0) };
        if v.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        // SAFETY: v is the variable nginx just added (not null).
        unsafe { (*v).get_handler = Some(variable_not_set) };
    }
    NGX_OK as ngx_int_t
}

/// # Safety
///
/// `cf` is nginx's live configuration.
pub unsafe fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx passes its live configuration.
    let cfr = unsafe { &mut *cf };
    let mut idx = [0 as ngx_uint_t; 3];
    for (i, name) in [TARGET_VAR, STATE_VAR, SERVED_VAR].into_iter().enumerate() {
        let mut s = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        // SAFETY: cf is live; nginx copies the name, which points at a static string.
        let n = unsafe { ngx_http_get_variable_index(cf, &mut s) };
        if n == NGX_ERROR as ngx_int_t {
            return NGX_ERROR as ngx_int_t;
        }
        idx[i] = n as ngx_uint_t;
    }
    let Some(mcf) = FastdfsModule::main_conf_mut(cfr) else {
        return NGX_ERROR as ngx_int_t;
    };
    mcf.target_idx = idx[0];
    mcf.state_idx = idx[1];
    mcf.served_idx = idx[2];
    if !mcf.used {
        return NGX_OK as ngx_int_t;
    }
    let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(cfr) else {
        return NGX_ERROR as ngx_int_t;
    };
    let handlers: [(ngx_http_phases, ngx_http_handler_pt); 2] = [
        (
            ngx_http_phases_NGX_HTTP_REWRITE_PHASE,
            Some(crate::handler::proxy_rewrite_handler),
        ),
        // counts the module's requests once their status and size are final
        (
            ngx_http_phases_NGX_HTTP_LOG_PHASE,
            Some(crate::metrics::log_handler),
        ),
    ];
    for (phase, handler) in handlers {
        let phase = &mut cmcf.phases[phase as usize].handlers;
        // SAFETY: the phase's handlers are an nginx array of ngx_http_handler_pt.
        let h = unsafe { ngx_array_push(phase) } as *mut ngx_http_handler_pt;
        if h.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        // SAFETY: h is the fresh element of that array.
        unsafe { *h = handler };
    }
    NGX_OK as ngx_int_t
}

/// Reads and checks mod_fastdfs.conf once the http block is parsed (so also on `nginx -t`).
pub unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    // SAFETY: nginx passes the main conf create_main_conf made for this module.
    let mcf = unsafe { &mut *(conf as *mut MainConf) };
    if mcf.used || mcf.metrics_used {
        // SAFETY: nginx passes its live configuration.
        mcf.metrics_zone = unsafe { crate::metrics::add_zone(cf) };
        if mcf.metrics_zone.is_none() {
            return NGX_CONF_ERROR;
        }
    }
    if !mcf.used && mcf.conf_path.is_none() {
        return NGX_CONF_OK;
    }
    let path = mcf
        .conf_path
        .clone()
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    match ModConf::load(&path) {
        Ok(c) => {
            mcf.conf = Some(Arc::new(c));
            NGX_CONF_OK
        }
        Err(e) => {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "ngx_fastdfs_module: {}", e);
            NGX_CONF_ERROR
        }
    }
}
