//! `fdfs_crc32 <filename>`: prints the file's CRC32 as upstream does (`%x`: lowercase
//! hex, no padding). The file is read in chunks.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cli::{self, ToolError};
use crate::storage::CHUNK_SIZE;

pub const NAME: &str = "fdfs_crc32";
pub const USAGE: &str = "<filename>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub file: PathBuf,
}

pub fn parse(args: &[String]) -> Result<Args, ToolError> {
    cli::need(args, 1)?;
    Ok(Args {
        file: PathBuf::from(&args[0]),
    })
}

/// CRC32 of a file, streamed.
pub fn crc32_of(path: &Path) -> std::io::Result<u32> {
    let mut f = std::fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

pub fn format(crc: u32) -> String {
    format!("{crc:x}")
}

pub async fn run(a: Args) -> Result<(), ToolError> {
    let crc = crc32_of(&a.file).map_err(|e| {
        ToolError::op(
            &format!("read file {}", a.file.display()),
            &fdfs_runtime::Error::Io(e),
        )
    })?;
    println!("{}", format(crc));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::args;

    #[test]
    fn arguments_and_output() {
        assert_eq!(parse(&args(&["f"])).unwrap().file, PathBuf::from("f"));
        assert!(parse(&args(&[])).is_err());
        assert_eq!(format(0x02F9_BCEE), "2f9bcee");
        let dir = std::env::temp_dir().join(format!("fdfs-crc-{}", std::process::id()));
        std::fs::write(&dir, b"Hello FastDFS!\n").unwrap();
        assert_eq!(crc32_of(&dir).unwrap(), 0x02F9_BCEE);
        std::fs::remove_file(&dir).unwrap();
    }
}
