//! `fdfs_regenerate_filename <config_file> <appender_file_id>`: turns an appender file
//! into a normal file and prints its new file id.

use crate::cli::{self, ToolError};
use crate::client::Client;

pub const NAME: &str = "fdfs_regenerate_filename";
pub const USAGE: &str = "<config_file> <appender_file_id>\n\
    regenerate filename for the appender file.\n\
    NOTE: the regenerated file will be a normal file!";

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
    let new_id = Client::new(&conf)
        .regenerate_appender_filename(&a.file_id)
        .await
        .map_err(|e| ToolError::op(&format!("regenerate file {}", a.file_id), &e))?;
    println!("{new_id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;

    #[test]
    fn arguments() {
        assert_eq!(
            parse(&args(&["c.conf", "group1/M00/00/00/x"]))
                .unwrap()
                .file_id,
            "group1/M00/00/00/x"
        );
        assert!(parse(&args(&["c.conf"])).is_err());
    }
}
