//! Which function sits where on one bus, placed by QEMU's rules.

use super::addr::DevFn;
use super::error::PciError;

/// What holds a device/function number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    /// Its type name (`qemu-xhci`).
    pub type_name: String,
    /// Its `id`, if it has one.
    pub id: Option<String>,
    /// Function 0 announces more functions (header type bit 7).
    pub multifunction: bool,
}

/// The 256 device/function numbers of one bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciBus {
    devfn_min: u8,
    slots: Vec<Option<Occupant>>,
}

impl PciBus {
    /// An empty bus whose automatic placement starts at `devfn_min` (QEMU's
    /// `devfn_min`: 0 on the root bus of q35, whose host bridge takes 00.0
    /// first).
    pub fn new(devfn_min: u8) -> PciBus {
        PciBus {
            devfn_min,
            slots: vec![None; 256],
        }
    }

    /// What occupies `devfn`.
    pub fn get(&self, devfn: DevFn) -> Option<&Occupant> {
        self.slots[usize::from(devfn.raw())].as_ref()
    }

    /// Every occupied number, in order.
    pub fn occupants(&self) -> impl Iterator<Item = (DevFn, &Occupant)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(d, o)| o.as_ref().map(|o| (DevFn::from_raw(d as u8), o)))
    }

    /// Places `occupant` at `requested`, or at function 0 of the first free
    /// slot from `devfn_min`, with QEMU's checks and messages: a taken
    /// number; a function above 0 beside a single-function function 0; a
    /// single-function function 0 beside populated functions; and, for a
    /// hot-plugged device, a function above 0 in a slot whose function 0
    /// is present (the guest would not see it).
    pub fn place(&mut self, requested: Option<DevFn>, occupant: Occupant, hotplugged: bool) -> Result<DevFn, PciError> {
        let name = occupant.type_name.clone();
        let devfn = match requested {
            None => (usize::from(self.devfn_min)..256)
                .step_by(usize::from(DevFn::FUNCTIONS))
                .find(|&d| self.slots[d].is_none())
                .map(|d| DevFn::from_raw(d as u8))
                .ok_or_else(|| {
                    PciError::Placement(format!(
                        "PCI: no slot/function available for {name}, all in use or reserved"
                    ))
                })?,
            Some(d) => d,
        };
        if let Some(other) = self.get(devfn) {
            return Err(PciError::Placement(format!(
                "PCI: slot {} function {} not available for {name}, in use by {},id={}",
                devfn.slot(),
                devfn.func(),
                other.type_name,
                // QEMU prints a missing id with printf's "(null)".
                other.id.as_deref().unwrap_or("(null)")
            )));
        }
        let slot = devfn.slot();
        let f0 = DevFn::new(slot, 0).and_then(|d| self.get(d));
        if devfn.func() != 0 {
            if let Some(f0) = f0 {
                if hotplugged {
                    return Err(PciError::Placement(format!(
                        "PCI: slot {slot} function 0 already occupied by {}, new func {name} cannot be exposed to guest.",
                        f0.type_name
                    )));
                }
                if !f0.multifunction {
                    return Err(PciError::Placement(format!(
                        "PCI: single function device can't be populated in function {slot:x}.{:x}",
                        devfn.func()
                    )));
                }
            }
        } else if !occupant.multifunction
            && let Some(func) =
                (1..DevFn::FUNCTIONS).find(|&f| DevFn::new(slot, f).is_some_and(|d| self.get(d).is_some()))
        {
            return Err(PciError::Placement(format!(
                "PCI: {slot:x}.0 indicates single function, but {slot:x}.{func:x} is already populated."
            )));
        }
        self.slots[usize::from(devfn.raw())] = Some(occupant);
        Ok(devfn)
    }

    /// Frees `devfn`; returns what was there.
    pub fn remove(&mut self, devfn: DevFn) -> Option<Occupant> {
        self.slots[usize::from(devfn.raw())].take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(type_name: &str, id: &str, multifunction: bool) -> Occupant {
        Occupant {
            type_name: type_name.into(),
            id: (!id.is_empty()).then(|| id.into()),
            multifunction,
        }
    }

    fn at(text: &str) -> Option<DevFn> {
        text.parse().ok()
    }

    #[test]
    fn automatic_placement_takes_the_first_free_slot() {
        let mut bus = PciBus::new(0);
        assert_eq!(bus.place(None, dev("mch", "", false), false).map(|d| d.raw()), Ok(0));
        assert_eq!(
            bus.place(at("2"), dev("vga", "", false), false).map(|d| d.slot()),
            Ok(2)
        );
        assert_eq!(
            bus.place(None, dev("qemu-xhci", "usb", false), false).map(|d| d.slot()),
            Ok(1)
        );
        assert_eq!(
            bus.place(None, dev("e1000e", "", false), false).map(|d| d.slot()),
            Ok(3)
        );
        assert_eq!(bus.occupants().count(), 4);
    }

    #[test]
    fn qemus_refusals() {
        let mut bus = PciBus::new(0);
        let _ = bus.place(at("3"), dev("qemu-xhci", "usb0", false), false);
        assert_eq!(
            bus.place(at("3"), dev("usb-ehci", "", false), false),
            Err(PciError::Placement(
                "PCI: slot 3 function 0 not available for usb-ehci, in use by qemu-xhci,id=usb0".into()
            ))
        );
        assert_eq!(
            bus.place(at("3.1"), dev("x", "", false), false),
            Err(PciError::Placement(
                "PCI: single function device can't be populated in function 3.1".into()
            ))
        );
        assert_eq!(
            bus.place(at("3.1"), dev("x", "", false), true),
            Err(PciError::Placement(
                "PCI: slot 3 function 0 already occupied by qemu-xhci, new func x cannot be exposed to guest.".into()
            ))
        );
        let _ = bus.place(at("4.2"), dev("f2", "", false), false);
        assert_eq!(
            bus.place(at("4"), dev("f0", "", false), false),
            Err(PciError::Placement(
                "PCI: 4.0 indicates single function, but 4.2 is already populated.".into()
            ))
        );
        assert!(bus.place(at("4"), dev("f0", "", true), false).is_ok());
        assert_eq!(
            bus.place(at("4.2"), dev("f2b", "", true), false),
            Err(PciError::Placement(
                "PCI: slot 4 function 2 not available for f2b, in use by f2,id=(null)".into()
            ))
        );
        assert_eq!(
            bus.remove(DevFn::from_raw(0x18)).and_then(|o| o.id),
            Some("usb0".into())
        );
        assert!(bus.place(at("3"), dev("usb-ehci", "", false), false).is_ok());
    }

    #[test]
    fn a_full_bus_says_so() {
        let mut bus = PciBus::new(0);
        for s in 0..32 {
            let _ = bus.place(DevFn::new(s, 0), dev("d", "", false), false);
        }
        assert_eq!(
            bus.place(None, dev("one-more", "", false), false),
            Err(PciError::Placement(
                "PCI: no slot/function available for one-more, all in use or reserved".into()
            ))
        );
    }
}
