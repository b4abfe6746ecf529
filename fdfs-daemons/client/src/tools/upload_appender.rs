//! `fdfs_upload_appender <config_file> <local_filename>`: uploads an appender file and
//! prints its file id.

use std::path::PathBuf;

use crate::cli::{self, ToolError};

pub const NAME: &str = "fdfs_upload_appender";
pub const USAGE: &str = "<config_file> <local_filename>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub config: String,
    pub local: PathBuf,
}

pub fn parse(args: &[String]) -> Result<Args, ToolError> {
    cli::need(args, 2)?;
    Ok(Args {
        config: args[0].clone(),
        local: PathBuf::from(&args[1]),
    })
}

pub async fn run(a: Args) -> Result<(), ToolError> {
    super::upload_file::upload(&a.config, &a.local, None, true).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;

    #[test]
    fn arguments() {
        let a = parse(&args(&["c.conf", "x.log"])).unwrap();
        assert_eq!(a.local, PathBuf::from("x.log"));
        assert!(parse(&args(&["c.conf"])).is_err());
    }
}
