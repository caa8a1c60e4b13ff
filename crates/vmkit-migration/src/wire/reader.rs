//! [`StreamReader`]: sequential, offset-tracking, bounds-checked reads.

use std::io::{BufRead, BufReader, ErrorKind, Read};

use super::lookahead::Lookahead;
use super::{WireError, WireResult};

/// Buffer size of [`StreamReader::buffered`].
pub const READ_BUFFER: usize = 1 << 20;

/// Reads a stream sequentially, counting the absolute byte offset.
///
/// The reader does no buffering of its own beyond a one-byte peek: wrap
/// unbuffered sources (files, sockets) with [`StreamReader::buffered`].
/// Short reads of the source are retried; an end of data in the middle of
/// an item is [`WireError::Truncated`] with the offset where bytes ran out.
pub struct StreamReader<R> {
    inner: R,
    offset: u64,
    peeked: Option<u8>,
    /// `inner`'s [`BufRead`] methods, when it has them (a reader made by
    /// [`from_buf_read`](Self::from_buf_read)): [`read_with`](Self::read_with)
    /// then lends out bytes from `inner`'s buffer instead of copying them.
    borrow: Option<Borrow<R>>,
}

/// [`BufRead::fill_buf`] and [`BufRead::consume`] of a reader type.
struct Borrow<R> {
    fill: fn(&mut R) -> std::io::Result<&[u8]>,
    consume: fn(&mut R, usize),
}

impl<R> Clone for Borrow<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Borrow<R> {}

impl<R: std::fmt::Debug> std::fmt::Debug for StreamReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("inner", &self.inner)
            .field("offset", &self.offset)
            .field("peeked", &self.peeked)
            .field("borrows", &self.borrow.is_some())
            .finish()
    }
}

impl<R: Read> StreamReader<BufReader<R>> {
    /// A reader over `inner` with a 1 MiB buffer.
    pub fn buffered(inner: R) -> StreamReader<BufReader<R>> {
        StreamReader::from_buf_read(BufReader::with_capacity(READ_BUFFER, inner))
    }
}

impl<R: BufRead> StreamReader<R> {
    /// A reader at offset 0 over a buffered source, whose buffer
    /// [`read_with`](Self::read_with) lends out.
    pub fn from_buf_read(inner: R) -> StreamReader<R> {
        StreamReader {
            borrow: Some(Borrow {
                fill: R::fill_buf,
                consume: R::consume,
            }),
            ..StreamReader::new(inner)
        }
    }
}

impl<R: Read> StreamReader<R> {
    /// A reader at offset 0.
    pub fn new(inner: R) -> StreamReader<R> {
        StreamReader::with_offset(inner, 0)
    }

    /// A reader whose first byte is at `offset` (for streams read from the
    /// middle of a file).
    pub fn with_offset(inner: R, offset: u64) -> StreamReader<R> {
        StreamReader {
            inner,
            offset,
            peeked: None,
            borrow: None,
        }
    }

    /// The offset of the next byte.
    #[inline]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The underlying reader (a peeked byte is lost).
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn io(&self, source: std::io::Error) -> WireError {
        WireError::Io {
            offset: self.offset,
            source,
        }
    }

    fn truncated(&self, context: &str) -> WireError {
        WireError::Truncated {
            offset: self.offset,
            context: context.to_owned(),
        }
    }

    /// Fills `buf` completely; `context` names what is being read.
    pub fn read_into(&mut self, buf: &mut [u8], context: &str) -> WireResult<()> {
        let mut filled = 0;
        if !buf.is_empty() {
            if let Some(b) = self.peeked.take() {
                buf[0] = b;
                filled = 1;
                self.offset += 1;
            }
        }
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => return Err(self.truncated(context)),
                Ok(n) => {
                    filled += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(())
    }

    /// The bytes the source holds in its buffer from the offset on (reading
    /// more if it holds none), without consuming them: a look ahead for a
    /// decoder. `None` when the reader was not made by
    /// [`from_buf_read`](Self::from_buf_read) (or a byte is peeked); an
    /// empty slice at the end of the stream.
    pub fn lookahead(&mut self) -> WireResult<Option<&[u8]>> {
        let (Some(b), None) = (self.borrow, self.peeked) else {
            return Ok(None);
        };
        loop {
            match (b.fill)(&mut self.inner) {
                // Re-borrowed: the loop's borrow ends with each failed try.
                Ok(_) => return Ok((b.fill)(&mut self.inner).ok()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(WireError::Io {
                        offset: self.offset,
                        source: e,
                    });
                }
            }
        }
    }

    /// Reads the next `scratch.len()` bytes and calls `f` with them: straight
    /// from the source's buffer when the reader was made by
    /// [`from_buf_read`](Self::from_buf_read) and the buffer holds them all
    /// (no copy), else copied into `scratch` first. Either way `f` sees the
    /// same bytes and the offset moves past them.
    pub fn read_with<T>(&mut self, scratch: &mut [u8], context: &str, f: impl FnOnce(&[u8]) -> T) -> WireResult<T> {
        let n = scratch.len();
        if let (Some(b), None) = (self.borrow, self.peeked) {
            let buffered = loop {
                match (b.fill)(&mut self.inner) {
                    Ok(buf) => break buf,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(WireError::Io {
                            offset: self.offset,
                            source: e,
                        });
                    }
                }
            };
            if let Some(bytes) = buffered.get(..n) {
                let out = f(bytes);
                (b.consume)(&mut self.inner, n);
                self.offset += n as u64;
                return Ok(out);
            }
        }
        self.read_into(scratch, context)?;
        Ok(f(scratch))
    }

    fn read_array<const N: usize>(&mut self, context: &str) -> WireResult<[u8; N]> {
        let mut b = [0u8; N];
        self.read_into(&mut b, context)?;
        Ok(b)
    }

    /// One byte.
    #[inline]
    pub fn read_u8(&mut self, context: &str) -> WireResult<u8> {
        if let Some(b) = self.peeked.take() {
            self.offset += 1;
            return Ok(b);
        }
        Ok(self.read_array::<1>(context)?[0])
    }

    /// A big-endian u16.
    pub fn read_be16(&mut self, context: &str) -> WireResult<u16> {
        Ok(u16::from_be_bytes(self.read_array(context)?))
    }

    /// A big-endian u32.
    pub fn read_be32(&mut self, context: &str) -> WireResult<u32> {
        Ok(u32::from_be_bytes(self.read_array(context)?))
    }

    /// A big-endian u64.
    #[inline]
    pub fn read_be64(&mut self, context: &str) -> WireResult<u64> {
        Ok(u64::from_be_bytes(self.read_array(context)?))
    }

    /// The next byte without consuming it; `None` at the end of the stream.
    pub fn peek_u8(&mut self) -> WireResult<Option<u8>> {
        if let Some(b) = self.peeked {
            return Ok(Some(b));
        }
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.peeked = Some(b[0]);
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// Whether the stream has ended (peeks one byte).
    pub fn at_end(&mut self) -> WireResult<bool> {
        Ok(self.peek_u8()?.is_none())
    }

    /// `len` bytes, refusing `len > limit` before allocating anything. Even
    /// below the limit the buffer grows only as data actually arrives, so a
    /// short stream announcing a large length costs no large allocation.
    pub fn read_bytes(&mut self, len: u64, limit: u64, context: &str) -> WireResult<Vec<u8>> {
        if len > limit {
            return Err(WireError::BadLength {
                offset: self.offset,
                what: context.to_owned(),
                len,
                max: limit,
            });
        }
        let mut out = Vec::new();
        let mut left = len;
        if left > 0 {
            if let Some(b) = self.peeked.take() {
                out.push(b);
                self.offset += 1;
                left -= 1;
            }
        }
        let got = (&mut self.inner)
            .take(left)
            .read_to_end(&mut out)
            .map_err(|e| WireError::Io {
                offset: self.offset,
                source: e,
            })?;
        self.offset += got as u64;
        if (got as u64) < left {
            return Err(self.truncated(context));
        }
        Ok(out)
    }

    /// A `u8` length followed by that many bytes, as a UTF-8 string (QEMU's
    /// idstrs, block names, subsection names).
    pub fn read_name(&mut self, context: &str) -> WireResult<String> {
        let at = self.offset;
        let len = self.read_u8(context)?;
        let mut buf = [0u8; 255];
        let name = &mut buf[..usize::from(len)];
        self.read_into(name, context)?;
        String::from_utf8(name.to_vec()).map_err(|_| WireError::Malformed {
            offset: at,
            reason: format!("{context}: name is not UTF-8"),
        })
    }

    /// Puts back one byte read through [`Read`] (a VMState decoder peeks
    /// one byte past a body to look for a subsection); it is read again
    /// next. Fails if a byte is already peeked.
    pub fn unread(&mut self, byte: u8) -> WireResult<()> {
        if self.peeked.is_some() || self.offset == 0 {
            return Err(WireError::Malformed {
                offset: self.offset,
                reason: "internal: more than one byte read past a section body".into(),
            });
        }
        self.peeked = Some(byte);
        self.offset -= 1;
        Ok(())
    }

    /// Consumes `n` bytes without keeping them.
    pub fn skip(&mut self, n: u64, context: &str) -> WireResult<()> {
        let mut left = n;
        if left > 0 && self.peeked.take().is_some() {
            self.offset += 1;
            left -= 1;
        }
        let got =
            std::io::copy(&mut (&mut self.inner).take(left), &mut std::io::sink()).map_err(|e| WireError::Io {
                offset: self.offset,
                source: e,
            })?;
        self.offset += got;
        if got < left {
            return Err(self.truncated(context));
        }
        Ok(())
    }
}

impl<R: Read> StreamReader<Lookahead<R>> {
    /// Reads the rest of the stream into memory (at most `limit` bytes;
    /// `context` says why, for the error) and returns it; parsing then
    /// goes on from that buffer. Called again, returns what is left.
    pub fn read_ahead_to_end(&mut self, limit: u64, context: &str) -> WireResult<&[u8]> {
        let front = self.peeked.take();
        let offset = self.offset;
        match self.inner.fill(front, offset, limit) {
            Ok(true) => Ok(self.inner.remaining()),
            Ok(false) => Err(WireError::BadLength {
                offset,
                what: context.to_owned(),
                len: limit.saturating_add(1),
                max: limit,
            }),
            Err(source) => Err(WireError::Io { offset, source }),
        }
    }

    /// The bytes at stream offsets `start..end`, once the stream has been
    /// read ahead ([`read_ahead_to_end`](Self::read_ahead_to_end)) from
    /// `start` or earlier; `None` otherwise.
    pub fn read_ahead_bytes(&self, start: u64, end: u64) -> Option<&[u8]> {
        self.inner.buffered(start, end)
    }
}

/// Raw reads for decoders that work on [`Read`] (the VMState codec); they
/// count the offset like the typed reads.
impl<R: Read> Read for StreamReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(b) = self.peeked.take() {
            buf[0] = b;
            self.offset += 1;
            return Ok(1);
        }
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    const BYTES: [u8; 30] = {
        let mut b = [0u8; 30];
        let mut i = 0;
        while i < 30 {
            b[i] = i as u8;
            i += 1;
        }
        b
    };

    /// Reads 4 bytes with `read_with`; returns them and whether they were
    /// lent out of the source's buffer (the scratch left untouched).
    fn take4<R: Read>(r: &mut StreamReader<R>) -> WireResult<(Vec<u8>, bool)> {
        let mut scratch = [0xAAu8; 4];
        let got = r.read_with(&mut scratch, "test", <[u8]>::to_vec)?;
        let lent = scratch == [0xAA; 4];
        Ok((got, lent))
    }

    #[test]
    fn read_with_lends_buffered_bytes_and_copies_the_rest() -> WireResult<()> {
        // A 10-byte buffer: 4 + 4 fit, the next 4 straddle its end.
        let mut r = StreamReader::from_buf_read(BufReader::with_capacity(10, &BYTES[..]));
        assert_eq!(take4(&mut r)?, (vec![0, 1, 2, 3], true));
        assert_eq!(take4(&mut r)?, (vec![4, 5, 6, 7], true));
        assert_eq!(take4(&mut r)?, (vec![8, 9, 10, 11], false));
        assert_eq!(r.offset(), 12);
        // A peeked byte is part of the next item: copied.
        assert_eq!(r.peek_u8()?, Some(12));
        assert_eq!(take4(&mut r)?, (vec![12, 13, 14, 15], false));
        assert_eq!(take4(&mut r)?, (vec![16, 17, 18, 19], true));
        assert_eq!(r.read_u8("test")?, 20);
        assert_eq!(r.offset(), 21);
        // Past the end: truncated where the bytes ran out.
        let mut scratch = [0u8; 16];
        let e = r.read_with(&mut scratch, "tail", |_| ()).err();
        assert!(matches!(e, Some(WireError::Truncated { offset: 30, .. })), "{e:?}");
        Ok(())
    }

    #[test]
    fn read_with_copies_from_a_reader_that_does_not_lend() -> WireResult<()> {
        let mut r = StreamReader::new(&BYTES[..]);
        assert_eq!(take4(&mut r)?, (vec![0, 1, 2, 3], false));
        assert_eq!(r.offset(), 4);
        Ok(())
    }
}
