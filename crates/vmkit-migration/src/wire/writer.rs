//! [`StreamWriter`]: byte-counting writes.

use std::io::{BufWriter, Write};

use super::{WireError, WireResult};

/// Buffer size of [`StreamWriter::buffered`].
pub const WRITE_BUFFER: usize = 1 << 20;

/// Writes a stream, counting the bytes written.
///
/// An I/O error names the stream offset of the first byte the sink did not
/// take: bytes still held in the buffer of [`buffered`](Self::buffered)
/// have not reached it.
pub struct StreamWriter<W: Write> {
    inner: W,
    written: u64,
    /// Bytes accepted by `inner` that have not reached the sink yet.
    pending: fn(&W) -> usize,
}

impl<W: Write> std::fmt::Debug for StreamWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("written", &self.written)
            .field("pending", &(self.pending)(&self.inner))
            .finish_non_exhaustive()
    }
}

impl<W: Write> StreamWriter<BufWriter<W>> {
    /// A writer over `inner` with a 1 MiB buffer.
    pub fn buffered(inner: W) -> StreamWriter<BufWriter<W>> {
        StreamWriter {
            inner: BufWriter::with_capacity(WRITE_BUFFER, inner),
            written: 0,
            pending: |b| b.buffer().len(),
        }
    }
}

impl<W: Write> StreamWriter<W> {
    /// A writer at offset 0; every byte `inner` accepts counts as written.
    pub fn new(inner: W) -> StreamWriter<W> {
        StreamWriter {
            inner,
            written: 0,
            pending: |_| 0,
        }
    }

    /// The error for a failure after `accepted` bytes in all were handed
    /// to `inner`: at the first byte that did not reach the sink.
    fn io_error(&self, accepted: u64, source: std::io::Error) -> WireError {
        WireError::Io {
            offset: accepted.saturating_sub((self.pending)(&self.inner) as u64),
            source,
        }
    }

    /// Bytes written so far (the offset of the next byte).
    #[inline]
    pub fn offset(&self) -> u64 {
        self.written
    }

    /// The underlying writer (not flushed).
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> WireResult<()> {
        self.inner.flush().map_err(|source| self.io_error(self.written, source))
    }

    /// Counts `n` bytes that went to the underlying sink by another way
    /// (a gathered write on its descriptor, after a [`flush`](Self::flush)).
    pub fn note_written(&mut self, n: u64) {
        self.written += n;
    }

    /// Raw bytes.
    #[inline]
    pub fn put_bytes(&mut self, data: &[u8]) -> WireResult<()> {
        // `write_all` by hand, to know how much of `data` was taken.
        let mut done = 0;
        while done < data.len() {
            match self.inner.write(&data[done..]) {
                Ok(0) => {
                    let source = std::io::Error::new(std::io::ErrorKind::WriteZero, "the sink took no bytes");
                    return Err(self.io_error(self.written + done as u64, source));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(self.io_error(self.written + done as u64, source)),
            }
        }
        self.written += data.len() as u64;
        Ok(())
    }

    /// One byte.
    #[inline]
    pub fn put_u8(&mut self, v: u8) -> WireResult<()> {
        self.put_bytes(&[v])
    }

    /// A big-endian u16.
    pub fn put_be16(&mut self, v: u16) -> WireResult<()> {
        self.put_bytes(&v.to_be_bytes())
    }

    /// A big-endian u32.
    pub fn put_be32(&mut self, v: u32) -> WireResult<()> {
        self.put_bytes(&v.to_be_bytes())
    }

    /// A big-endian u64.
    #[inline]
    pub fn put_be64(&mut self, v: u64) -> WireResult<()> {
        self.put_bytes(&v.to_be_bytes())
    }

    /// A `u8` length and the name's bytes; names over 255 bytes are refused.
    pub fn put_name(&mut self, name: &str, what: &str) -> WireResult<()> {
        let len = u8::try_from(name.len()).map_err(|_| WireError::BadLength {
            offset: self.written,
            what: format!("{what} '{name}'"),
            len: name.len() as u64,
            max: 255,
        })?;
        self.put_u8(len)?;
        self.put_bytes(name.as_bytes())
    }
}
