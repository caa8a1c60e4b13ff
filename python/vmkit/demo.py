"""``make demo``: build a machine's object tree and show the lifetime rules at work.

Run with ``python -m vmkit.demo``. It registers a few device models in Python
(next to the built-in Rust types), builds a machine from them, prints the tree
as QEMU's ``info qom-tree`` does, then shows introspection of a singleton
type, the refusal of a second singleton, a refused resurrection, and an
embedded child that outlives its hot-unplugged container. Then guest memory
and a workload, and a running machine saved in QEMU's stream format and
restored into a fresh one (and a damaged copy refused).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from vmkit import errors, memory, migration, qom
from vmkit.machine import Machine
from vmkit.migration import VMStateDescription, VMStateField
from vmkit.qom import Property

#: The 16550A UART's registers as QEMU's serial VMState saves them (abridged).
SERIAL_VMSTATE = VMStateDescription(
    "demo-serial",
    [
        VMStateField("divider", "uint16"),
        VMStateField("rbr", "uint8"),
        VMStateField("ier", "uint8"),
        VMStateField("iir", "uint8"),
        VMStateField("lcr", "uint8"),
        VMStateField("mcr", "uint8"),
        VMStateField("lsr", "uint8"),
        VMStateField("msr", "uint8"),
        VMStateField("scr", "uint8"),
    ],
    version_id=3,
    minimum_version_id=2,
)


def register_demo_types() -> None:
    """Device models shaped like QEMU's: an IOMMU (singleton), an xHCI
    controller embedded in its PCI wrapper and a serial port."""
    qom.register_type(
        "demo-x86-iommu",
        "device",
        abstract=True,
        interfaces=["singleton"],
        description="base of the machine's IOMMU (one per machine)",
        class_properties=[
            Property(
                "intremap",
                "enum",
                values=["on", "off", "auto"],
                enum_name="OnOffAuto",
                default="auto",
                before_realize=True,
                description="interrupt remapping",
            ),
        ],
    )
    qom.register_type(
        "demo-intel-iommu",
        "demo-x86-iommu",
        class_properties=[
            Property(
                "aw-bits",
                "uint8",
                default=39,
                min=39,
                max=48,
                before_realize=True,
                description="address width in bits",
            ),
            Property("caching-mode", "bool", before_realize=True),
        ],
        properties=[Property("version", "uint8", default=3, read_only=True)],
    )
    qom.register_type(
        "demo-memory-region",
        description="a region owned by a device (e.g. a BAR)",
        class_properties=[Property("size", "size", default="64K")],
    )
    qom.register_type(
        "demo-xhci-core",
        "device",
        class_properties=[Property("p3", "uint8", default=4, max=15, before_realize=True)],
        instance_init=lambda o: o.embed_child("bar0", "demo-memory-region"),
    )
    qom.register_type(
        "demo-qemu-xhci",
        "device",
        description="xHCI USB controller: a PCI wrapper embedding the controller core",
        instance_init=lambda o: o.embed_child("xhci", "demo-xhci-core"),
        realize=lambda o: _realize_child(o, "xhci"),
    )
    qom.register_type(
        "demo-isa-serial",
        "device",
        class_properties=[
            Property("index", "uint32", before_realize=True),
            Property("iobase", "uint32", default=0x3F8, before_realize=True),
        ],
        instance_init=lambda o: o.data.update(
            divider=12, rbr=0, ier=0, iir=1, lcr=0, mcr=0, lsr=0x60, msr=0xB0, scr=0
        ),
        vmstate=SERIAL_VMSTATE,
    )


def _realize_child(obj: qom.Object, name: str) -> None:
    child = obj.child(name)
    if child is not None:
        child.realize()


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def main() -> None:
    """Runs the demo."""
    register_demo_types()
    qom.create_machine("none-machine")
    qom.object_add("memory-backend-memfd", "pc.ram", size="256M")
    qom.device_add("demo-intel-iommu", id="iommu0", intremap="on")
    qom.device_add("demo-qemu-xhci", id="usb0")
    qom.device_add("demo-isa-serial")

    _section("info qom-tree")
    print(qom.tree("/machine"), end="")
    print(qom.tree("/objects"), end="")

    _section("qom-list-properties demo-intel-iommu (a singleton type)")
    before = qom.stats()
    for p in qom.list_properties("demo-intel-iommu"):
        default = "" if p.default_value is None else f" (default {p.default_value!r})"
        print(f"  {p.name:<14} {p.type:<10}{default}")
    after = qom.stats()
    active = qom.singleton_instance("demo-intel-iommu")
    print(
        f"  -> temporary instance created and dropped: live objects {before.live_objects}"
        f" -> {after.live_objects}, active singleton: {active.path if active else None}"
    )

    _section("a second IOMMU")
    try:
        qom.device_add("demo-intel-iommu", id="iommu1")
    except errors.SingletonError as e:
        print(f"  refused: {e}")

    _section("resurrection during finalize")

    def finalize(obj: qom.Object) -> None:
        try:
            obj.ref()
        except errors.ObjectFinalizedError as e:
            print(f"  finalize hook tried obj.ref(): {e}")

    qom.register_type("demo-zombie", instance_finalize=finalize)
    zombie = qom.new("demo-zombie")
    zombie.unref()
    print(f"  object is now {zombie.phase}; finalize ran once")

    _section("hot-unplug of usb0 while its BAR region is referenced")
    bar = qom.resolve("/machine/peripheral/usb0/xhci/bar0").ref()
    s0 = qom.stats()
    qom.device_del("usb0")
    s1 = qom.stats()
    print(
        f"  live objects {s0.live_objects} -> {s1.live_objects}, "
        f"live storages {s0.live_storages} -> {s1.live_storages} (kept by the region)"
    )
    size = bar["size"]
    assert isinstance(size, int)
    print(f"  region still readable: size = {qom.format_size(size)}")
    try:
        bar.container()
    except errors.ObjectFinalizedError as e:
        print(f"  its container is gone: {e}")
    bar.unref()
    s2 = qom.stats()
    print(f"  region released: live storages {s1.live_storages} -> {s2.live_storages}")

    _section("tree after unplug")
    print(qom.tree("/machine/peripheral"), end="")

    show_memory()
    qom.destroy_machine()
    qom.object_del("pc.ram")
    show_save_restore()


def show_memory() -> None:
    """Guest RAM from the pc.ram backend, a device register window, a workload."""
    machine = qom.machine()
    ram = memory.RamBlock.of_backend(qom.resolve("/objects/pc.ram"))
    system, space = memory.pc_memory(ram, owner=machine)
    regs: dict[int, int] = {}
    system.add_subregion(
        0xFEB0_0000,
        memory.MemoryRegion.mmio(
            "demo-uart",
            8,
            read=lambda off, size: regs.get(off, 0),
            write=lambda off, size, value: regs.__setitem__(off, value),
            impl_max=1,
        ),
    )
    _section("info mtree -f")
    print(memory.mtree_flat(), end="")

    _section("a workload dirtying guest RAM")
    ram.log_start("migration")
    with memory.Workload([ram], rate=256 << 20, pattern="hot-set", seed=1) as load:
        rate = memory.measure_dirty_rate([ram], 0.5)
        stats = load.stats()
    dirty = ram.sync("migration")
    print(f"  workload wrote {stats['bytes'] / (1 << 20):.0f} MiB in {stats['elapsed']:.2f} s")
    print(f"  calc-dirty-rate: {rate['dirty_rate']} MiB/s ({rate['dirty_pages']} pages in 0.5 s)")
    print(
        f"  migration log: {dirty.count} of {ram.page_count} pages dirty,"
        f" in {len(dirty.ranges())} runs"
    )
    space.write(0x1000, b"hello, guest")
    space.write_sized(0xFEB0_0000, 1, 0x41)
    print(f"  DMA read back: {space.read(0x1000, 12)!r}; uart register 0 = {regs[0]:#x}")
    print(f"  RAM checksum (vmkit-csum64): {ram.checksum():#018x}")
    ram.log_stop("migration")


def show_save_restore() -> None:
    """A running machine saved to a file and restored into a fresh one."""
    _section("save a running machine (QEMU savevm format, version 3)")
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "vm.stream"
        with Machine(
            memory="256M",
            backend="memfd",
            workload_rate=512 << 20,
            workload_pattern="hot-set",
            seed=7,
        ) as vm:
            uart = vm.device_add("demo-isa-serial", id="serial0")
            uart.data.update(lcr=3, ier=1, scr=0x5A)
            vm.cont()
            time.sleep(0.3)
            vm.stop()
            saved_sum = vm.ram.checksum()
            started = time.perf_counter()
            stats = vm.save(stream)
            seconds = time.perf_counter() - started
        print(
            f"  {stats['bytes'] / (1 << 20):.1f} MiB stream in {seconds * 1000:.1f} ms:"
            f" {stats['normal_pages']} pages sent whole, {stats['zero_pages']} zero pages,"
            f" {stats['devices']} device section(s)"
        )
        report = migration.analyze(stream)
        print("  records: " + " ".join(r["type"] for r in report["records"]))
        for d in report["devices"]:
            print(f"  {d['idstr']} v{d['version_id']}: {d['fields']}")

        _section("restore into a fresh machine of the same shape")
        with Machine(memory="256M", backend="memfd") as vm:
            uart = vm.device_add("demo-isa-serial", id="serial0")
            vm.restore(stream)
            same = vm.ram.checksum() == saved_sum
            scr = uart.data["scr"]
            print(f"  status {vm.status}; RAM checksum equal: {same}; serial scr = {scr:#x}")

        _section("a damaged stream is refused and the machine cannot run")
        cut = Path(tmp) / "cut.stream"
        cut.write_bytes(stream.read_bytes()[: report["devices"][0]["offset"] + 30])
        with Machine(memory="256M", backend="memfd") as vm:
            uart = vm.device_add("demo-isa-serial", id="serial0")
            try:
                vm.restore(cut)
            except errors.MigrationError as e:
                print(f"  {type(e).__name__} at offset {e.offset} in section {e.section!r}: {e}")
            print(f"  status {vm.status}; serial scr untouched = {uart.data['scr']:#x}")
            try:
                vm.cont()
            except errors.VmkitError as e:
                print(f"  cont refused: {e}")


if __name__ == "__main__":
    main()
