//! `fdfs_download_file <config_file> <file_id> [local_filename] [<download_offset>
//! <download_bytes>]`
//!
//! The local name defaults to the last part of the file id. Unlike upstream, a failed
//! download exits non-zero.

use std::path::PathBuf;

use crate::cli::{self, ToolError};
use crate::client::Client;

pub const NAME: &str = "fdfs_download_file";
pub const USAGE: &str =
    "<config_file> <file_id> [local_filename] [<download_offset> <download_bytes>]";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub config: String,
    pub file_id: String,
    pub local: PathBuf,
    pub offset: u64,
    /// 0 = to the end of the file.
    pub count: u64,
}

/// The local name used when none is given: what follows the last `/` of the file id.
pub fn default_local_name(file_id: &str) -> &str {
    file_id.rsplit('/').next().unwrap_or(file_id)
}

pub fn parse(args: &[String]) -> Result<Args, ToolError> {
    cli::need(args, 2)?;
    let file_id = args[1].clone();
    let local = match args.get(2) {
        Some(l) if !l.is_empty() => PathBuf::from(l),
        Some(_) => return Err(ToolError::usage("empty local_filename")),
        None => PathBuf::from(default_local_name(&file_id)),
    };
    let (offset, count) = match (args.get(3), args.get(4)) {
        (None, _) => (0, 0),
        (Some(_), None) => {
            return Err(ToolError::usage(
                "download_offset and download_bytes must be given together",
            ))
        }
        (Some(o), Some(c)) => (
            cli::parse_u64(o, "download_offset")?,
            cli::parse_u64(c, "download_bytes")?,
        ),
    };
    Ok(Args {
        config: args[0].clone(),
        file_id,
        local,
        offset,
        count,
    })
}

pub async fn run(a: Args) -> Result<(), ToolError> {
    let conf = cli::load_config(&a.config)?;
    let client = Client::new(&conf);
    client
        .download_to_file(&a.file_id, a.offset, a.count, &a.local)
        .await
        .map_err(|e| ToolError::op("download file", &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;

    const ID: &str = "group1/M00/00/00/fwAAPWsEx2iADTARAAAADwL5vO4236.txt";

    #[test]
    fn arguments() {
        let a = parse(&args(&["c.conf", ID])).unwrap();
        assert_eq!(a.local, PathBuf::from("fwAAPWsEx2iADTARAAAADwL5vO4236.txt"));
        assert_eq!((a.offset, a.count), (0, 0));
        let a = parse(&args(&["c.conf", ID, "/tmp/out"])).unwrap();
        assert_eq!(a.local, PathBuf::from("/tmp/out"));
        let a = parse(&args(&["c.conf", ID, "/tmp/out", "3", "5"])).unwrap();
        assert_eq!((a.offset, a.count), (3, 5));
        for bad in [
            &["c.conf"][..],
            &["c.conf", ID, "/tmp/out", "3"],
            &["c.conf", ID, "/tmp/out", "-1", "5"],
            &["c.conf", ID, "/tmp/out", "1", "x"],
        ] {
            assert_eq!(parse(&args(bad)).unwrap_err().exit_code, 2, "{bad:?}");
        }
        assert_eq!(default_local_name("noslash"), "noslash");
    }
}
