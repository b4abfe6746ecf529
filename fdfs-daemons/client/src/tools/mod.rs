//! The command-line tools. Each module has the tool's `USAGE`, its argument parser
//! (`parse`, unit tested) and its body (`run`); `src/bin/*.rs` only wire them to
//! [`crate::cli::main`].

pub mod append_file;
pub mod crc32;
pub mod delete_file;
pub mod download_file;
pub mod file_info;
pub mod monitor;
pub mod regenerate_filename;
pub mod upload_appender;
pub mod upload_file;

#[cfg(test)]
pub(crate) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
