//! The HTTP side of FastDFS, for the nginx module (`ngx-fastdfs-module`): what a request
//! URL names, `mod_fastdfs.conf` (+ `http.conf`), the anti-steal token decision, FLV
//! pseudo-streaming ranges, `Content-Disposition`, and which storages can answer for a
//! file this node does not have (yet). Pure code: the module does the nginx and socket
//! parts.

pub mod disposition;
pub mod modconf;
pub mod peers;
pub mod range;
pub mod url;

pub use modconf::{GroupConf, ModConf, ResponseMode};
pub use url::{parse_query, FileRequest, Query, UrlError};
