"""``make demo``: build a machine's object tree and show the lifetime rules at work.

Run with ``python -m vmkit.demo``. It registers a few device models in Python
(next to the built-in Rust types), builds a machine from them, prints the tree
as QEMU's ``info qom-tree`` does, then shows introspection of a singleton
type, the refusal of a second singleton, a refused resurrection, and an
embedded child that outlives its hot-unplugged container.
"""

from __future__ import annotations

from vmkit import errors, memory, qom
from vmkit.qom import Property


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


if __name__ == "__main__":
    main()
