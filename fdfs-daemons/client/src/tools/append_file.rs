//! `fdfs_append_file <config_file> <appender_file_id> <local_filename>`

use std::path::PathBuf;

use crate::cli::{self, ToolError};
use crate::client::Client;

pub const NAME: &str = "fdfs_append_file";
pub const USAGE: &str = "<config_file> <appender_file_id> <local_filename>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub config: String,
    pub file_id: String,
    pub local: PathBuf,
}

pub fn parse(args: &[String]) -> Result<Args, ToolError> {
    cli::need(args, 3)?;
    Ok(Args {
        config: args[0].clone(),
        file_id: args[1].clone(),
        local: PathBuf::from(&args[2]),
    })
}

pub async fn run(a: Args) -> Result<(), ToolError> {
    if let Some(e) = ToolError::local_file("append file", &a.local) {
        return Err(e);
    }
    let conf = cli::load_config(&a.config)?;
    Client::new(&conf)
        .append_file(&a.file_id, &a.local)
        .await
        .map_err(|e| ToolError::op("append file", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;

    #[test]
    fn arguments() {
        let a = parse(&args(&["c.conf", "group1/M00/00/00/x", "more.txt"])).unwrap();
        assert_eq!(a.local, PathBuf::from("more.txt"));
        assert!(parse(&args(&["c.conf", "group1/M00/00/00/x"])).is_err());
    }
}
