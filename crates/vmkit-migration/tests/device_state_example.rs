//! How a Rust device model implements the device-state contract, shown on a
//! small example: a countdown timer with a FIFO of pending interrupts.
//!
//! The model keeps its registers as plain data (`TimerRegs`); the typed
//! migratable state is that struct; one VMState description lays it out;
//! `DeviceState` gives and takes it; the QOM glue is one
//! `register_device_model` call, with the model kept as the object's user
//! data. Saving and restoring a machine then needs nothing else.

use std::sync::{Arc, Once};

use parking_lot::Mutex;
use vmkit_migration::Error;
use vmkit_migration::device_state::{DeviceState, MigrationState, StateError};
use vmkit_migration::savevm::{
    RestoreOptions, SaveOptions, SaveSet, SavevmError, collect_devices, register_device_model, restore, save,
};
use vmkit_migration::vmstate::{ArrayLen, FieldKind, VmStateDescription, VmStateError, VmStruct, VmValue};
use vmkit_qom::{Object, ObjectRef, TypeInfo, root};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TYPE: &str = "example-timer";
const FIFO_DEPTH: usize = 4;

/// The timer's running mode; the state refuses values it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Stopped = 0,
    OneShot = 1,
    Periodic = 2,
}

impl TryFrom<u8> for Mode {
    type Error = StateError;
    fn try_from(v: u8) -> Result<Mode, StateError> {
        match v {
            0 => Ok(Mode::Stopped),
            1 => Ok(Mode::OneShot),
            2 => Ok(Mode::Periodic),
            other => Err(StateError::field("mode", format!("{other} is not a timer mode"))),
        }
    }
}

/// The registers that migrate: plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TimerRegs {
    mode: Mode,
    reload: u32,
    counter: u32,
    /// Pending interrupt vectors, oldest first (at most `FIFO_DEPTH`).
    pending: Vec<u8>,
}

impl MigrationState for TimerRegs {
    fn to_vmstate(&self) -> VmStruct {
        VmStruct::new()
            .with("mode", (self.mode as u8).into())
            .with("reload", self.reload.into())
            .with("counter", self.counter.into())
            .with("npending", (self.pending.len() as u8).into())
            .with(
                "pending",
                VmValue::Array(self.pending.iter().map(|&v| v.into()).collect()),
            )
    }

    fn from_vmstate(s: &VmStruct) -> Result<TimerRegs, StateError> {
        let pending = s
            .get("pending")
            .and_then(VmValue::as_array)
            .ok_or_else(|| StateError::field("pending", "missing"))?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_u64()
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or_else(|| StateError::field(format!("pending[{i}]"), "not a vector"))
            })
            .collect::<Result<Vec<u8>, _>>()?;
        if pending.len() > FIFO_DEPTH {
            return Err(StateError::field(
                "npending",
                format!("{} is over {FIFO_DEPTH}", pending.len()),
            ));
        }
        Ok(TimerRegs {
            mode: Mode::try_from(s.field::<u8>("mode")?)?,
            reload: s.field("reload")?,
            counter: s.field("counter")?,
            pending,
        })
    }
}

fn timer_vmsd() -> Result<Arc<VmStateDescription>, VmStateError> {
    VmStateDescription::builder("example-timer")
        .version(1)
        .simple("mode", FieldKind::U8)
        .simple("reload", FieldKind::U32)
        .simple("counter", FieldKind::U32)
        .simple("npending", FieldKind::U8)
        .simple(
            "pending",
            FieldKind::Array {
                elem: Box::new(FieldKind::U8),
                len: ArrayLen::Field("npending".into()),
            },
        )
        .build()
}

/// The device model: its registers behind a lock (MMIO would reach them
/// through the same lock).
struct Timer {
    vmsd: Arc<VmStateDescription>,
    regs: Mutex<TimerRegs>,
}

impl DeviceState for Timer {
    type State = TimerRegs;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }

    fn save_state(&self) -> Result<TimerRegs, StateError> {
        Ok(self.regs.lock().clone())
    }

    fn check_state(&self, regs: &TimerRegs, _version_id: u32) -> Result<(), StateError> {
        if regs.counter > regs.reload && regs.mode != Mode::Stopped {
            return Err(StateError::field(
                "counter",
                "a running counter is above its reload value",
            ));
        }
        Ok(())
    }

    fn load_state(&self, regs: TimerRegs, _version_id: u32) -> Result<(), StateError> {
        *self.regs.lock() = regs;
        Ok(())
    }
}

fn register() -> TestResult {
    static ONCE: Once = Once::new();
    let mut result: TestResult = Ok(());
    ONCE.call_once(|| {
        result = (|| -> TestResult {
            TypeInfo::new(TYPE)
                .parent("device")
                .instance_init(|obj| {
                    let vmsd = timer_vmsd()
                        .map_err(|e| vmkit_qom::Error::hook_message("instance_init", obj.describe(), e.to_string()))?;
                    obj.set_user_data(Arc::new(Timer {
                        vmsd,
                        regs: Mutex::new(TimerRegs {
                            mode: Mode::Stopped,
                            reload: 0,
                            counter: 0,
                            pending: Vec::new(),
                        }),
                    }))
                })
                .register()?;
            register_device_model::<Timer>(TYPE, timer_vmsd()?)?;
            Ok(())
        })();
    });
    result
}

fn model(obj: &Object) -> Result<Arc<Timer>, Box<dyn std::error::Error>> {
    let data = obj.user_data().ok_or("no model")?;
    data.downcast::<Timer>().map_err(|_| "another model".into())
}

/// A board at `/name` with two realized timers.
fn board(name: &str) -> Result<(ObjectRef, Vec<ObjectRef>), Box<dyn std::error::Error>> {
    register()?;
    let board = Object::new("container")?;
    root().add_child(name, &board)?;
    let mut timers = Vec::new();
    for child in ["t0", "t1"] {
        let dev = Object::new(TYPE)?;
        board.add_child(child, &dev)?;
        dev.realize()?;
        timers.push(dev);
    }
    Ok((board, timers))
}

fn teardown(board: ObjectRef, devs: Vec<ObjectRef>) -> TestResult {
    for d in &devs {
        d.unparent()?;
    }
    board.unparent()?;
    Ok(())
}

fn save_board(board: &Object) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    save(
        &SaveSet::new("m", Vec::new(), collect_devices(board)?),
        &mut out,
        &SaveOptions::default(),
    )?;
    Ok(out)
}

/// Restores `stream` into the timers below `board`.
fn restore_board(
    board: &Object,
    stream: &[u8],
) -> Result<Result<vmkit_migration::savevm::RestoreStats, Error>, Box<dyn std::error::Error>> {
    let set = SaveSet::new("m", Vec::new(), collect_devices(board)?);
    Ok(restore(&set, stream, &RestoreOptions::default()))
}

#[test]
fn the_typed_state_round_trips_through_a_saved_machine() -> TestResult {
    let (src, src_devs) = board("example-src")?;
    let regs = TimerRegs {
        mode: Mode::Periodic,
        reload: 0x3005_3005,
        // Marker bytes in the data must not confuse the decoder.
        counter: 0x0530,
        pending: vec![0x05, 0x30, 0x21],
    };
    *model(&src_devs[1])?.regs.lock() = regs.clone();
    let stream = save_board(&src)?;

    let (dst, dst_devs) = board("example-dst")?;
    let stats = restore_board(&dst, &stream)??;
    assert_eq!(stats.devices, 2);
    assert_eq!(*model(&dst_devs[1])?.regs.lock(), regs);
    assert_eq!(model(&dst_devs[0])?.regs.lock().mode, Mode::Stopped);
    teardown(src, src_devs)?;
    teardown(dst, dst_devs)
}

#[test]
fn a_state_the_device_refuses_names_section_field_and_offset_and_changes_nothing() -> TestResult {
    let (src, src_devs) = board("example-bad-src")?;
    // A mode the typed state does not know, in the second section.
    let bad = VmStruct::new()
        .with("mode", VmValue::UInt(9))
        .with("reload", VmValue::UInt(1))
        .with("counter", VmValue::UInt(0))
        .with("npending", VmValue::UInt(0))
        .with("pending", VmValue::Array(Vec::new()));
    let good = TimerRegs::from_vmstate(&bad.clone().with("mode", VmValue::UInt(1)))?;
    *model(&src_devs[0])?.regs.lock() = good.clone();
    // Write the bad value straight into the encoded stream: the model
    // itself can never hold it.
    let mut stream = save_board(&src)?;
    let mode_offset = find_mode_byte(&stream, 1)?;
    stream[mode_offset] = 9;

    let (dst, dst_devs) = board("example-bad-dst")?;
    let before: Vec<TimerRegs> = dst_devs
        .iter()
        .map(|d| model(d).map(|m| m.regs.lock().clone()))
        .collect::<Result<_, _>>()?;
    let err = restore_board(&dst, &stream)?.err().ok_or("accepted")?;
    let Error::Savevm(SavevmError::Device {
        idstr,
        instance_id,
        offset,
        source,
    }) = &err
    else {
        return Err(format!("wrong error: {err}").into());
    };
    assert_eq!((idstr.as_str(), *instance_id), ("example-timer", 1));
    assert_eq!(source.path(), Some("mode"));
    assert!(offset.is_some_and(|o| (o as usize) < mode_offset), "{offset:?}");
    assert!(err.to_string().contains("9 is not a timer mode"), "{err}");
    // Staged, then refused: instance 0 loaded nothing either.
    let after: Vec<TimerRegs> = dst_devs
        .iter()
        .map(|d| model(d).map(|m| m.regs.lock().clone()))
        .collect::<Result<_, _>>()?;
    assert_eq!(before, after);
    drop(bad);
    teardown(src, src_devs)?;
    teardown(dst, dst_devs)
}

#[test]
fn a_load_the_model_refuses_is_a_field_error() -> TestResult {
    let (src, src_devs) = board("example-refuse-src")?;
    *model(&src_devs[1])?.regs.lock() = TimerRegs {
        mode: Mode::Stopped,
        reload: 10,
        counter: 50,
        pending: Vec::new(),
    };
    let mut stream = save_board(&src)?;
    // Stopped → one-shot turns a parked counter into an impossible one.
    let mode_offset = find_mode_byte(&stream, 1)?;
    stream[mode_offset] = 1;
    let (dst, dst_devs) = board("example-refuse-dst")?;
    *model(&dst_devs[0])?.regs.lock() = TimerRegs {
        mode: Mode::OneShot,
        reload: 7,
        counter: 7,
        pending: vec![1],
    };
    let err = restore_board(&dst, &stream)?.err().ok_or("accepted")?;
    assert!(
        matches!(&err, Error::Savevm(SavevmError::Device { source, .. }) if source.path() == Some("counter")),
        "{err}"
    );
    // Every check runs before any load: instance 0, which comes first and
    // whose state was fine, kept its own.
    assert_eq!(model(&dst_devs[0])?.regs.lock().pending, [1]);
    teardown(src, src_devs)?;
    teardown(dst, dst_devs)
}

/// The offset of the `mode` byte of instance `instance` in `stream`: the
/// byte after its FULL section header (type 0x04, id, idstr, instance,
/// version).
fn find_mode_byte(stream: &[u8], instance: u32) -> Result<usize, Box<dyn std::error::Error>> {
    let idstr = b"example-timer";
    let mut header = vec![idstr.len() as u8];
    header.extend_from_slice(idstr);
    header.extend_from_slice(&instance.to_be_bytes());
    header.extend_from_slice(&1u32.to_be_bytes());
    let at = stream
        .windows(header.len())
        .position(|w| w == header.as_slice())
        .ok_or("section header not found")?;
    Ok(at + header.len())
}
