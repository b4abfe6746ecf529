//! `fdfs_delete_file <config_file> <file_id>`

use crate::cli::{self, ToolError};
use crate::client::Client;

pub const NAME: &str = "fdfs_delete_file";
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
    Client::new(&conf)
        .delete_file(&a.file_id)
        .await
        .map_err(|e| ToolError::op("delete file", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;

    #[test]
    fn arguments() {
        let a = parse(&args(&["c.conf", "group1/M00/00/00/x"])).unwrap();
        assert_eq!(a.file_id, "group1/M00/00/00/x");
        assert!(parse(&args(&["c.conf"])).is_err());
        assert!(parse(&args(&[])).is_err());
    }
}
