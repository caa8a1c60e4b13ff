//! QEMU's return path: the messages a destination sends back to the source
//! on the same connection once the source asked for it (the
//! `OPEN_RETURN_PATH` command), each `be16 type, be16 length, data`.
//!
//! vmkit speaks the part precopy needs: `PONG` answering a `PING`, and
//! `SHUT` with the load's status, which tells the source whether the
//! destination took the stream (QEMU's `return-path` capability).

use std::io::{self, Read, Write};

/// `MIG_RP_MSG_SHUT`: no more messages; data: be32 status, 0 = the load succeeded.
pub const RP_SHUT: u16 = 1;
/// `MIG_RP_MSG_PONG`: the answer to a `PING`; data: be32 the ping's value.
pub const RP_PONG: u16 = 2;
/// The longest message data vmkit reads (QEMU's page requests carry an
/// idstr; nothing longer exists).
pub const MAX_RP_DATA: u16 = 512;

/// One return-path message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpMessage {
    /// The destination is done: 0 if it loaded the stream, else an error.
    Shut(u32),
    /// The answer to a `PING` with this value.
    Pong(u32),
    /// A message precopy does not use (postcopy page requests...).
    Other {
        /// Its type.
        kind: u16,
        /// Its data.
        data: Vec<u8>,
    },
}

impl RpMessage {
    /// Writes the message and flushes.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        let (kind, data) = match self {
            RpMessage::Shut(v) => (RP_SHUT, v.to_be_bytes().to_vec()),
            RpMessage::Pong(v) => (RP_PONG, v.to_be_bytes().to_vec()),
            RpMessage::Other { kind, data } => (*kind, data.clone()),
        };
        let len = u16::try_from(data.len()).map_err(|_| io::Error::other("return-path message too long"))?;
        let mut buf = Vec::with_capacity(4 + data.len());
        buf.extend_from_slice(&kind.to_be_bytes());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&data);
        w.write_all(&buf)?;
        w.flush()
    }

    /// Reads one message; a clean end of input before it is
    /// `UnexpectedEof`, a malformed one `InvalidData`.
    pub fn read_from(r: &mut dyn Read) -> io::Result<RpMessage> {
        let mut head = [0u8; 4];
        r.read_exact(&mut head)?;
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]);
        if len > MAX_RP_DATA {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("return-path message {kind} of {len} bytes (at most {MAX_RP_DATA})"),
            ));
        }
        let mut data = vec![0u8; usize::from(len)];
        r.read_exact(&mut data)?;
        let be32 = |data: &[u8]| -> io::Result<u32> {
            <[u8; 4]>::try_from(data).map(u32::from_be_bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("return-path message {kind} carries {} bytes, not 4", data.len()),
                )
            })
        };
        Ok(match kind {
            RP_SHUT => RpMessage::Shut(be32(&data)?),
            RP_PONG => RpMessage::Pong(be32(&data)?),
            _ => RpMessage::Other { kind, data },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() -> io::Result<()> {
        let mut buf = Vec::new();
        RpMessage::Pong(1).write_to(&mut buf)?;
        RpMessage::Shut(0).write_to(&mut buf)?;
        assert_eq!(buf, [0, 2, 0, 4, 0, 0, 0, 1, 0, 1, 0, 4, 0, 0, 0, 0]);
        let mut r = buf.as_slice();
        assert_eq!(RpMessage::read_from(&mut r)?, RpMessage::Pong(1));
        assert_eq!(RpMessage::read_from(&mut r)?, RpMessage::Shut(0));
        assert_eq!(
            RpMessage::read_from(&mut r).map_err(|e| e.kind()),
            Err(io::ErrorKind::UnexpectedEof)
        );
        let short: &[u8] = &[0, 1, 0, 2, 0, 0];
        assert_eq!(
            RpMessage::read_from(&mut &*short).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData)
        );
        let long: &[u8] = &[0, 9, 0xff, 0xff];
        assert_eq!(
            RpMessage::read_from(&mut &*long).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData)
        );
        Ok(())
    }
}
