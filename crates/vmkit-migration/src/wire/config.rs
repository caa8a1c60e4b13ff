//! The configuration record (`0x07`): QEMU's vmsd "configuration" v1 body,
//! with no section framing.

use std::io::{Read, Write};

use super::format::{MAX_CAPABILITIES, MAX_MACHINE_NAME_LEN, RecordType};
use super::{StreamReader, StreamWriter, WireError, WireResult};

/// Subsection name of the target page bits.
pub const SUB_PAGE_BITS: &str = "configuration/target-page-bits";
/// Subsection name of the capabilities that must match.
pub const SUB_CAPABILITIES: &str = "configuration/capabilities";
/// Subsection name of the VM UUID.
pub const SUB_UUID: &str = "configuration/uuid";

/// The configuration record's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configuration {
    /// The machine type name (e.g. `pc-q35-9.2`).
    pub machine_type: String,
    /// Target page bits, when sent (absent means the target minimum).
    pub target_page_bits: Option<u32>,
    /// Capabilities that must match, when sent.
    pub capabilities: Option<Vec<String>>,
    /// The VM UUID, when sent.
    pub uuid: Option<[u8; 16]>,
}

impl Configuration {
    /// A configuration with only the machine type.
    pub fn new(machine_type: impl Into<String>) -> Configuration {
        Configuration {
            machine_type: machine_type.into(),
            ..Configuration::default()
        }
    }

    /// Whether the capabilities subsection lists `name`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities
            .as_ref()
            .is_some_and(|caps| caps.iter().any(|c| c == name))
    }

    /// Writes the record: type byte, machine type and the subsections that
    /// are set.
    pub fn write<W: Write>(&self, w: &mut StreamWriter<W>) -> WireResult<()> {
        let len = u32::try_from(self.machine_type.len())
            .ok()
            .filter(|&l| u64::from(l) <= MAX_MACHINE_NAME_LEN)
            .ok_or_else(|| WireError::BadLength {
                offset: w.offset(),
                what: "machine type name".into(),
                len: self.machine_type.len() as u64,
                max: MAX_MACHINE_NAME_LEN,
            })?;
        w.put_u8(RecordType::Configuration as u8)?;
        w.put_be32(len)?;
        w.put_bytes(self.machine_type.as_bytes())?;
        if let Some(bits) = self.target_page_bits {
            write_sub_header(w, SUB_PAGE_BITS)?;
            w.put_be32(bits)?;
        }
        if let Some(caps) = &self.capabilities {
            write_sub_header(w, SUB_CAPABILITIES)?;
            let n = u32::try_from(caps.len()).map_err(|_| WireError::BadLength {
                offset: w.offset(),
                what: "capability count".into(),
                len: caps.len() as u64,
                max: MAX_CAPABILITIES,
            })?;
            w.put_be32(n)?;
            for c in caps {
                w.put_name(c, "capability")?;
            }
        }
        if let Some(uuid) = &self.uuid {
            write_sub_header(w, SUB_UUID)?;
            w.put_bytes(uuid)?;
        }
        Ok(())
    }

    /// Reads the record body (the `0x07` byte already consumed). Unknown
    /// subsections, or subsection versions other than 1, are errors.
    pub fn read_body<R: Read>(r: &mut StreamReader<R>) -> WireResult<Configuration> {
        let len = r.read_be32("configuration machine type length")?;
        let name = r.read_bytes(u64::from(len), MAX_MACHINE_NAME_LEN, "configuration machine type")?;
        let machine_type = String::from_utf8(name).map_err(|_| WireError::Malformed {
            offset: r.offset(),
            reason: "machine type name is not UTF-8".into(),
        })?;
        let mut config = Configuration::new(machine_type);
        while r.peek_u8()? == Some(RecordType::Subsection as u8) {
            let at = r.offset();
            r.read_u8("configuration subsection")?;
            let sub = r.read_name("configuration subsection name")?;
            let version = r.read_be32("configuration subsection version")?;
            if version != 1 {
                return Err(WireError::Malformed {
                    offset: at,
                    reason: format!("configuration subsection '{sub}' version {version} (expected 1)"),
                });
            }
            let dup = || WireError::Malformed {
                offset: at,
                reason: format!("configuration subsection '{sub}' sent twice"),
            };
            match sub.as_str() {
                SUB_PAGE_BITS => {
                    if config.target_page_bits.is_some() {
                        return Err(dup());
                    }
                    config.target_page_bits = Some(r.read_be32("target page bits")?);
                }
                SUB_CAPABILITIES => {
                    if config.capabilities.is_some() {
                        return Err(dup());
                    }
                    let count_at = r.offset();
                    let count = u64::from(r.read_be32("capability count")?);
                    if count > MAX_CAPABILITIES {
                        return Err(WireError::BadLength {
                            offset: count_at,
                            what: "capability count".into(),
                            len: count,
                            max: MAX_CAPABILITIES,
                        });
                    }
                    let mut caps = Vec::new();
                    for _ in 0..count {
                        caps.push(r.read_name("capability name")?);
                    }
                    config.capabilities = Some(caps);
                }
                SUB_UUID => {
                    if config.uuid.is_some() {
                        return Err(dup());
                    }
                    let mut uuid = [0u8; 16];
                    r.read_into(&mut uuid, "uuid")?;
                    config.uuid = Some(uuid);
                }
                _ => {
                    return Err(WireError::Malformed {
                        offset: at,
                        reason: format!("unknown configuration subsection '{sub}'"),
                    });
                }
            }
        }
        Ok(config)
    }

    /// Compares the machine type with the destination's (`offset`: where the
    /// record was read, for the error).
    pub fn check_machine(&self, expected: &str, offset: u64) -> WireResult<()> {
        if self.machine_type != expected {
            return Err(WireError::ConfigurationMismatch {
                offset,
                expected: format!("machine type '{expected}'"),
                found: format!("machine type '{}'", self.machine_type),
            });
        }
        Ok(())
    }
}

fn write_sub_header<W: Write>(w: &mut StreamWriter<W>, name: &str) -> WireResult<()> {
    w.put_u8(RecordType::Subsection as u8)?;
    w.put_name(name, "subsection name")?;
    w.put_be32(1)
}
