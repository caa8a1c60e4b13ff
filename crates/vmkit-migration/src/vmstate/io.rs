//! Offset-counting reader (with peeking) and writer for VMState bodies.
//!
//! The subsection loop has to look at bytes that may belong to an outer
//! struct or to the next section, so the reader peeks; the peeked bytes stay
//! in the reader, which is itself a [`Read`]: keep using it after a decode,
//! or take the leftover with [`VmReader::into_parts`].

use std::io::{self, Read, Write};

/// A reader that counts the absolute offset of the next byte and can peek.
#[derive(Debug)]
pub struct VmReader<R> {
    inner: R,
    offset: u64,
    peeked: Vec<u8>,
    peek_pos: usize,
}

impl<R: Read> VmReader<R> {
    /// Wraps `inner`, whose next byte is at absolute `start_offset`.
    pub fn new(inner: R, start_offset: u64) -> Self {
        VmReader {
            inner,
            offset: start_offset,
            peeked: Vec::new(),
            peek_pos: 0,
        }
    }

    /// The absolute offset of the next byte to be read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Up to `n` upcoming bytes without consuming them (fewer at the end of
    /// the input).
    pub fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.peek_pos > 0 {
            self.peeked.drain(..self.peek_pos);
            self.peek_pos = 0;
        }
        while self.peeked.len() < n {
            let have = self.peeked.len();
            self.peeked.resize(n, 0);
            match self.inner.read(&mut self.peeked[have..]) {
                Ok(0) => {
                    self.peeked.truncate(have);
                    break;
                }
                Ok(got) => self.peeked.truncate(have + got),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.peeked.truncate(have),
                Err(e) => {
                    self.peeked.truncate(have);
                    return Err(e);
                }
            }
        }
        let end = n.min(self.peeked.len());
        Ok(&self.peeked[..end])
    }

    /// Fills `buf` as far as the input allows; returns how many bytes were
    /// read (less than `buf.len()` only at the end of the input).
    pub fn read_up_to(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(got) => done += got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// The inner reader and the bytes peeked but not consumed.
    pub fn into_parts(mut self) -> (R, Vec<u8>) {
        let rest = self.peeked.split_off(self.peek_pos);
        (self.inner, rest)
    }
}

impl<R: Read> Read for VmReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = if self.peek_pos < self.peeked.len() {
            let avail = &self.peeked[self.peek_pos..];
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            self.peek_pos += n;
            if self.peek_pos == self.peeked.len() {
                self.peeked.clear();
                self.peek_pos = 0;
            }
            n
        } else {
            self.inner.read(buf)?
        };
        self.offset += got as u64;
        Ok(got)
    }
}

/// A writer that counts the absolute offset of the next byte.
#[derive(Debug)]
pub struct VmWriter<W> {
    inner: W,
    offset: u64,
}

impl<W: Write> VmWriter<W> {
    /// Wraps `inner`, whose next byte goes to absolute `start_offset`.
    pub fn new(inner: W, start_offset: u64) -> Self {
        VmWriter {
            inner,
            offset: start_offset,
        }
    }

    /// The absolute offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The inner writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for VmWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
