"""Device models shaped like QEMU's, written in Python, for the demo and
for trying ``vmkit run``: ``vmkit run --plugin vmkit.demo_devices``.

A 16550A serial port with QEMU's VMState layout (``demo-isa-serial``) and
a user-creatable singleton object (``demo-sev-guest``: one
confidential-guest configuration per machine, for ``object-add``).
Importing the module registers them (once per process). The machine's
IOMMU and USB controller are the real ones, ``intel-iommu`` and
``qemu-xhci`` (:mod:`vmkit.devices`).
"""

from __future__ import annotations

from vmkit import qom
from vmkit.migration import VMStateDescription, VMStateField
from vmkit.qom import Property

__all__ = ["SERIAL_VMSTATE", "register"]

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


def register() -> None:
    """Device models shaped like QEMU's: a serial port and a
    user-creatable singleton object. (The IOMMU and the xHCI controller
    are the real ones, ``intel-iommu`` and ``qemu-xhci``.)"""
    qom.register_type(
        "demo-sev-guest",
        interfaces=["user-creatable", "singleton"],
        description="confidential-guest configuration (one per machine)",
        class_properties=[Property("cbitpos", "uint32", default=47, before_realize=True)],
    )
    qom.register_type(
        "demo-isa-serial",
        "device",
        class_properties=[
            Property("index", "uint32", before_realize=True),
            Property("iobase", "uint32", default=0x3F8, before_realize=True),
            Property("wakeup", "bool", description="wake the guest on input (settable any time)"),
            # A window on the migrated state: the guest may write SCR any time.
            Property(
                "scratch",
                "uint8",
                description="the scratch register, SCR (part of the migrated state)",
                getter=lambda o: o.data["scr"],
                setter=lambda o, v: o.data.__setitem__("scr", v),
            ),
        ],
        instance_init=lambda o: o.data.update(
            divider=12, rbr=0, ier=0, iir=1, lcr=0, mcr=0, lsr=0x60, msr=0xB0, scr=0
        ),
        vmstate=SERIAL_VMSTATE,
    )


if not any(t.name == "demo-isa-serial" for t in qom.list_types(include_abstract=True)):
    register()
