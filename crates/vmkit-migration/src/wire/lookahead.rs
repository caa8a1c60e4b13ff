//! [`Lookahead`]: a source whose remainder can be read into memory ahead
//! of the parser.
//!
//! A device section's body has no framing: only the VMDESCRIPTION trailer,
//! which comes last, says where a body of a device the reader does not
//! model ends. A receiver that meets such a section therefore reads the
//! rest of the stream into memory (bounded), finds the trailer at its end,
//! and then goes on parsing the buffered bytes
//! ([`StreamReader::read_ahead_to_end`](super::StreamReader::read_ahead_to_end)).

use std::io::{self, BufRead, Cursor, Read};

use super::vmdesc::locate_vmdesc;

/// Bytes asked of the source per read while reading ahead.
const READ_AHEAD_CHUNK: usize = 64 * 1024;

/// A [`Read`] over `R` that can buffer everything `R` has left and then
/// serves reads from that buffer. Until then it reads straight through.
#[derive(Debug)]
pub struct Lookahead<R> {
    inner: R,
    /// The remainder, once read ahead.
    ahead: Vec<u8>,
    /// The next byte of `ahead` to serve.
    pos: usize,
    /// The stream offset of `ahead[0]`.
    base: u64,
    /// Whether `inner` has been read to its end into `ahead`.
    filled: bool,
    /// Whether reading ahead ends at a VMDESCRIPTION trailer rather than
    /// at the source's end.
    stop_at_trailer: bool,
}

impl<R: Read> Lookahead<R> {
    /// Reads through to `inner` until [`fill`](Self::fill) is called.
    pub fn new(inner: R) -> Lookahead<R> {
        Lookahead {
            inner,
            ahead: Vec::new(),
            pos: 0,
            base: 0,
            filled: false,
            stop_at_trailer: false,
        }
    }

    /// Makes a read-ahead end once the bytes read end with a whole
    /// VMDESCRIPTION trailer (EOF record, trailer record, JSON of the
    /// announced length), not at the source's end: a source that keeps
    /// the connection open after its trailer (to hear the return path's
    /// `SHUT`) would otherwise never be read to its end.
    pub fn stopping_at_trailer(mut self, stop: bool) -> Lookahead<R> {
        self.stop_at_trailer = stop;
        self
    }

    /// Whether the remainder has been read ahead.
    pub fn is_filled(&self) -> bool {
        self.filled
    }

    /// Reads what `inner` has left into memory, behind `front` (a byte the
    /// caller took from this reader but has not consumed), refusing more
    /// than `limit` bytes in all: `Ok(false)` then, and the bytes read are
    /// lost (the stream cannot be parsed further).
    /// `base` is the stream offset of the first byte buffered (`front`,
    /// if any). Called again, it only moves `front` in front of what is
    /// left.
    pub(crate) fn fill(&mut self, front: Option<u8>, base: u64, limit: u64) -> io::Result<bool> {
        let mut buf = Vec::new();
        buf.extend(front);
        buf.extend_from_slice(&self.ahead[self.pos..]);
        if !self.filled {
            let room = limit.saturating_sub(buf.len() as u64);
            // One byte more than the room tells "exactly the limit" from "over".
            let mut source = (&mut self.inner).take(room.saturating_add(1));
            if self.stop_at_trailer {
                read_to_trailer(&mut source, &mut buf)?;
            } else {
                source.read_to_end(&mut buf)?;
            }
            if buf.len() as u64 > limit {
                return Ok(false);
            }
        }
        self.ahead = buf;
        self.pos = 0;
        self.base = base;
        self.filled = true;
        Ok(true)
    }

    /// The buffered bytes at stream offsets `start..end`, if they were
    /// read ahead (served already or not).
    pub fn buffered(&self, start: u64, end: u64) -> Option<&[u8]> {
        if !self.filled || start > end {
            return None;
        }
        let from = usize::try_from(start.checked_sub(self.base)?).ok()?;
        let to = usize::try_from(end - self.base).ok()?;
        self.ahead.get(from..to)
    }

    /// The bytes read ahead and not yet served.
    pub fn remaining(&self) -> &[u8] {
        &self.ahead[self.pos..]
    }
}

impl<R: Read> Read for Lookahead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.filled {
            return self.inner.read(buf);
        }
        let rest = &self.ahead[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads `source` into `buf` until its end or until `buf` ends with a
/// whole VMDESCRIPTION trailer.
fn read_to_trailer(source: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = vec![0u8; READ_AHEAD_CHUNK];
    loop {
        let n = match source.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        // The JSON ends with '}'; only then can the bytes end a trailer.
        if buf.last() == Some(&b'}') && matches!(locate_vmdesc(&mut Cursor::new(&buf[..])), Ok(Some(_))) {
            return Ok(());
        }
    }
}

/// Buffered sources stay buffered: until the read-ahead, `inner`'s buffer
/// is lent out as is (so a page can be copied from it straight into guest
/// memory); after it, the read-ahead buffer is.
impl<R: BufRead> BufRead for Lookahead<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.filled {
            return Ok(&self.ahead[self.pos..]);
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if self.filled {
            self.pos = (self.pos + amt).min(self.ahead.len());
        } else {
            self.inner.consume(amt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_through_then_from_the_buffer() -> io::Result<()> {
        let mut l = Lookahead::new(&b"abcdefgh"[..]);
        let mut two = [0u8; 2];
        l.read_exact(&mut two)?;
        assert_eq!(&two, b"ab");
        assert!(l.fill(Some(b'b'), 1, 100)?);
        assert_eq!(l.remaining(), b"bcdefgh");
        assert_eq!(l.buffered(2, 4), Some(&b"cd"[..]));
        assert_eq!(l.buffered(0, 2), None);
        let mut rest = Vec::new();
        l.read_to_end(&mut rest)?;
        assert_eq!(rest, b"bcdefgh");
        // Served bytes stay addressable; the end is the end.
        assert_eq!(l.buffered(7, 8), Some(&b"h"[..]));
        assert_eq!(l.buffered(7, 9), None);
        assert_eq!(l.read(&mut two)?, 0);
        Ok(())
    }

    #[test]
    fn lends_the_inner_buffer_then_its_own() -> io::Result<()> {
        let mut l = Lookahead::new(io::BufReader::with_capacity(3, &b"abcdefgh"[..]));
        assert_eq!(l.fill_buf()?, b"abc");
        l.consume(2);
        assert_eq!(l.fill_buf()?, b"c");
        assert!(l.fill(None, 2, 100)?);
        assert_eq!(l.fill_buf()?, b"cdefgh");
        l.consume(5);
        assert_eq!(l.fill_buf()?, b"h");
        l.consume(9);
        assert_eq!(l.fill_buf()?, b"");
        Ok(())
    }

    /// A source that hands out its bytes and then blocks (here: fails the
    /// test) instead of ending, as a socket whose peer waits for an answer.
    struct ThenHang<'a>(&'a [u8]);

    impl Read for ThenHang<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(!self.0.is_empty(), "read past the trailer");
            let n = self.0.len().min(buf.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn stops_at_a_whole_trailer_when_asked() -> io::Result<()> {
        let json = br#"{"page_size":4096,"devices":[]}"#;
        let mut stream = b"body}".to_vec();
        stream.push(0x00);
        stream.push(0x06);
        stream.extend_from_slice(&u32::try_from(json.len()).map_err(io::Error::other)?.to_be_bytes());
        stream.extend_from_slice(json);
        let mut l = Lookahead::new(ThenHang(&stream)).stopping_at_trailer(true);
        assert!(l.fill(None, 0, 1000)?);
        assert_eq!(l.remaining(), &stream[..]);
        Ok(())
    }

    #[test]
    fn refuses_more_than_the_limit() -> io::Result<()> {
        let mut l = Lookahead::new(&b"abcdef"[..]);
        assert!(!l.fill(None, 0, 5)?);
        assert!(!l.is_filled());
        let mut l = Lookahead::new(&b"abcdef"[..]);
        assert!(l.fill(None, 0, 6)?);
        assert_eq!(l.remaining(), b"abcdef");
        Ok(())
    }
}
