//! `qemu-xhci` and its USB devices in a q35-like board, driven as a guest
//! drives them: the function at 00:01.0 with its section named after it,
//! a No-op command whose completion event is signalled by MSI-X into the
//! board's MSI window, a DMA reaching the controller's own BAR refused
//! (no recursion), and the USB devices' refusals in QEMU's words.
//!
//! `/machine` is process-wide: every test holds `LOCK` and builds the
//! board afresh.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use vmkit_devices::glue::msi::MsiRecord;
use vmkit_devices::glue::{Q35Board, Q35Options, build_q35};
use vmkit_memory::{AddressSpace, GuestAddr, RamBlock};
use vmkit_migration::savevm::collect_devices;
use vmkit_qom::{Object, Value, create_machine, destroy_machine, device_add, device_del};

type TestResult = Result<(), Box<dyn std::error::Error>>;

static LOCK: Mutex<()> = Mutex::new(());

const BAR0: u64 = 0xfebf_0000;
const OP: u64 = 0x40;
const RT: u64 = 0x1000;
const DB: u64 = 0x2000;
const CMD_RING: u64 = 0x10_0000;
const EV_RING: u64 = 0x11_0000;
const ERST: u64 = 0x12_0000;

struct Board {
    machine: Object,
    q35: Q35Board,
    _lock: MutexGuard<'static, ()>,
}

impl Board {
    fn new() -> Result<Board, Box<dyn std::error::Error>> {
        let lock = LOCK.lock();
        destroy_machine()?;
        let machine = create_machine("none-machine")?;
        let block = RamBlock::anonymous("pc.ram", 64 << 20)?;
        let q35 = build_q35(&machine, block, Q35Options::default())?;
        Ok(Board {
            machine,
            q35,
            _lock: lock,
        })
    }

    fn mem(&self) -> &Arc<AddressSpace> {
        &self.q35.memory.space
    }

    fn cfg_write(&self, offset: u8, size: u32, value: u64) -> TestResult {
        let io = &self.q35.io_space;
        io.write_sized(GuestAddr(0xcf8), 4, 0x8000_0800 | u64::from(offset & 0xfc))?;
        io.write_sized(GuestAddr(0xcfc + u64::from(offset & 3)), size, value)?;
        Ok(())
    }

    fn w32(&self, offset: u64, value: u64) -> TestResult {
        self.mem().write_sized(GuestAddr(BAR0 + offset), 4, value)?;
        Ok(())
    }

    fn r32(&self, offset: u64) -> Result<u64, vmkit_memory::Error> {
        self.mem().read_sized(GuestAddr(BAR0 + offset), 4)
    }

    /// BAR0 mapped, memory and bus master on, MSI-X vector 0 unmasked
    /// towards the MSI window; the controller running with its event ring
    /// at `ev_ring` and its command ring at `CMD_RING`.
    fn start(&self, ev_ring: u64) -> TestResult {
        self.cfg_write(0x10, 4, BAR0 | 4)?;
        self.cfg_write(0x14, 4, 0)?;
        self.cfg_write(0x04, 2, 0x6)?;
        self.w32(0x3000, 0xfee0_0000)?;
        self.w32(0x3004, 0)?;
        self.w32(0x3008, 0x4041)?;
        self.w32(0x300c, 0)?;
        self.cfg_write(0x92, 2, 0x8000 | 15)?; // MSI-X enable (table size is read-only)
        self.w32(OP + 0x18, CMD_RING | 1)?;
        self.w32(OP + 0x1c, 0)?;
        let mut entry = [0u8; 16];
        entry[..8].copy_from_slice(&ev_ring.to_le_bytes());
        entry[8..12].copy_from_slice(&16u32.to_le_bytes());
        self.mem().write(GuestAddr(ERST), &entry)?;
        self.w32(RT + 0x28, 1)?; // ERSTSZ
        self.w32(RT + 0x38, ev_ring)?; // ERDP
        self.w32(RT + 0x3c, 0)?;
        self.w32(RT + 0x30, ERST)?; // ERSTBA
        self.w32(RT + 0x34, 0)?;
        self.w32(RT + 0x20, 2)?; // IMAN.IE
        self.w32(OP, 0x5)?; // RS | INTE
        Ok(())
    }
}

#[test]
fn the_controller_sits_at_01_0_and_its_section_is_named_after_it() -> TestResult {
    let b = Board::new()?;
    device_add("qemu-xhci", Some("xhci"), &[])?;
    let xhci = vmkit_qom::resolve_path("/machine/peripheral/xhci", None)?;
    assert_eq!(xhci.get("addr")?, Value::Int(8));
    assert!(xhci.child("xhci-core").is_some_and(|c| c.is_realized()));
    assert!(xhci.child("xhci.0").is_some());
    let sections = collect_devices(&b.machine)?;
    assert!(sections.iter().any(|s| s.idstr == "0000:00:01.0/xhci"));
    Ok(())
}

#[test]
fn a_noop_command_completes_with_an_msi_in_the_window() -> TestResult {
    let b = Board::new()?;
    device_add("qemu-xhci", Some("xhci"), &[])?;
    b.start(EV_RING)?;
    b.q35.msi.clear();
    // No-op command (type 23), cycle 1; doorbell 0.
    let mut trb = [0u8; 16];
    trb[12..16].copy_from_slice(&(23u32 << 10 | 1).to_le_bytes());
    b.mem().write(GuestAddr(CMD_RING), &trb)?;
    b.w32(DB, 0)?;
    let mut ev = [0u8; 16];
    b.mem().read(GuestAddr(EV_RING), &mut ev)?;
    let control = u32::from_le_bytes([ev[12], ev[13], ev[14], ev[15]]);
    assert_eq!((control >> 10) & 0x3f, 33, "command completion event");
    assert_eq!(ev[11], 1, "success");
    assert_eq!(
        b.q35.msi.messages(),
        [MsiRecord {
            address: 0xfee0_0000,
            data: 0x4041
        }]
    );
    Ok(())
}

#[test]
fn an_event_ring_over_its_own_bar_is_refused_not_recursed() -> TestResult {
    let b = Board::new()?;
    device_add("qemu-xhci", Some("xhci"), &[])?;
    b.start(BAR0 + 0x2000)?;
    let mut trb = [0u8; 16];
    trb[12..16].copy_from_slice(&(23u32 << 10 | 1).to_le_bytes());
    b.mem().write(GuestAddr(CMD_RING), &trb)?;
    b.w32(DB, 0)?;
    assert_ne!(b.r32(OP + 4)? & (1 << 12), 0, "USBSTS.HCE");
    Ok(())
}

#[test]
fn usb_devices_refuse_in_qemus_words() -> TestResult {
    let _b = Board::new()?;
    let err = device_add("usb-tablet", None, &[]).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("No 'usb-bus' bus found for device 'usb-tablet'")));
    device_add(
        "qemu-xhci",
        Some("xhci"),
        &[("p2".into(), Value::UInt(1)), ("p3".into(), Value::UInt(1))],
    )?;
    let err = device_add("usb-kbd", None, &[("bus".into(), Value::Str("nope.0".into()))])
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("Bus 'nope.0' not found")));
    device_add("usb-kbd", Some("k"), &[("bus".into(), Value::Str("xhci.0".into()))])?;
    let err = device_add("usb-tablet", None, &[]).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("no free ports")));
    device_del("k")?;
    device_add("usb-tablet", Some("t"), &[("port".into(), Value::Str("1".into()))])?;
    Ok(())
}

#[test]
fn unplugging_the_controller_takes_its_usb_devices() -> TestResult {
    let _b = Board::new()?;
    device_add("qemu-xhci", Some("xhci"), &[])?;
    let kbd = device_add("usb-kbd", Some("k"), &[])?;
    let gone = device_del("xhci")?;
    let paths: Vec<(&str, Option<&str>)> = gone.iter().map(|d| (d.path.as_str(), d.id.as_deref())).collect();
    assert_eq!(
        paths,
        [
            ("/machine/peripheral/k", Some("k")),
            ("/machine/peripheral/xhci", Some("xhci"))
        ],
        "the keyboard first, the embedded core not at all"
    );
    assert!(!kbd.is_realized(), "unrealized with its controller");
    assert!(kbd.parent().is_none(), "out of the tree");
    let err = vmkit_devices::glue::usb::hid::key(&kbd, "a", true)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some(), "input to a removed keyboard is an error");
    // Deleting a USB device alone reports only it.
    device_add("qemu-xhci", Some("xhci"), &[])?;
    device_add("usb-tablet", Some("t"), &[])?;
    let gone = device_del("t")?;
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].id.as_deref(), Some("t"));
    Ok(())
}
