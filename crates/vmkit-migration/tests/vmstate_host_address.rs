//! Principle 6: values, not pointers, cross the wire. A device's host-side
//! DMA address survives a checkpoint/restart as an explicit u64 field that
//! `pre_save` fills from the live device and `post_load` hands back to it.

use std::sync::Arc;

use parking_lot::Mutex;
use vmkit_migration::vmstate::{
    FieldKind, VmReader, VmStateDescription, VmStateError, VmStruct, VmValue, decode, encode, encode_described,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The live device: a DMA range registered at some host address. The host
/// address is runtime state, not a guest-visible register.
#[derive(Debug, Default, Clone, PartialEq)]
struct DmaDevice {
    guest_base: u64,
    len: u64,
    /// Where the range is mapped in this process (an mmap address in a real
    /// device). `None` until registered.
    host_addr: Option<u64>,
}

fn dma_description(dev: Arc<Mutex<DmaDevice>>) -> Result<Arc<VmStateDescription>, VmStateError> {
    let save_dev = dev.clone();
    let load_dev = dev;
    VmStateDescription::builder("dma-dev")
        .version(1)
        .simple("guest_base", FieldKind::U64)
        .simple("len", FieldKind::U64)
        .simple("host_addr", FieldKind::U64)
        .pre_save(move |state| {
            let d = save_dev.lock();
            let host = d.host_addr.ok_or("DMA range not registered")?;
            state.set("guest_base", VmValue::UInt(d.guest_base));
            state.set("len", VmValue::UInt(d.len));
            state.set("host_addr", VmValue::UInt(host));
            Ok(())
        })
        .post_load(move |state, _version| {
            let get = |name: &str| state.get_u64(name).ok_or_else(|| format!("no {name}"));
            let mut d = load_dev.lock();
            d.guest_base = get("guest_base")?;
            d.len = get("len")?;
            d.host_addr = Some(get("host_addr")?);
            Ok(())
        })
        .build()
}

#[test]
fn the_host_dma_address_is_an_explicit_u64_filled_in_pre_save() -> TestResult {
    let source = Arc::new(Mutex::new(DmaDevice {
        guest_base: 0x8000_0000,
        len: 0x10_0000,
        host_addr: Some(0x7f12_3456_0000),
    }));
    let desc = dma_description(source.clone())?;

    // Saving starts from an empty state: everything comes from pre_save.
    let mut bytes = Vec::new();
    let (n, json) = encode_described(&desc, &mut VmStruct::new(), &mut bytes, 0)?;
    assert_eq!(n, 24);
    assert_eq!(&bytes[16..], &0x7f12_3456_0000u64.to_be_bytes());
    // It is an ordinary uint64 for anyone reading the stream.
    assert_eq!(json["fields"][2]["name"], "host_addr");
    assert_eq!(json["fields"][2]["type"], "uint64");
    assert_eq!(json["fields"][2]["size"], 8);

    // The restarted process's device gets it back in post_load.
    let restored = Arc::new(Mutex::new(DmaDevice::default()));
    let load_desc = dma_description(restored.clone())?;
    decode(&load_desc, 1, &mut VmReader::new(&bytes[..], 0))?;
    assert_eq!(*restored.lock(), *source.lock());

    // An unregistered range cannot be saved: the hook says why.
    let unregistered = dma_description(Arc::new(Mutex::new(DmaDevice::default())))?;
    let err = encode(&unregistered, &mut VmStruct::new(), &mut Vec::new(), 0)
        .err()
        .ok_or("unregistered range saved")?;
    assert!(err.to_string().contains("DMA range not registered"), "{err}");
    Ok(())
}
