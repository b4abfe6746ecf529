#![forbid(unsafe_code)]

use fdfs_client::{cli, tools::upload_appender as tool};

fn main() {
    cli::main(tool::NAME, tool::USAGE, tool::parse, tool::run)
}
