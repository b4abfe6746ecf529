//! `fdfs_file_info <config_file> <file_id>`: what the file id says, or — for appender
//! and slave files and unknown sources — what the storage says (`GET FROM SERVER: true`).

use crate::cli::{self, ToolError};
use crate::client::Client;
use crate::format;

pub const NAME: &str = "fdfs_file_info";
pub const USAGE: &str = "<config_file> <file_id>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub config: String,
    pub file_id: String,
}

pub fn parse(args: &[String]) -> Result<Args, ToolError> {
    cli::need(args, 2)?;
    Ok(Args {
        config: args[0].clone(),
        file_id: args[1].clone(),
    })
}

pub async fn run(a: Args) -> Result<(), ToolError> {
    let conf = cli::load_config(&a.config)?;
    let details = Client::new(&conf)
        .file_info(&a.file_id, false)
        .await
        .map_err(|e| ToolError::op("query file info", &e))?;
    print!("{}", format::file_info(&details));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;

    #[test]
    fn arguments() {
        let a = parse(&args(&["c.conf", "group1/M00/00/00/x"])).unwrap();
        assert_eq!(a.config, "c.conf");
        assert!(parse(&args(&["c.conf"])).is_err());
    }
}
