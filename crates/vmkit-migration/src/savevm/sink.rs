//! Opening the file, FIFO or device a stream is saved to.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use vmkit_memory::GatherList;

/// The pipe buffer [`create_sink`] asks for when the sink is a FIFO.
pub const PIPE_BUFFER: usize = 1 << 20;

/// Opens `path` for writing a stream: a regular file is created or
/// truncated; a FIFO (a reader such as `cat > FILE` on the other end) gets
/// its pipe buffer raised from Linux's 64 KiB towards [`PIPE_BUFFER`],
/// within `fs.pipe-max-size`, so the reader wakes up once per megabyte
/// rather than sixteen times. Devices such as `/dev/null` are opened as
/// they are.
pub fn create_sink(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    if file.metadata()?.file_type().is_fifo() {
        enlarge_pipe(&file);
    }
    Ok(file)
}

/// Best effort: a pipe that stays at its size still works, only slower.
fn enlarge_pipe(pipe: &File) {
    let limit = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(PIPE_BUFFER);
    let _ = rustix::pipe::fcntl_setpipe_size(pipe, PIPE_BUFFER.min(limit));
}

/// `Write` on a borrowed descriptor, for the small records around the RAM
/// pages. Writes go through [`GatherList::write_to`], so short writes,
/// `EINTR` and a non-blocking descriptor are handled as for the pages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FdSink<'fd>(pub(crate) BorrowedFd<'fd>);

impl io::Write for FdSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut list = GatherList::with_capacity(1);
        list.push_bytes(buf);
        list.write_to(self.0)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt;

    use super::*;

    #[test]
    fn a_fifo_gets_a_larger_pipe() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("vmkit-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let fifo = dir.join("fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status()?;
        assert!(status.success());
        // A reader, so that opening for writing does not block.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&fifo)?;
        let writer = create_sink(&fifo)?;
        let size = rustix::pipe::fcntl_getpipe_size(&writer)?;
        assert!(size > 64 * 1024, "pipe buffer {size}");
        drop((reader, writer));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
