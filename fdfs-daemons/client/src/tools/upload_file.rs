//! `fdfs_upload_file <config_file> <local_filename> [storage_ip:port] [store_path_index]`
//!
//! Prints the new file id. With `storage_ip:port` the tracker is skipped and the file
//! goes straight to that storage (store path −1 = the storage chooses, unless given).

use std::net::SocketAddr;
use std::path::PathBuf;

use fdfs_proto::fileid::ext_from_local_name;

use crate::cli::{self, ToolError};
use crate::client::Client;
use crate::config::parse_host_port;

pub const NAME: &str = "fdfs_upload_file";
pub const USAGE: &str = "<config_file> <local_filename> [storage_ip:port] [store_path_index]";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub config: String,
    pub local: PathBuf,
    /// Direct upload target, and the store path index to ask for.
    pub storage: Option<(SocketAddr, i8)>,
}

/// Parses a store path index: −1 (storage chooses) or 0..=255.
pub fn parse_store_path_index(text: &str) -> Result<i8, ToolError> {
    match text.parse::<i32>() {
        Ok(-1) => Ok(-1),
        Ok(v @ 0..=255) => Ok(v as u8 as i8),
        _ => Err(ToolError::usage(format!(
            "invalid store_path_index: {text:?} (expected -1 or 0..255)"
        ))),
    }
}

pub fn parse(args: &[String]) -> Result<Args, ToolError> {
    cli::need(args, 2)?;
    let storage = match args.get(2) {
        None => None,
        Some(addr) => {
            if !addr.contains(':') {
                return Err(ToolError::usage(format!(
                    "invalid storage ip address and port: {addr}"
                )));
            }
            let sa = parse_host_port(addr, None).map_err(|why| {
                ToolError::usage(format!(
                    "invalid storage ip address and port: {addr} ({why})"
                ))
            })?;
            let spi = match args.get(3) {
                Some(t) => parse_store_path_index(t)?,
                None => -1,
            };
            Some((sa, spi))
        }
    };
    Ok(Args {
        config: args[0].clone(),
        local: PathBuf::from(&args[1]),
        storage,
    })
}

/// Shared by `fdfs_upload_file` and `fdfs_upload_appender`.
pub(crate) async fn upload(
    config: &str,
    local: &std::path::Path,
    storage: Option<(SocketAddr, i8)>,
    appender: bool,
) -> Result<(), ToolError> {
    let op = if appender {
        "upload appender file"
    } else {
        "upload file"
    };
    if let Some(e) = ToolError::local_file(op, local) {
        return Err(e);
    }
    let conf = cli::load_config(config)?;
    let client = Client::new(&conf);
    let ext = ext_from_local_name(&local.to_string_lossy()).to_string();
    let result = match storage {
        Some((addr, spi)) => {
            client
                .upload_file_to(addr, local, &ext, spi, appender)
                .await
        }
        None if appender => client.upload_appender_file(local, &ext, None).await,
        None => client.upload_file(local, &ext, None).await,
    };
    let file_id = result.map_err(|e| ToolError::op(op, &e))?;
    println!("{file_id}");
    Ok(())
}

pub async fn run(a: Args) -> Result<(), ToolError> {
    upload(&a.config, &a.local, a.storage, false).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;

    #[test]
    fn arguments() {
        let a = parse(&args(&["c.conf", "/tmp/a.txt"])).unwrap();
        assert_eq!(a.config, "c.conf");
        assert_eq!(a.local, PathBuf::from("/tmp/a.txt"));
        assert_eq!(a.storage, None);

        let a = parse(&args(&["c.conf", "a", "127.0.0.61:23400"])).unwrap();
        assert_eq!(a.storage, Some(("127.0.0.61:23400".parse().unwrap(), -1)));
        let a = parse(&args(&["c.conf", "a", "127.0.0.61:23400", "1"])).unwrap();
        assert_eq!(a.storage.unwrap().1, 1);
        let a = parse(&args(&["c.conf", "a", "127.0.0.61:23400", "255"])).unwrap();
        assert_eq!(a.storage.unwrap().1, -1);

        for bad in [
            &["c.conf"][..],
            &["c.conf", "a", "127.0.0.61"],
            &["c.conf", "a", "127.0.0.61:x"],
            &["c.conf", "a", "127.0.0.61:23400", "abc"],
            &["c.conf", "a", "127.0.0.61:23400", "256"],
        ] {
            assert_eq!(parse(&args(bad)).unwrap_err().exit_code, 2, "{bad:?}");
        }
    }
}
