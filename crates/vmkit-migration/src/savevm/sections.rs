//! The parts of a savevm stream that [`save`](super::save) and the
//! [`precopy`](crate::precopy) engine write alike: the preamble (header and
//! configuration), the RAM section's id, and the tail — each device's FULL
//! section, EOF and the VMDESCRIPTION trailer.

use std::io::Write;

use crate::vmstate::json::{device_entry, encode_described};
use crate::wire::format::TARGET_PAGE_SIZE;
use crate::wire::section::{SectionHeader, write_file_header, write_footer};
use crate::wire::stream::write_eof;
use crate::wire::{Configuration, StreamWriter, VmDescDevice, VmDescription, WireError};

use super::save::SaveOptions;
use super::save_set::{DeviceEntry, SaveSet};

/// The section id of the RAM section; devices follow from 2. Not 0: QEMU
/// resolves a PART/END by the first handler whose remembered load id
/// matches, and every handler a stream did not name remembers 0.
pub(crate) const RAM_SECTION_ID: u32 = 1;

/// Writes the file header and the configuration record naming the set's
/// machine type.
pub(crate) fn write_preamble<W: Write>(
    w: &mut StreamWriter<W>,
    set: &SaveSet,
    opts: &SaveOptions,
) -> crate::Result<()> {
    write_file_header(w)?;
    let mut config = Configuration::new(set.machine_type.clone());
    if opts.ignore_shared {
        // The capabilities both sides must agree on (QEMU's
        // "configuration/capabilities" subsection).
        config.capabilities = Some(vec![IGNORE_SHARED.to_owned()]);
    }
    config.write(w)?;
    Ok(())
}

/// QEMU's capability name for leaving shared RAM out of the stream.
pub const IGNORE_SHARED: &str = "x-ignore-shared";

/// One device's state, taken and encoded, waiting to be written.
struct EncodedDevice<'a> {
    entry: &'a DeviceEntry,
    version_id: u32,
    body: Vec<u8>,
    desc: VmDescDevice,
}

/// Every device's state of a set, taken and encoded in stream order
/// (descending migration priority, the set's order within one priority):
/// taken before the first of them is written, so a device that refuses to
/// save costs no stream bytes.
pub(crate) struct EncodedDevices<'a> {
    devices: Vec<EncodedDevice<'a>>,
}

impl<'a> EncodedDevices<'a> {
    /// Takes and encodes the state of every device of `set`.
    pub(crate) fn take(set: &'a SaveSet) -> crate::Result<EncodedDevices<'a>> {
        let mut order: Vec<usize> = (0..set.devices.len()).collect();
        // Highest priority first, FIFO within one priority (a stable sort).
        order.sort_by_key(|&i| std::cmp::Reverse(set.devices[i].device.description().priority()));
        let mut devices = Vec::with_capacity(order.len());
        for &i in &order {
            let dev = &set.devices[i];
            let vmsd = dev.device.description();
            let mut state = dev.device.save_vmstate().map_err(|e| dev.failed(None, e))?;
            let mut body = Vec::new();
            // Offsets in encode errors are relative to the body here.
            let (_, desc) = encode_described(&vmsd, &mut state, &mut body, 0)?;
            let entry = device_entry(&dev.idstr, dev.instance_id, &desc);
            let desc: VmDescDevice = serde_json::from_value(entry).map_err(|e| WireError::BadJson {
                offset: 0,
                reason: format!("description of '{}': {e}", dev.idstr),
            })?;
            devices.push(EncodedDevice {
                entry: dev,
                version_id: vmsd.version_id(),
                body,
                desc,
            });
        }
        Ok(EncodedDevices { devices })
    }

    /// How many devices.
    pub(crate) fn len(&self) -> usize {
        self.devices.len()
    }

    /// Writes the stream's tail: one FULL section per device (ids from
    /// [`RAM_SECTION_ID`] + 1, footers if `footers`), EOF, and the
    /// VMDESCRIPTION trailer if `vmdesc`.
    pub(crate) fn write_tail<W: Write>(
        self,
        w: &mut StreamWriter<W>,
        footers: bool,
        vmdesc: bool,
    ) -> crate::Result<()> {
        self.write_tail_marked(w, footers, vmdesc, &mut |_, _| {})
    }

    /// [`write_tail`](Self::write_tail), calling `at_section(idstr,
    /// offset)` where each device's section begins (fault triggers).
    pub(crate) fn write_tail_marked<W: Write>(
        self,
        w: &mut StreamWriter<W>,
        footers: bool,
        vmdesc: bool,
        at_section: &mut dyn FnMut(&str, u64),
    ) -> crate::Result<()> {
        let mut described = Vec::with_capacity(self.devices.len());
        for (n, dev) in self.devices.into_iter().enumerate() {
            // Section ids are u32 on the wire; more than 2^32 devices cannot exist.
            let section_id = u32::try_from(n)
                .ok()
                .and_then(|n| n.checked_add(RAM_SECTION_ID + 1))
                .unwrap_or(u32::MAX);
            at_section(&dev.entry.idstr, w.offset());
            SectionHeader::full(
                section_id,
                dev.entry.idstr.clone(),
                dev.entry.instance_id,
                dev.version_id,
            )
            .write(w)?;
            w.put_bytes(&dev.body)?;
            if footers {
                write_footer(w, section_id)?;
            }
            described.push(dev.desc);
        }
        write_eof(w)?;
        if vmdesc {
            VmDescription {
                configuration: None,
                page_size: Some(TARGET_PAGE_SIZE),
                devices: described,
            }
            .write(w)?;
        }
        Ok(())
    }
}
