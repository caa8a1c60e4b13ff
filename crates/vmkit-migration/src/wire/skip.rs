//! [`VmDescBodySkipper`]: consumes device (FULL) bodies by walking their
//! VMDESCRIPTION entries, as `analyze-migration.py` does.

use std::collections::HashMap;
use std::io::Read;

use super::format::{RecordType, SectionKind};
use super::section::SectionHeader;
use super::stream::SectionBodyHandler;
use super::vmdesc::{VmDescField, VmDescStruct, VmDescription};
use super::{StreamReader, WireError, WireResult};

/// Statistics of a skipper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipStats {
    /// Device bodies consumed.
    pub bodies: u64,
    /// Subsections consumed.
    pub subsections: u64,
    /// Body bytes consumed.
    pub bytes: u64,
}

/// A [`SectionBodyHandler`] for FULL sections that has no device models:
/// it walks the device's field list from the description, skipping each
/// field's `size` bytes (× `array_len`), descending into nested `struct`s,
/// and expects exactly the subsections the description lists
/// (`0x05`, name, be32 version, body), in order.
#[derive(Debug, Clone)]
pub struct VmDescBodySkipper {
    devices: HashMap<(String, u32), DeviceDesc>,
    stats: SkipStats,
}

#[derive(Debug, Clone)]
struct DeviceDesc {
    version: u32,
    body: VmDescStruct,
    old_style_size: Option<u64>,
}

struct Walk<'a> {
    idstr: &'a str,
    stats: &'a mut SkipStats,
}

impl VmDescBodySkipper {
    /// A skipper for the devices of `desc`.
    pub fn new(desc: &VmDescription) -> VmDescBodySkipper {
        let devices = desc
            .devices
            .iter()
            .map(|d| {
                (
                    (d.name.clone(), d.instance_id),
                    DeviceDesc {
                        version: d.version,
                        body: VmDescStruct {
                            vmsd_name: d.vmsd_name.clone(),
                            version: d.version,
                            fields: d.fields.clone(),
                            subsections: d.subsections.clone(),
                        },
                        old_style_size: d.size.filter(|_| d.fields.is_empty()),
                    },
                )
            })
            .collect();
        VmDescBodySkipper {
            devices,
            stats: SkipStats::default(),
        }
    }

    /// What was consumed so far.
    pub fn stats(&self) -> SkipStats {
        self.stats
    }

    /// Consumes the body of the FULL section `header` (read at `offset`).
    pub fn skip_body<R: Read>(
        &mut self,
        header: &SectionHeader,
        offset: u64,
        r: &mut StreamReader<R>,
    ) -> WireResult<()> {
        let key = (header.idstr.clone(), header.instance_id);
        let Some(dev) = self.devices.get(&key).filter(|_| header.kind == SectionKind::Full) else {
            return Err(WireError::UnknownSection {
                offset,
                section_id: header.section_id,
                idstr: header.idstr.clone(),
                instance_id: header.instance_id,
            });
        };
        if dev.version != header.version_id {
            return Err(WireError::BadBody {
                offset,
                idstr: header.idstr.clone(),
                reason: format!(
                    "version {} in the stream, {} in the description",
                    header.version_id, dev.version
                ),
            });
        }
        let start = r.offset();
        let mut walk = Walk {
            idstr: &header.idstr,
            stats: &mut self.stats,
        };
        if let Some(size) = dev.old_style_size {
            r.skip(size, "old-style device body")?;
        } else {
            walk.walk_struct(r, &dev.body)?;
        }
        if r.peek_u8()? == Some(RecordType::Subsection as u8) {
            return Err(WireError::BadBody {
                offset: r.offset(),
                idstr: header.idstr.clone(),
                reason: "subsection not listed in the description".into(),
            });
        }
        self.stats.bodies += 1;
        self.stats.bytes += r.offset() - start;
        Ok(())
    }
}

impl Walk<'_> {
    fn bad(&self, offset: u64, reason: String) -> WireError {
        WireError::BadBody {
            offset,
            idstr: self.idstr.to_owned(),
            reason,
        }
    }

    fn walk_struct<R: Read>(&mut self, r: &mut StreamReader<R>, s: &VmDescStruct) -> WireResult<()> {
        for f in &s.fields {
            self.walk_field(r, f)?;
        }
        for sub in &s.subsections {
            let at = r.offset();
            let b = r.read_u8("subsection marker")?;
            if b != RecordType::Subsection as u8 {
                return Err(self.bad(
                    at,
                    format!("expected subsection '{}', found byte {b:#04x}", sub.vmsd_name),
                ));
            }
            let name = r.read_name("subsection name")?;
            if name != sub.vmsd_name {
                return Err(self.bad(at, format!("expected subsection '{}', found '{name}'", sub.vmsd_name)));
            }
            let version = r.read_be32("subsection version")?;
            if version != sub.version {
                return Err(self.bad(
                    at,
                    format!("subsection '{name}' version {version}, described {}", sub.version),
                ));
            }
            self.walk_struct(r, sub)?;
            self.stats.subsections += 1;
        }
        Ok(())
    }

    fn walk_field<R: Read>(&mut self, r: &mut StreamReader<R>, f: &VmDescField) -> WireResult<()> {
        let count = f.array_len.unwrap_or(1);
        match &f.nested {
            Some(s) => {
                for _ in 0..count {
                    let before = r.offset();
                    self.walk_struct(r, s)?;
                    if r.offset() == before {
                        // Empty elements: the rest are empty too.
                        break;
                    }
                }
                Ok(())
            }
            None => {
                let at = r.offset();
                let total = f
                    .size
                    .checked_mul(count)
                    .ok_or_else(|| self.bad(at, format!("field '{}': size overflow", f.name)))?;
                r.skip(total, &f.name)
            }
        }
    }
}

impl<R: Read> SectionBodyHandler<R> for VmDescBodySkipper {
    fn section_body(&mut self, header: &SectionHeader, offset: u64, r: &mut StreamReader<R>) -> crate::Result<()> {
        self.skip_body(header, offset, r)?;
        Ok(())
    }
}
