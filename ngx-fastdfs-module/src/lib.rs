//! `ngx_fastdfs_module`: serves FastDFS files from this storage's store paths through
//! nginx file buffers (sendfile), and fetches files that have not reached this storage
//! yet from their source storage (or another member of its group).
//!
//! nginx glue only: the URL, config, token, range and forwarding rules live in
//! `fdfs_proto::http`, and what to answer for a request is decided in
//! `ngx_fastdfs_serve` (`serve/`), both plain Rust that `cargo test` reaches. Here:
//! `conf` (directives), `handler` (the handlers, carrying out those decisions),
//! `metrics` (the counters all workers share, and `fastdfs_metrics;`),
//! `request` (the safe layer over nginx's request they go through), `park` (waiting
//! for the first storage listing) and `peers` (the listing).
//!
//! ```nginx
//! load_module /usr/lib/nginx/modules/ngx_http_fastdfs_module.so;
//! http {
//!     fastdfs_conf /etc/fdfs/mod_fastdfs.conf;   # optional, this is the default
//!     server {
//!         listen 8888;
//!         location ~/group([0-9]+)/M00 { ngx_fastdfs_module; }
//!     }
//! }
//! ```

mod conf;
mod handler;
mod metrics;
mod park;
mod peers;
mod request;

use core::ptr::{addr_of, addr_of_mut};

use ngx::ffi::*;
use ngx::http::HttpModule;

pub use conf::{LocConf, MainConf, SrvConf};

/// The module type for the `HttpModule` defaults.
pub struct FastdfsModule;

impl HttpModule for FastdfsModule {
    fn module() -> &'static ngx_module_t {
        // SAFETY: nginx only mutates the module's indexes while loading configuration.
        unsafe { &*addr_of!(ngx_http_fastdfs_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes its live configuration.
        unsafe { conf::preconfiguration(cf) }
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes its live configuration.
        unsafe { conf::postconfiguration(cf) }
    }
}

static CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(FastdfsModule::preconfiguration),
    postconfiguration: Some(FastdfsModule::postconfiguration),
    create_main_conf: Some(FastdfsModule::create_main_conf),
    init_main_conf: Some(conf::init_main_conf),
    create_srv_conf: Some(FastdfsModule::create_srv_conf),
    merge_srv_conf: Some(FastdfsModule::merge_srv_conf),
    create_loc_conf: Some(FastdfsModule::create_loc_conf),
    merge_loc_conf: Some(FastdfsModule::merge_loc_conf),
};

ngx::ngx_modules!(ngx_http_fastdfs_module);

#[used]
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static mut ngx_http_fastdfs_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(CTX) as _,
    // SAFETY: only the table's address is taken; nginx reads it while loading the module.
    commands: unsafe { addr_of_mut!(conf::COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as _,
    init_process: Some(peers::init_process),
    ..ngx_module_t::default()
};
