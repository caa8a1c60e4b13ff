//! Device types declare a VMState; `collect_devices` finds the realized
//! devices of a tree and numbers them in path order.

use std::sync::Arc;

use parking_lot::Mutex;
use vmkit_migration::analyze::analyze;
use vmkit_migration::device_state::{DeviceState, MigrationState, StateError};
use vmkit_migration::savevm::{
    RestoreOptions, SaveOptions, SaveSet, SavevmError, collect_devices, register_device_model, register_device_path,
    register_device_vmstate, restore, save,
};
use vmkit_migration::vmstate::{FieldKind, VmStateDescription, VmStruct, VmValue};
use vmkit_migration::wire::ParserOptions;
use vmkit_qom::{Object, ObjectRef, TypeInfo, root};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TYPE: &str = "savevm-test-counter";

/// The device model kept as the object's user data: one counter.
struct Counter {
    vmsd: Arc<VmStateDescription>,
    count: Mutex<u64>,
}

impl DeviceState for Counter {
    type State = CounterState;

    fn vmsd(&self) -> Arc<VmStateDescription> {
        Arc::clone(&self.vmsd)
    }
    fn save_state(&self) -> Result<CounterState, StateError> {
        Ok(CounterState(*self.count.lock()))
    }
    fn load_state(&self, state: CounterState, _version_id: u32) -> Result<(), StateError> {
        *self.count.lock() = state.0;
        Ok(())
    }
}

/// The counter's typed state.
struct CounterState(u64);

impl MigrationState for CounterState {
    fn to_vmstate(&self) -> VmStruct {
        VmStruct::new().with("count", VmValue::UInt(self.0))
    }
    fn from_vmstate(state: &VmStruct) -> Result<Self, StateError> {
        Ok(CounterState(state.field("count")?))
    }
}

fn vmsd() -> Result<Arc<VmStateDescription>, Box<dyn std::error::Error>> {
    Ok(VmStateDescription::builder("counter")
        .simple("count", FieldKind::U64)
        .build()?)
}

/// The device model of a counter object.
fn counter(obj: &Object) -> Result<Arc<Counter>, String> {
    let data = obj.user_data().ok_or("no user data")?;
    data.downcast::<Counter>().map_err(|_| "wrong user data".to_owned())
}

fn register() -> TestResult {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = (|| -> TestResult {
            TypeInfo::new(TYPE)
                .parent("device")
                .instance_init(|obj| {
                    let vmsd = vmsd()
                        .map_err(|e| vmkit_qom::Error::hook_message("instance_init", obj.describe(), e.to_string()))?;
                    obj.set_user_data(Arc::new(Counter {
                        vmsd,
                        count: Mutex::new(0),
                    }))
                })
                .register()?;
            register_device_model::<Counter>(TYPE, vmsd()?)?;
            Ok(())
        })();
    });
    result
}

/// A container at `/name` holding devices `c`, `a`, `b` (added in that
/// order), the first two realized, counters set to `base + i`.
fn board(name: &str, base: u64) -> Result<(ObjectRef, Vec<ObjectRef>), Box<dyn std::error::Error>> {
    register()?;
    let board = Object::new("container")?;
    root().add_child(name, &board)?;
    let mut devs = Vec::new();
    for (i, child) in ["c", "a", "b"].into_iter().enumerate() {
        let dev = Object::new(TYPE)?;
        board.add_child(child, &dev)?;
        *counter(&dev)?.count.lock() = base + i as u64;
        if child != "b" {
            dev.realize()?;
        }
        devs.push(dev);
    }
    Ok((board, devs))
}

#[test]
fn realized_devices_are_collected_in_path_order() -> TestResult {
    let (board_obj, devs) = board("savevm-collect", 10)?;
    let sections = collect_devices(&board_obj)?;
    let got: Vec<_> = sections.iter().map(|s| (s.idstr.as_str(), s.instance_id)).collect();
    // `a` (10+1) is instance 0, `c` (10+0) instance 1; `b` is not realized.
    assert_eq!(got, [("counter", 0), ("counter", 1)]);
    assert_eq!(sections[0].device.save_vmstate()?.get_u64("count"), Some(11));
    assert_eq!(sections[1].device.save_vmstate()?.get_u64("count"), Some(10));
    drop(sections);
    for d in &devs {
        d.unparent()?;
    }
    board_obj.unparent()?;
    Ok(())
}

#[test]
fn a_tree_saves_and_restores_into_one_built_alike() -> TestResult {
    let (src, src_devs) = board("savevm-src", 100)?;
    let (dst, dst_devs) = board("savevm-dst", 0)?;
    let mut stream = Vec::new();
    save(
        &SaveSet::new("m", Vec::new(), collect_devices(&src)?),
        &mut stream,
        &SaveOptions::default(),
    )?;
    let set = SaveSet::new("m", Vec::new(), collect_devices(&dst)?);
    let stats = restore(&set, stream.as_slice(), &RestoreOptions::default())?;
    assert_eq!(stats.devices, 2);
    assert_eq!(*counter(&dst_devs[0])?.count.lock(), 100);
    assert_eq!(*counter(&dst_devs[1])?.count.lock(), 101);
    assert_eq!(
        *counter(&dst_devs[2])?.count.lock(),
        2,
        "an unrealized device is not restored"
    );

    // A device unrealized after collection refuses the load.
    dst_devs[0].unrealize()?;
    let e = restore(&set, stream.as_slice(), &RestoreOptions::default())
        .err()
        .ok_or("accepted")?;
    assert!(e.to_string().contains("no longer realized"), "{e}");
    for d in src_devs.iter().chain(&dst_devs) {
        d.unparent()?;
    }
    src.unparent()?;
    dst.unparent()?;
    Ok(())
}

#[test]
fn only_device_types_take_a_vmstate_once() -> TestResult {
    register()?;
    let vmsd = VmStateDescription::builder("x").build()?;
    let refuse = |_: &Object| -> Result<Arc<dyn vmkit_migration::device_state::DynDeviceState>, StateError> {
        Err(StateError::Refused("unused".into()))
    };
    let e = register_device_vmstate("container", Arc::clone(&vmsd), refuse)
        .err()
        .ok_or("accepted")?;
    assert!(matches!(e, SavevmError::Registration { .. }), "{e}");
    let e = register_device_model::<Counter>(TYPE, Arc::clone(&vmsd))
        .err()
        .ok_or("accepted")?;
    assert!(e.to_string().contains("already"), "{e}");
    let e = register_device_vmstate("no-such-type", vmsd, refuse)
        .err()
        .ok_or("accepted")?;
    assert!(matches!(e, SavevmError::Qom(_)), "{e}");
    Ok(())
}

#[test]
fn the_analyzer_decodes_known_sections_without_a_trailer() -> TestResult {
    let (src, devs) = board("savevm-analyze", 7)?;
    let mut stream = Vec::new();
    let opts = SaveOptions {
        vmdesc: false,
        ..SaveOptions::default()
    };
    save(
        &SaveSet::new("m", Vec::new(), collect_devices(&src)?),
        &mut stream,
        &opts,
    )?;
    let report = analyze(&mut std::io::Cursor::new(&stream), ParserOptions::default());
    assert!(report.error.is_none(), "{:?}", report.error);
    let counts: Vec<_> = report.devices.iter().map(|d| d.fields["count"].clone()).collect();
    assert_eq!(counts, [serde_json::json!(8), serde_json::json!(7)]);
    // A cut inside the second body: the error names the section and field.
    let second = report.devices[1].offset as usize;
    let cut = &stream[..second + 1 + 4 + 1 + "counter".len() + 8 + 3];
    let report = analyze(&mut std::io::Cursor::new(cut), ParserOptions::default());
    let err = report.error.ok_or("no error")?;
    assert_eq!(err.section.as_deref(), Some("counter"));
    assert_eq!(err.field.as_deref(), Some("counter/count"));
    for d in &devs {
        d.unparent()?;
    }
    src.unparent()?;
    Ok(())
}

#[test]
fn a_device_on_a_bus_names_its_sections_after_its_bus_path() -> TestResult {
    register()?;
    const PATHED: &str = "savevm-test-pathed";
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut result: TestResult = Ok(());
    ONCE.call_once(|| {
        result = (|| -> TestResult {
            // A subtype whose instances describe their state at version 3
            // (an instance's layout may follow its properties).
            TypeInfo::new(PATHED)
                .parent(TYPE)
                .instance_init(|obj| {
                    let vmsd = VmStateDescription::builder("counter")
                        .version(3)
                        .simple("count", FieldKind::U64)
                        .build()
                        .map_err(|e| vmkit_qom::Error::hook_message("instance_init", obj.describe(), e.to_string()))?;
                    obj.set_user_data(Arc::new(Counter {
                        vmsd,
                        count: Mutex::new(0),
                    }))
                })
                .register()?;
            // Slot = the child name's letter, as a PCI bus would number it.
            register_device_path(PATHED, |obj| {
                let name = obj.name_in_parent()?;
                let slot = name.bytes().next()? - b'a' + 1;
                Some(format!("0000:00:{slot:02x}.0"))
            })?;
            Ok(())
        })();
    });
    result?;
    let board = Object::new("container")?;
    root().add_child("savevm-pathed", &board)?;
    let mut devs = Vec::new();
    for name in ["b", "a"] {
        let dev = Object::new(PATHED)?;
        board.add_child(name, &dev)?;
        dev.realize()?;
        devs.push(dev);
    }
    let plain = Object::new(TYPE)?;
    board.add_child("z", &plain)?;
    plain.realize()?;
    let sections = collect_devices(&board)?;
    let got: Vec<_> = sections.iter().map(|s| (s.idstr.as_str(), s.instance_id)).collect();
    assert_eq!(
        got,
        [("0000:00:01.0/counter", 0), ("0000:00:02.0/counter", 0), ("counter", 0)]
    );
    assert_eq!(sections[0].device.description().version_id(), 3, "the instance's own");
    assert_eq!(sections[2].device.description().version_id(), 0);
    let e = register_device_path(PATHED, |_| None).err().ok_or("accepted")?;
    assert!(e.to_string().contains("already"), "{e}");
    assert!(register_device_path("container", |_| None).is_err(), "not a device");
    drop(sections);
    for d in devs.iter().chain([&plain]) {
        d.unparent()?;
    }
    board.unparent()?;
    Ok(())
}
