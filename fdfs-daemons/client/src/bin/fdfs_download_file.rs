#![forbid(unsafe_code)]

use fdfs_client::{cli, tools::download_file as tool};

fn main() {
    cli::main(tool::NAME, tool::USAGE, tool::parse, tool::run)
}
