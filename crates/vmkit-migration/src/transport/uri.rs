//! [`Transport`]: a stream's endpoint as QEMU's `migrate` and `-incoming`
//! name it, parsed from and printed as its URI.

use std::path::PathBuf;
use std::str::FromStr;

use super::TransportError;

/// A stream endpoint, as QEMU's `migrate` URI (outgoing) or `-incoming`
/// URI (incoming) names it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// `file:PATH[,offset=N]`: a file, FIFO, device or Unix socket at
    /// `PATH`; the stream starts `offset` bytes into a regular file (the
    /// bytes before it are kept).
    File {
        /// The path.
        path: PathBuf,
        /// Where the stream starts in the file (0 without `,offset=`).
        offset: u64,
    },
    /// `exec:CMD`: the standard input (outgoing) or output (incoming) of
    /// `sh -c CMD`.
    Exec(String),
    /// `unix:PATH`: a Unix stream socket, connected to (outgoing) or
    /// listened on (incoming).
    Unix(PathBuf),
    /// `tcp:HOST:PORT`: a TCP connection. `HOST` is an IPv4 address, an
    /// IPv6 address (written in brackets in the URI, kept without them
    /// here) or a name to resolve; only loopback addresses are used unless
    /// the caller allows others ([`OpenOptions::allow_remote`](super::OpenOptions::allow_remote)).
    Tcp {
        /// The host, without brackets.
        host: String,
        /// The port; 0 when listening lets the system choose one.
        port: u16,
    },
    /// `fd:NAME`: a descriptor the caller registered under `NAME`
    /// ([`FdRegistry`](super::FdRegistry), QEMU's `getfd`).
    Fd(String),
}

impl Transport {
    /// `file:PATH` with no offset.
    pub fn file(path: impl Into<PathBuf>) -> Transport {
        Transport::File {
            path: path.into(),
            offset: 0,
        }
    }
}

/// What every URI error message lists.
const EXPECTED: &str = "expected unix:PATH, tcp:HOST:PORT, fd:NAME, file:PATH or exec:CMD";

/// URI schemes QEMU knows that vmkit does not carry yet.
const NOT_YET: &[&str] = &["rdma", "vsock", "channels", "x-rdma"];

impl FromStr for Transport {
    type Err = TransportError;

    fn from_str(uri: &str) -> Result<Transport, TransportError> {
        let bad = |reason: String| TransportError::BadUri {
            uri: uri.to_owned(),
            reason,
        };
        let (scheme, rest) = uri
            .split_once(':')
            .ok_or_else(|| bad(format!("no scheme ({EXPECTED})")))?;
        match scheme {
            "file" => parse_file(rest).map_err(bad),
            "exec" if rest.trim().is_empty() => Err(bad("empty command".into())),
            "exec" => Ok(Transport::Exec(rest.to_owned())),
            "unix" if rest.is_empty() => Err(bad("empty path".into())),
            "unix" => Ok(Transport::Unix(PathBuf::from(rest))),
            "tcp" => parse_tcp(rest).map_err(bad),
            "fd" if rest.is_empty() => Err(bad("empty descriptor name".into())),
            "fd" => Ok(Transport::Fd(rest.to_owned())),
            s if NOT_YET.contains(&s) => Err(TransportError::Unsupported { scheme: s.to_owned() }),
            _ => Err(bad(format!("unknown scheme '{scheme}:' ({EXPECTED})"))),
        }
    }
}

/// `PATH[,offset=N]`, the offset a byte count as QEMU takes it: decimal or
/// `0x` hexadecimal, with an optional binary suffix `K`, `M`, `G`, `T`.
fn parse_file(rest: &str) -> Result<Transport, String> {
    const KEY: &str = ",offset=";
    let (path, offset) = match rest.rfind(KEY) {
        Some(cut) => (&rest[..cut], Some(&rest[cut + KEY.len()..])),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err("empty path".into());
    }
    let offset = match offset {
        None => 0,
        Some(text) => parse_size(text).ok_or_else(|| format!("bad offset '{text}'"))?,
    };
    Ok(Transport::File {
        path: PathBuf::from(path),
        offset,
    })
}

fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        b'T' | b't' => (&text[..text.len() - 1], 40),
        b'B' | b'b' => (&text[..text.len() - 1], 0),
        _ => (text, 0),
    };
    let value = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()?
        }
        Some(_) => return None,
        None if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse::<u64>().ok()?,
        None => return None,
    };
    value.checked_mul(1u64 << shift)
}

/// `HOST:PORT`, `[IPV6]:PORT`.
fn parse_tcp(rest: &str) -> Result<Transport, String> {
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "unclosed '[' (expected tcp:[IPV6]:PORT)".to_string())?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("'{host}' in brackets is not an IPv6 address"));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| "no port after ']' (expected tcp:[IPV6]:PORT)".to_string())?;
        (host, port)
    } else {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| "no port (expected tcp:HOST:PORT)".to_string())?;
        if host.contains(':') {
            return Err(format!(
                "IPv6 address '{host}' must be in brackets (tcp:[{host}]:{port})"
            ));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("empty host (listen on 127.0.0.1 or [::1]; on every interface with 0.0.0.0 or [::])".into());
    }
    if port.is_empty() {
        return Err("empty port".into());
    }
    let port = port
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| port.parse::<u16>().ok())
        .flatten()
        .ok_or_else(|| format!("bad port '{port}' (0 to 65535)"))?;
    Ok(Transport::Tcp {
        host: host.to_owned(),
        port,
    })
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::File { path, offset: 0 } => write!(f, "file:{}", path.display()),
            Transport::File { path, offset } => write!(f, "file:{},offset={offset}", path.display()),
            Transport::Exec(command) => write!(f, "exec:{command}"),
            Transport::Unix(path) => write!(f, "unix:{}", path.display()),
            Transport::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Transport::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Transport::Fd(name) => write!(f, "fd:{name}"),
        }
    }
}
