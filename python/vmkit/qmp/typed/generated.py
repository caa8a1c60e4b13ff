"""vmkit's QMP commands, events and types as Python types.

Generated from vmkit's QAPI schema (``vmkit/qmp/qapi/schema/``) by
``python -m vmkit.qmp.qapi.pygen``. Do not edit: change the schema and
generate again (``make qapi``); a test fails while this module is stale.
"""

# Most keys are no identifiers (``calc-time``): every TypedDict is written
# in the functional syntax.
# ruff: noqa: UP013

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict, cast, overload

from vmkit.qmp.parser import JSONValue
from vmkit.qmp.typed.base import ABSENT, Absent, AsyncListener, Listener

__all__ = [
    "EVENT_TYPES",
    "AnyEvent",
    "AsyncCommands",
    "CommandInfo",
    "DeviceDeletedEvent",
    "DeviceDeletedEventData",
    "DirtyRateInfo",
    "DirtyRateMeasureMode",
    "DirtyRateStatus",
    "DirtyRateVcpu",
    "EventName",
    "InputAxis",
    "InputBtnEvent",
    "InputButton",
    "InputEvent",
    "InputEvent_abs",
    "InputEvent_btn",
    "InputEvent_key",
    "InputEvent_rel",
    "InputKeyEvent",
    "InputMoveEvent",
    "JSONType",
    "KeyValue",
    "KeyValue_number",
    "KeyValue_qcode",
    "MigrateSetParameters",
    "MigrationAddress",
    "MigrationAddress_exec",
    "MigrationAddress_file",
    "MigrationAddress_rdma",
    "MigrationAddress_socket_fd",
    "MigrationAddress_socket_inet",
    "MigrationAddress_socket_unix",
    "MigrationAddress_socket_vsock",
    "MigrationCapability",
    "MigrationCapabilityStatus",
    "MigrationChannel",
    "MigrationChannelType",
    "MigrationEvent",
    "MigrationEventData",
    "MigrationInfo",
    "MigrationParameters",
    "MigrationPassEvent",
    "MigrationPassEventData",
    "MigrationStats",
    "MigrationStatus",
    "MultiFDCompression",
    "NameInfo",
    "NoData",
    "ObjectPropertyInfo",
    "ObjectTypeInfo",
    "PciBridgeInfo",
    "PciBusInfo",
    "PciDeviceClass",
    "PciDeviceId",
    "PciDeviceInfo",
    "PciInfo",
    "PciMemoryRange",
    "PciMemoryRegion",
    "QKeyCode",
    "QMPCapability",
    "ResetEvent",
    "ResetEventData",
    "ResumeEvent",
    "RunState",
    "SchemaInfo",
    "SchemaInfoAlternateMember",
    "SchemaInfoEnumMember",
    "SchemaInfoObjectMember",
    "SchemaInfoObjectVariant",
    "SchemaInfo_alternate",
    "SchemaInfo_array",
    "SchemaInfo_builtin",
    "SchemaInfo_command",
    "SchemaInfo_enum",
    "SchemaInfo_event",
    "SchemaInfo_object",
    "ShutdownCause",
    "ShutdownEvent",
    "ShutdownEventData",
    "SocketAddress",
    "SocketAddress_fd",
    "SocketAddress_inet",
    "SocketAddress_unix",
    "SocketAddress_vsock",
    "StatusInfo",
    "StopEvent",
    "StrOrNull",
    "SyncCommands",
    "TimeUnit",
    "VersionInfo",
    "VersionTriple",
    "VfioStats",
    "VmkitFault",
    "VmkitFaultAction",
    "VmkitFaultOrNull",
    "VmkitFaultPoint",
    "VmkitFaultState",
    "VmkitGuestPause",
    "VmkitIntOrNull",
    "VmkitMigrationPass",
    "VmkitNumberOrNull",
    "VmkitReceived",
    "VmkitSaveStats",
    "VmkitUnmodelled",
    "VmkitUnmodelledBlock",
    "VmkitUnmodelledPolicy",
    "VmkitUnmodelledSection",
    "XBZRLECacheStats",
    "ZeroPageDetection",
]


NoData = TypedDict("NoData", {})


RunState: TypeAlias = Literal[
    "debug",
    "inmigrate",
    "internal-error",
    "io-error",
    "paused",
    "postmigrate",
    "prelaunch",
    "finish-migrate",
    "restore-vm",
    "running",
    "save-vm",
    "shutdown",
    "suspended",
    "watchdog",
    "guest-panicked",
    "colo",
]


StatusInfo = TypedDict(
    "StatusInfo",
    {
        "running": bool,
        "status": RunState,
    },
)


MigrationStatus: TypeAlias = Literal[
    "none",
    "setup",
    "cancelling",
    "cancelled",
    "active",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover-setup",
    "postcopy-recover",
    "completed",
    "failed",
    "colo",
    "pre-switchover",
    "device",
    "wait-unplug",
]


MigrationStats = TypedDict(
    "MigrationStats",
    {
        "transferred": int,
        "remaining": int,
        "total": int,
        "duplicate": int,
        "normal": int,
        "normal-bytes": int,
        "dirty-pages-rate": int,
        "mbps": float,
        "dirty-sync-count": int,
        "postcopy-requests": int,
        "page-size": int,
        "multifd-bytes": int,
        "pages-per-second": int,
        "precopy-bytes": int,
        "downtime-bytes": int,
        "postcopy-bytes": int,
        "dirty-sync-missed-zero-copy": int,
    },
)


VfioStats = TypedDict(
    "VfioStats",
    {
        "transferred": int,
    },
)


XBZRLECacheStats = TypedDict(
    "XBZRLECacheStats",
    {
        "cache-size": int,
        "bytes": int,
        "pages": int,
        "cache-miss": int,
        "cache-miss-rate": float,
        "encoding-rate": float,
        "overflow": int,
    },
)


SocketAddress_inet = TypedDict(
    "SocketAddress_inet",
    {
        "type": Literal["inet"],
        "host": str,
        "port": str,
        "numeric": NotRequired[bool],
        "to": NotRequired[int],
        "ipv4": NotRequired[bool],
        "ipv6": NotRequired[bool],
        "keep-alive": NotRequired[bool],
        "mptcp": NotRequired[bool],
    },
)


SocketAddress_unix = TypedDict(
    "SocketAddress_unix",
    {
        "type": Literal["unix"],
        "path": str,
        "abstract": NotRequired[bool],
        "tight": NotRequired[bool],
    },
)


SocketAddress_vsock = TypedDict(
    "SocketAddress_vsock",
    {
        "type": Literal["vsock"],
        "cid": str,
        "port": str,
    },
)


SocketAddress_fd = TypedDict(
    "SocketAddress_fd",
    {
        "type": Literal["fd"],
        "str": str,
    },
)


SocketAddress: TypeAlias = (
    SocketAddress_inet | SocketAddress_unix | SocketAddress_vsock | SocketAddress_fd
)


VmkitNumberOrNull: TypeAlias = float | None


VmkitMigrationPass = TypedDict(
    "VmkitMigrationPass",
    {
        "pass": int,
        "dirty-pages": int,
        "bytes-sent": int,
        "pages-sent": int,
        "zero-pages": int,
        "duration-ms": float,
        "bytes-per-second": VmkitNumberOrNull,
        "final": bool,
    },
)


VmkitGuestPause = TypedDict(
    "VmkitGuestPause",
    {
        "stop": NotRequired[int],
        "stopped": NotRequired[int],
        "synced": NotRequired[int],
        "ram-sent": NotRequired[int],
        "devices-sent": NotRequired[int],
        "loaded": NotRequired[int],
        "resumed": NotRequired[int],
    },
)


VmkitFaultAction: TypeAlias = Literal[
    "cut",
    "corrupt",
    "drop",
    "delay",
]


VmkitFaultPoint = TypedDict(
    "VmkitFaultPoint",
    {
        "offset": NotRequired[int],
        "pass": NotRequired[int],
        "section": NotRequired[str],
    },
)


VmkitIntOrNull: TypeAlias = int | None


VmkitFaultState = TypedDict(
    "VmkitFaultState",
    {
        "action": VmkitFaultAction,
        "at": VmkitFaultPoint,
        "length": NotRequired[int],
        "delay-ms": NotRequired[int],
        "armed-at": VmkitIntOrNull,
        "fired": bool,
    },
)


VmkitReceived = TypedDict(
    "VmkitReceived",
    {
        "bytes": int,
        "zero_pages": int,
        "normal_pages": int,
        "devices": int,
    },
)


VmkitUnmodelledBlock = TypedDict(
    "VmkitUnmodelledBlock",
    {
        "name": str,
        "length": int,
        "zero-pages": int,
        "normal-pages": int,
    },
)


VmkitUnmodelledSection = TypedDict(
    "VmkitUnmodelledSection",
    {
        "offset": int,
        "section-id": int,
        "idstr": str,
        "instance-id": int,
        "version-id": int,
        "vmsd-name": str,
        "size": int,
        "fields": JSONValue,
    },
)


VmkitUnmodelled = TypedDict(
    "VmkitUnmodelled",
    {
        "ram-blocks": list[VmkitUnmodelledBlock],
        "sections": list[VmkitUnmodelledSection],
    },
)


MigrationInfo = TypedDict(
    "MigrationInfo",
    {
        "status": NotRequired[MigrationStatus],
        "ram": NotRequired[MigrationStats],
        "vfio": NotRequired[VfioStats],
        "xbzrle-cache": NotRequired[XBZRLECacheStats],
        "total-time": NotRequired[int],
        "expected-downtime": NotRequired[int],
        "downtime": NotRequired[int],
        "setup-time": NotRequired[int],
        "cpu-throttle-percentage": NotRequired[int],
        "error-desc": NotRequired[str],
        "blocked-reasons": NotRequired[list[str]],
        "postcopy-blocktime": NotRequired[int],
        "postcopy-vcpu-blocktime": NotRequired[list[int]],
        "socket-address": NotRequired[list[SocketAddress]],
        "dirty-limit-throttle-time-per-round": NotRequired[int],
        "dirty-limit-ring-full-time": NotRequired[int],
        "x-vmkit-passes": NotRequired[list[VmkitMigrationPass]],
        "x-vmkit-guest-pause": NotRequired[VmkitGuestPause],
        "x-vmkit-fault": NotRequired[VmkitFaultState],
        "x-vmkit-received": NotRequired[VmkitReceived],
        "x-vmkit-unmodelled": NotRequired[VmkitUnmodelled],
    },
)


MigrationCapability: TypeAlias = Literal[
    "xbzrle",
    "rdma-pin-all",
    "auto-converge",
    "zero-blocks",
    "compress",
    "events",
    "postcopy-ram",
    "x-colo",
    "release-ram",
    "block",
    "return-path",
    "pause-before-switchover",
    "multifd",
    "dirty-bitmaps",
    "postcopy-blocktime",
    "late-block-activate",
    "x-ignore-shared",
    "validate-uuid",
    "background-snapshot",
    "zero-copy-send",
    "postcopy-preempt",
]


MigrationCapabilityStatus = TypedDict(
    "MigrationCapabilityStatus",
    {
        "capability": MigrationCapability,
        "state": bool,
    },
)


StrOrNull: TypeAlias = str | None


MultiFDCompression: TypeAlias = Literal[
    "none",
    "zlib",
    "zstd",
]


ZeroPageDetection: TypeAlias = Literal[
    "none",
    "legacy",
    "multifd",
]


VmkitFault = TypedDict(
    "VmkitFault",
    {
        "action": VmkitFaultAction,
        "at": VmkitFaultPoint,
        "length": NotRequired[int],
        "delay-ms": NotRequired[int],
    },
)


VmkitFaultOrNull: TypeAlias = VmkitFault | None


MigrationParameters = TypedDict(
    "MigrationParameters",
    {
        "announce-initial": NotRequired[int],
        "announce-max": NotRequired[int],
        "announce-rounds": NotRequired[int],
        "announce-step": NotRequired[int],
        "compress-level": NotRequired[int],
        "compress-threads": NotRequired[int],
        "compress-wait-thread": NotRequired[bool],
        "decompress-threads": NotRequired[int],
        "throttle-trigger-threshold": NotRequired[int],
        "cpu-throttle-initial": NotRequired[int],
        "cpu-throttle-increment": NotRequired[int],
        "cpu-throttle-tailslow": NotRequired[bool],
        "tls-creds": NotRequired[str],
        "tls-hostname": NotRequired[str],
        "tls-authz": NotRequired[str],
        "max-bandwidth": NotRequired[int],
        "downtime-limit": NotRequired[int],
        "x-checkpoint-delay": NotRequired[int],
        "block-incremental": NotRequired[bool],
        "multifd-channels": NotRequired[int],
        "xbzrle-cache-size": NotRequired[int],
        "max-postcopy-bandwidth": NotRequired[int],
        "max-cpu-throttle": NotRequired[int],
        "multifd-compression": NotRequired[MultiFDCompression],
        "multifd-zlib-level": NotRequired[int],
        "multifd-zstd-level": NotRequired[int],
        "zero-page-detection": NotRequired[ZeroPageDetection],
        "x-vmkit-fault": NotRequired[VmkitFault],
    },
)


MigrationChannelType: TypeAlias = Literal["main",]


MigrationAddress_socket_inet = TypedDict(
    "MigrationAddress_socket_inet",
    {
        "transport": Literal["socket"],
        "type": Literal["inet"],
        "host": str,
        "port": str,
        "numeric": NotRequired[bool],
        "to": NotRequired[int],
        "ipv4": NotRequired[bool],
        "ipv6": NotRequired[bool],
        "keep-alive": NotRequired[bool],
        "mptcp": NotRequired[bool],
    },
)


MigrationAddress_socket_unix = TypedDict(
    "MigrationAddress_socket_unix",
    {
        "transport": Literal["socket"],
        "type": Literal["unix"],
        "path": str,
        "abstract": NotRequired[bool],
        "tight": NotRequired[bool],
    },
)


MigrationAddress_socket_vsock = TypedDict(
    "MigrationAddress_socket_vsock",
    {
        "transport": Literal["socket"],
        "type": Literal["vsock"],
        "cid": str,
        "port": str,
    },
)


MigrationAddress_socket_fd = TypedDict(
    "MigrationAddress_socket_fd",
    {
        "transport": Literal["socket"],
        "type": Literal["fd"],
        "str": str,
    },
)


MigrationAddress_exec = TypedDict(
    "MigrationAddress_exec",
    {
        "transport": Literal["exec"],
        "args": list[str],
    },
)


MigrationAddress_rdma = TypedDict(
    "MigrationAddress_rdma",
    {
        "transport": Literal["rdma"],
        "host": str,
        "port": str,
        "numeric": NotRequired[bool],
        "to": NotRequired[int],
        "ipv4": NotRequired[bool],
        "ipv6": NotRequired[bool],
        "keep-alive": NotRequired[bool],
        "mptcp": NotRequired[bool],
    },
)


MigrationAddress_file = TypedDict(
    "MigrationAddress_file",
    {
        "transport": Literal["file"],
        "filename": str,
        "offset": int,
    },
)


MigrationAddress: TypeAlias = (
    MigrationAddress_socket_inet
    | MigrationAddress_socket_unix
    | MigrationAddress_socket_vsock
    | MigrationAddress_socket_fd
    | MigrationAddress_exec
    | MigrationAddress_rdma
    | MigrationAddress_file
)


MigrationChannel = TypedDict(
    "MigrationChannel",
    {
        "channel-type": MigrationChannelType,
        "addr": MigrationAddress,
    },
)


MigrateSetParameters = TypedDict(
    "MigrateSetParameters",
    {
        "announce-initial": NotRequired[int],
        "announce-max": NotRequired[int],
        "announce-rounds": NotRequired[int],
        "announce-step": NotRequired[int],
        "compress-level": NotRequired[int],
        "compress-threads": NotRequired[int],
        "compress-wait-thread": NotRequired[bool],
        "decompress-threads": NotRequired[int],
        "throttle-trigger-threshold": NotRequired[int],
        "cpu-throttle-initial": NotRequired[int],
        "cpu-throttle-increment": NotRequired[int],
        "cpu-throttle-tailslow": NotRequired[bool],
        "tls-creds": NotRequired[StrOrNull],
        "tls-hostname": NotRequired[StrOrNull],
        "tls-authz": NotRequired[StrOrNull],
        "max-bandwidth": NotRequired[int],
        "downtime-limit": NotRequired[int],
        "x-checkpoint-delay": NotRequired[int],
        "block-incremental": NotRequired[bool],
        "multifd-channels": NotRequired[int],
        "xbzrle-cache-size": NotRequired[int],
        "max-postcopy-bandwidth": NotRequired[int],
        "max-cpu-throttle": NotRequired[int],
        "multifd-compression": NotRequired[MultiFDCompression],
        "multifd-zlib-level": NotRequired[int],
        "multifd-zstd-level": NotRequired[int],
        "zero-page-detection": NotRequired[ZeroPageDetection],
        "x-vmkit-fault": NotRequired[VmkitFaultOrNull],
    },
)


VmkitUnmodelledPolicy: TypeAlias = Literal[
    "refuse",
    "report",
]


TimeUnit: TypeAlias = Literal[
    "second",
    "millisecond",
]


DirtyRateMeasureMode: TypeAlias = Literal[
    "page-sampling",
    "dirty-ring",
    "dirty-bitmap",
]


DirtyRateStatus: TypeAlias = Literal[
    "unstarted",
    "measuring",
    "measured",
]


DirtyRateVcpu = TypedDict(
    "DirtyRateVcpu",
    {
        "id": int,
        "dirty-rate": int,
    },
)


DirtyRateInfo = TypedDict(
    "DirtyRateInfo",
    {
        "dirty-rate": NotRequired[int],
        "status": DirtyRateStatus,
        "start-time": int,
        "calc-time": int,
        "calc-time-unit": TimeUnit,
        "sample-pages": int,
        "mode": DirtyRateMeasureMode,
        "vcpu-dirty-rate": NotRequired[list[DirtyRateVcpu]],
        "x-vmkit-error": NotRequired[str],
    },
)


QMPCapability: TypeAlias = Literal["oob",]


VersionTriple = TypedDict(
    "VersionTriple",
    {
        "major": int,
        "minor": int,
        "micro": int,
    },
)


VersionInfo = TypedDict(
    "VersionInfo",
    {
        "qemu": VersionTriple,
        "package": str,
    },
)


CommandInfo = TypedDict(
    "CommandInfo",
    {
        "name": str,
    },
)


JSONType: TypeAlias = Literal[
    "string",
    "number",
    "int",
    "boolean",
    "null",
    "object",
    "array",
    "value",
]


SchemaInfo_builtin = TypedDict(
    "SchemaInfo_builtin",
    {
        "name": str,
        "meta-type": Literal["builtin"],
        "features": NotRequired[list[str]],
        "json-type": JSONType,
    },
)


SchemaInfoEnumMember = TypedDict(
    "SchemaInfoEnumMember",
    {
        "name": str,
        "features": NotRequired[list[str]],
    },
)


SchemaInfo_enum = TypedDict(
    "SchemaInfo_enum",
    {
        "name": str,
        "meta-type": Literal["enum"],
        "features": NotRequired[list[str]],
        "members": list[SchemaInfoEnumMember],
        "values": list[str],
    },
)


SchemaInfo_array = TypedDict(
    "SchemaInfo_array",
    {
        "name": str,
        "meta-type": Literal["array"],
        "features": NotRequired[list[str]],
        "element-type": str,
    },
)


SchemaInfoObjectMember = TypedDict(
    "SchemaInfoObjectMember",
    {
        "name": str,
        "type": str,
        "default": NotRequired[JSONValue],
        "features": NotRequired[list[str]],
    },
)


SchemaInfoObjectVariant = TypedDict(
    "SchemaInfoObjectVariant",
    {
        "case": str,
        "type": str,
    },
)


SchemaInfo_object = TypedDict(
    "SchemaInfo_object",
    {
        "name": str,
        "meta-type": Literal["object"],
        "features": NotRequired[list[str]],
        "members": list[SchemaInfoObjectMember],
        "tag": NotRequired[str],
        "variants": NotRequired[list[SchemaInfoObjectVariant]],
    },
)


SchemaInfoAlternateMember = TypedDict(
    "SchemaInfoAlternateMember",
    {
        "type": str,
    },
)


SchemaInfo_alternate = TypedDict(
    "SchemaInfo_alternate",
    {
        "name": str,
        "meta-type": Literal["alternate"],
        "features": NotRequired[list[str]],
        "members": list[SchemaInfoAlternateMember],
    },
)


SchemaInfo_command = TypedDict(
    "SchemaInfo_command",
    {
        "name": str,
        "meta-type": Literal["command"],
        "features": NotRequired[list[str]],
        "arg-type": str,
        "ret-type": str,
        "allow-oob": NotRequired[bool],
    },
)


SchemaInfo_event = TypedDict(
    "SchemaInfo_event",
    {
        "name": str,
        "meta-type": Literal["event"],
        "features": NotRequired[list[str]],
        "arg-type": str,
    },
)


SchemaInfo: TypeAlias = (
    SchemaInfo_builtin
    | SchemaInfo_enum
    | SchemaInfo_array
    | SchemaInfo_object
    | SchemaInfo_alternate
    | SchemaInfo_command
    | SchemaInfo_event
)


ObjectPropertyInfo = TypedDict(
    "ObjectPropertyInfo",
    {
        "name": str,
        "type": str,
        "description": NotRequired[str],
        "default-value": NotRequired[JSONValue],
    },
)


ObjectTypeInfo = TypedDict(
    "ObjectTypeInfo",
    {
        "name": str,
        "abstract": NotRequired[bool],
        "parent": NotRequired[str],
    },
)


PciDeviceClass = TypedDict(
    "PciDeviceClass",
    {
        "desc": NotRequired[str],
        "class": int,
    },
)


PciDeviceId = TypedDict(
    "PciDeviceId",
    {
        "device": int,
        "vendor": int,
        "subsystem": NotRequired[int],
        "subsystem-vendor": NotRequired[int],
    },
)


PciMemoryRange = TypedDict(
    "PciMemoryRange",
    {
        "base": int,
        "limit": int,
    },
)


PciBusInfo = TypedDict(
    "PciBusInfo",
    {
        "number": int,
        "secondary": int,
        "subordinate": int,
        "io_range": PciMemoryRange,
        "memory_range": PciMemoryRange,
        "prefetchable_range": PciMemoryRange,
    },
)


PciBridgeInfo = TypedDict(
    "PciBridgeInfo",
    {
        "bus": PciBusInfo,
        "devices": NotRequired["list[PciDeviceInfo]"],
    },
)


PciMemoryRegion = TypedDict(
    "PciMemoryRegion",
    {
        "bar": int,
        "type": str,
        "address": int,
        "size": int,
        "prefetch": NotRequired[bool],
        "mem_type_64": NotRequired[bool],
    },
)


PciDeviceInfo = TypedDict(
    "PciDeviceInfo",
    {
        "bus": int,
        "slot": int,
        "function": int,
        "class_info": PciDeviceClass,
        "id": PciDeviceId,
        "irq": NotRequired[int],
        "irq_pin": int,
        "qdev_id": str,
        "pci_bridge": NotRequired[PciBridgeInfo],
        "regions": list[PciMemoryRegion],
    },
)


PciInfo = TypedDict(
    "PciInfo",
    {
        "bus": int,
        "devices": list[PciDeviceInfo],
    },
)


KeyValue_number = TypedDict(
    "KeyValue_number",
    {
        "type": Literal["number"],
        "data": int,
    },
)


QKeyCode: TypeAlias = Literal[
    "unmapped",
    "shift",
    "shift_r",
    "alt",
    "alt_r",
    "ctrl",
    "ctrl_r",
    "menu",
    "esc",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "0",
    "minus",
    "equal",
    "backspace",
    "tab",
    "q",
    "w",
    "e",
    "r",
    "t",
    "y",
    "u",
    "i",
    "o",
    "p",
    "bracket_left",
    "bracket_right",
    "ret",
    "a",
    "s",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "semicolon",
    "apostrophe",
    "grave_accent",
    "backslash",
    "z",
    "x",
    "c",
    "v",
    "b",
    "n",
    "m",
    "comma",
    "dot",
    "slash",
    "asterisk",
    "spc",
    "caps_lock",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "f6",
    "f7",
    "f8",
    "f9",
    "f10",
    "num_lock",
    "scroll_lock",
    "kp_divide",
    "kp_multiply",
    "kp_subtract",
    "kp_add",
    "kp_enter",
    "kp_decimal",
    "sysrq",
    "kp_0",
    "kp_1",
    "kp_2",
    "kp_3",
    "kp_4",
    "kp_5",
    "kp_6",
    "kp_7",
    "kp_8",
    "kp_9",
    "less",
    "f11",
    "f12",
    "print",
    "home",
    "pgup",
    "pgdn",
    "end",
    "left",
    "up",
    "down",
    "right",
    "insert",
    "delete",
    "stop",
    "again",
    "props",
    "undo",
    "front",
    "copy",
    "open",
    "paste",
    "find",
    "cut",
    "lf",
    "help",
    "meta_l",
    "meta_r",
    "compose",
    "pause",
    "ro",
    "hiragana",
    "henkan",
    "yen",
    "muhenkan",
    "katakanahiragana",
    "kp_comma",
    "kp_equals",
    "power",
    "sleep",
    "wake",
    "audionext",
    "audioprev",
    "audiostop",
    "audioplay",
    "audiomute",
    "volumeup",
    "volumedown",
    "mediaselect",
    "mail",
    "calculator",
    "computer",
    "ac_home",
    "ac_back",
    "ac_forward",
    "ac_refresh",
    "ac_bookmarks",
    "lang1",
    "lang2",
]


KeyValue_qcode = TypedDict(
    "KeyValue_qcode",
    {
        "type": Literal["qcode"],
        "data": QKeyCode,
    },
)


KeyValue: TypeAlias = KeyValue_number | KeyValue_qcode


InputKeyEvent = TypedDict(
    "InputKeyEvent",
    {
        "key": KeyValue,
        "down": bool,
    },
)


InputEvent_key = TypedDict(
    "InputEvent_key",
    {
        "type": Literal["key"],
        "data": InputKeyEvent,
    },
)


InputButton: TypeAlias = Literal[
    "left",
    "middle",
    "right",
    "wheel-up",
    "wheel-down",
    "side",
    "extra",
    "wheel-left",
    "wheel-right",
]


InputBtnEvent = TypedDict(
    "InputBtnEvent",
    {
        "button": InputButton,
        "down": bool,
    },
)


InputEvent_btn = TypedDict(
    "InputEvent_btn",
    {
        "type": Literal["btn"],
        "data": InputBtnEvent,
    },
)


InputAxis: TypeAlias = Literal[
    "x",
    "y",
]


InputMoveEvent = TypedDict(
    "InputMoveEvent",
    {
        "axis": InputAxis,
        "value": int,
    },
)


InputEvent_rel = TypedDict(
    "InputEvent_rel",
    {
        "type": Literal["rel"],
        "data": InputMoveEvent,
    },
)


InputEvent_abs = TypedDict(
    "InputEvent_abs",
    {
        "type": Literal["abs"],
        "data": InputMoveEvent,
    },
)


InputEvent: TypeAlias = InputEvent_key | InputEvent_btn | InputEvent_rel | InputEvent_abs


NameInfo = TypedDict(
    "NameInfo",
    {
        "name": NotRequired[str],
    },
)


VmkitSaveStats = TypedDict(
    "VmkitSaveStats",
    {
        "bytes": int,
        "ram-bytes": int,
        "zero-pages": int,
        "normal-pages": int,
        "devices": int,
    },
)


ShutdownCause: TypeAlias = Literal[
    "none",
    "host-error",
    "host-qmp-quit",
    "host-qmp-system-reset",
    "host-signal",
    "host-ui",
    "guest-shutdown",
    "guest-reset",
    "guest-panic",
    "subsystem-reset",
    "snapshot-load",
]


ShutdownEventData = TypedDict(
    "ShutdownEventData",
    {
        "guest": bool,
        "reason": ShutdownCause,
    },
)


@dataclass(frozen=True, slots=True)
class ShutdownEvent(ABC):
    """``SHUTDOWN``: ``data`` as sent, ``timestamp`` in seconds."""

    data: ShutdownEventData
    timestamp: float
    name: Literal["SHUTDOWN"] = "SHUTDOWN"


ResetEventData = TypedDict(
    "ResetEventData",
    {
        "guest": bool,
        "reason": ShutdownCause,
    },
)


@dataclass(frozen=True, slots=True)
class ResetEvent(ABC):
    """``RESET``: ``data`` as sent, ``timestamp`` in seconds."""

    data: ResetEventData
    timestamp: float
    name: Literal["RESET"] = "RESET"


@dataclass(frozen=True, slots=True)
class StopEvent(ABC):
    """``STOP``: ``data`` as sent, ``timestamp`` in seconds."""

    data: NoData
    timestamp: float
    name: Literal["STOP"] = "STOP"


@dataclass(frozen=True, slots=True)
class ResumeEvent(ABC):
    """``RESUME``: ``data`` as sent, ``timestamp`` in seconds."""

    data: NoData
    timestamp: float
    name: Literal["RESUME"] = "RESUME"


MigrationEventData = TypedDict(
    "MigrationEventData",
    {
        "status": MigrationStatus,
    },
)


@dataclass(frozen=True, slots=True)
class MigrationEvent(ABC):
    """``MIGRATION``: ``data`` as sent, ``timestamp`` in seconds."""

    data: MigrationEventData
    timestamp: float
    name: Literal["MIGRATION"] = "MIGRATION"


MigrationPassEventData = TypedDict(
    "MigrationPassEventData",
    {
        "pass": int,
    },
)


@dataclass(frozen=True, slots=True)
class MigrationPassEvent(ABC):
    """``MIGRATION_PASS``: ``data`` as sent, ``timestamp`` in seconds."""

    data: MigrationPassEventData
    timestamp: float
    name: Literal["MIGRATION_PASS"] = "MIGRATION_PASS"


DeviceDeletedEventData = TypedDict(
    "DeviceDeletedEventData",
    {
        "device": NotRequired[str],
        "path": str,
    },
)


@dataclass(frozen=True, slots=True)
class DeviceDeletedEvent(ABC):
    """``DEVICE_DELETED``: ``data`` as sent, ``timestamp`` in seconds."""

    data: DeviceDeletedEventData
    timestamp: float
    name: Literal["DEVICE_DELETED"] = "DEVICE_DELETED"


EventName: TypeAlias = Literal[
    "SHUTDOWN",
    "RESET",
    "STOP",
    "RESUME",
    "MIGRATION",
    "MIGRATION_PASS",
    "DEVICE_DELETED",
]


AnyEvent: TypeAlias = (
    ShutdownEvent
    | ResetEvent
    | StopEvent
    | ResumeEvent
    | MigrationEvent
    | MigrationPassEvent
    | DeviceDeletedEvent
)


EVENT_TYPES: dict[str, Callable[[Any, float], AnyEvent]] = {
    "SHUTDOWN": ShutdownEvent,
    "RESET": ResetEvent,
    "STOP": StopEvent,
    "RESUME": ResumeEvent,
    "MIGRATION": MigrationEvent,
    "MIGRATION_PASS": MigrationPassEvent,
    "DEVICE_DELETED": DeviceDeletedEvent,
}
"""The event class of each event name (called as ``cls(data, timestamp)``)."""


class AsyncCommands:
    """vmkit's QMP commands as asynchronous methods; subclasses send them."""

    @abstractmethod
    async def _execute(self, command: str, arguments: dict[str, object]) -> object:
        """Sends ``command``; returns its answer."""

    @abstractmethod
    def _listen(self, names: tuple[str, ...]) -> AsyncListener[Any]:
        """Subscribes to the events named ``names``."""

    async def query_status(self) -> StatusInfo:
        """``query-status``."""
        arguments: dict[str, object] = {}
        return cast(StatusInfo, await self._execute("query-status", arguments))

    async def query_migrate(self) -> MigrationInfo:
        """``query-migrate``."""
        arguments: dict[str, object] = {}
        return cast(MigrationInfo, await self._execute("query-migrate", arguments))

    async def migrate_set_capabilities(
        self,
        *,
        capabilities: Sequence[MigrationCapabilityStatus],
    ) -> None:
        """``migrate-set-capabilities``."""
        arguments: dict[str, object] = {"capabilities": capabilities}
        await self._execute("migrate-set-capabilities", arguments)

    async def query_migrate_capabilities(self) -> list[MigrationCapabilityStatus]:
        """``query-migrate-capabilities``."""
        arguments: dict[str, object] = {}
        return cast(
            list[MigrationCapabilityStatus],
            await self._execute("query-migrate-capabilities", arguments),
        )

    async def migrate_set_parameters(
        self,
        *,
        announce_initial: int | None = None,
        announce_max: int | None = None,
        announce_rounds: int | None = None,
        announce_step: int | None = None,
        compress_level: int | None = None,
        compress_threads: int | None = None,
        compress_wait_thread: bool | None = None,
        decompress_threads: int | None = None,
        throttle_trigger_threshold: int | None = None,
        cpu_throttle_initial: int | None = None,
        cpu_throttle_increment: int | None = None,
        cpu_throttle_tailslow: bool | None = None,
        tls_creds: StrOrNull | Absent = ABSENT,
        tls_hostname: StrOrNull | Absent = ABSENT,
        tls_authz: StrOrNull | Absent = ABSENT,
        max_bandwidth: int | None = None,
        downtime_limit: int | None = None,
        x_checkpoint_delay: int | None = None,
        block_incremental: bool | None = None,
        multifd_channels: int | None = None,
        xbzrle_cache_size: int | None = None,
        max_postcopy_bandwidth: int | None = None,
        max_cpu_throttle: int | None = None,
        multifd_compression: MultiFDCompression | None = None,
        multifd_zlib_level: int | None = None,
        multifd_zstd_level: int | None = None,
        zero_page_detection: ZeroPageDetection | None = None,
        x_vmkit_fault: VmkitFaultOrNull | Absent = ABSENT,
    ) -> None:
        """``migrate-set-parameters``."""
        arguments: dict[str, object] = {}
        if announce_initial is not None:
            arguments["announce-initial"] = announce_initial
        if announce_max is not None:
            arguments["announce-max"] = announce_max
        if announce_rounds is not None:
            arguments["announce-rounds"] = announce_rounds
        if announce_step is not None:
            arguments["announce-step"] = announce_step
        if compress_level is not None:
            arguments["compress-level"] = compress_level
        if compress_threads is not None:
            arguments["compress-threads"] = compress_threads
        if compress_wait_thread is not None:
            arguments["compress-wait-thread"] = compress_wait_thread
        if decompress_threads is not None:
            arguments["decompress-threads"] = decompress_threads
        if throttle_trigger_threshold is not None:
            arguments["throttle-trigger-threshold"] = throttle_trigger_threshold
        if cpu_throttle_initial is not None:
            arguments["cpu-throttle-initial"] = cpu_throttle_initial
        if cpu_throttle_increment is not None:
            arguments["cpu-throttle-increment"] = cpu_throttle_increment
        if cpu_throttle_tailslow is not None:
            arguments["cpu-throttle-tailslow"] = cpu_throttle_tailslow
        if not isinstance(tls_creds, Absent):
            arguments["tls-creds"] = tls_creds
        if not isinstance(tls_hostname, Absent):
            arguments["tls-hostname"] = tls_hostname
        if not isinstance(tls_authz, Absent):
            arguments["tls-authz"] = tls_authz
        if max_bandwidth is not None:
            arguments["max-bandwidth"] = max_bandwidth
        if downtime_limit is not None:
            arguments["downtime-limit"] = downtime_limit
        if x_checkpoint_delay is not None:
            arguments["x-checkpoint-delay"] = x_checkpoint_delay
        if block_incremental is not None:
            arguments["block-incremental"] = block_incremental
        if multifd_channels is not None:
            arguments["multifd-channels"] = multifd_channels
        if xbzrle_cache_size is not None:
            arguments["xbzrle-cache-size"] = xbzrle_cache_size
        if max_postcopy_bandwidth is not None:
            arguments["max-postcopy-bandwidth"] = max_postcopy_bandwidth
        if max_cpu_throttle is not None:
            arguments["max-cpu-throttle"] = max_cpu_throttle
        if multifd_compression is not None:
            arguments["multifd-compression"] = multifd_compression
        if multifd_zlib_level is not None:
            arguments["multifd-zlib-level"] = multifd_zlib_level
        if multifd_zstd_level is not None:
            arguments["multifd-zstd-level"] = multifd_zstd_level
        if zero_page_detection is not None:
            arguments["zero-page-detection"] = zero_page_detection
        if not isinstance(x_vmkit_fault, Absent):
            arguments["x-vmkit-fault"] = x_vmkit_fault
        await self._execute("migrate-set-parameters", arguments)

    async def query_migrate_parameters(self) -> MigrationParameters:
        """``query-migrate-parameters``."""
        arguments: dict[str, object] = {}
        return cast(MigrationParameters, await self._execute("query-migrate-parameters", arguments))

    async def migrate_cancel(self) -> None:
        """``migrate_cancel``."""
        arguments: dict[str, object] = {}
        await self._execute("migrate_cancel", arguments)

    async def migrate_continue(
        self,
        *,
        state: MigrationStatus,
    ) -> None:
        """``migrate-continue``."""
        arguments: dict[str, object] = {"state": state}
        await self._execute("migrate-continue", arguments)

    async def migrate(
        self,
        *,
        uri: str | None = None,
        channels: Sequence[MigrationChannel] | None = None,
        detach: bool | None = None,
        resume: bool | None = None,
        blk: bool | None = None,
        inc: bool | None = None,
        capabilities: Sequence[MigrationCapabilityStatus] | None = None,
        parameters: MigrateSetParameters | None = None,
    ) -> None:
        """``migrate``."""
        arguments: dict[str, object] = {}
        if uri is not None:
            arguments["uri"] = uri
        if channels is not None:
            arguments["channels"] = channels
        if detach is not None:
            arguments["detach"] = detach
        if resume is not None:
            arguments["resume"] = resume
        if blk is not None:
            arguments["blk"] = blk
        if inc is not None:
            arguments["inc"] = inc
        if capabilities is not None:
            arguments["capabilities"] = capabilities
        if parameters is not None:
            arguments["parameters"] = parameters
        await self._execute("migrate", arguments)

    async def migrate_incoming(
        self,
        *,
        uri: str | None = None,
        channels: Sequence[MigrationChannel] | None = None,
        x_vmkit_unmodelled: VmkitUnmodelledPolicy | None = None,
    ) -> None:
        """``migrate-incoming``."""
        arguments: dict[str, object] = {}
        if uri is not None:
            arguments["uri"] = uri
        if channels is not None:
            arguments["channels"] = channels
        if x_vmkit_unmodelled is not None:
            arguments["x-vmkit-unmodelled"] = x_vmkit_unmodelled
        await self._execute("migrate-incoming", arguments)

    async def calc_dirty_rate(
        self,
        *,
        calc_time: int,
        calc_time_unit: TimeUnit | None = None,
        sample_pages: int | None = None,
        mode: DirtyRateMeasureMode | None = None,
    ) -> None:
        """``calc-dirty-rate``."""
        arguments: dict[str, object] = {"calc-time": calc_time}
        if calc_time_unit is not None:
            arguments["calc-time-unit"] = calc_time_unit
        if sample_pages is not None:
            arguments["sample-pages"] = sample_pages
        if mode is not None:
            arguments["mode"] = mode
        await self._execute("calc-dirty-rate", arguments)

    async def query_dirty_rate(
        self,
        *,
        calc_time_unit: TimeUnit | None = None,
    ) -> DirtyRateInfo:
        """``query-dirty-rate``."""
        arguments: dict[str, object] = {}
        if calc_time_unit is not None:
            arguments["calc-time-unit"] = calc_time_unit
        return cast(DirtyRateInfo, await self._execute("query-dirty-rate", arguments))

    async def qmp_capabilities(
        self,
        *,
        enable: Sequence[QMPCapability] | None = None,
    ) -> None:
        """``qmp_capabilities``."""
        arguments: dict[str, object] = {}
        if enable is not None:
            arguments["enable"] = enable
        await self._execute("qmp_capabilities", arguments)

    async def query_version(self) -> VersionInfo:
        """``query-version``."""
        arguments: dict[str, object] = {}
        return cast(VersionInfo, await self._execute("query-version", arguments))

    async def query_commands(self) -> list[CommandInfo]:
        """``query-commands``."""
        arguments: dict[str, object] = {}
        return cast(list[CommandInfo], await self._execute("query-commands", arguments))

    async def quit(self) -> None:
        """``quit``."""
        arguments: dict[str, object] = {}
        await self._execute("quit", arguments)

    async def query_qmp_schema(self) -> list[SchemaInfo]:
        """``query-qmp-schema``."""
        arguments: dict[str, object] = {}
        return cast(list[SchemaInfo], await self._execute("query-qmp-schema", arguments))

    async def qom_list(
        self,
        *,
        path: str,
    ) -> list[ObjectPropertyInfo]:
        """``qom-list``."""
        arguments: dict[str, object] = {"path": path}
        return cast(list[ObjectPropertyInfo], await self._execute("qom-list", arguments))

    async def qom_get(
        self,
        *,
        path: str,
        property: str,
    ) -> JSONValue:
        """``qom-get``."""
        arguments: dict[str, object] = {"path": path, "property": property}
        return cast(JSONValue, await self._execute("qom-get", arguments))

    async def qom_set(
        self,
        *,
        path: str,
        property: str,
        value: JSONValue,
    ) -> None:
        """``qom-set``."""
        arguments: dict[str, object] = {"path": path, "property": property, "value": value}
        await self._execute("qom-set", arguments)

    async def qom_list_types(
        self,
        *,
        implements: str | None = None,
        abstract: bool | None = None,
    ) -> list[ObjectTypeInfo]:
        """``qom-list-types``."""
        arguments: dict[str, object] = {}
        if implements is not None:
            arguments["implements"] = implements
        if abstract is not None:
            arguments["abstract"] = abstract
        return cast(list[ObjectTypeInfo], await self._execute("qom-list-types", arguments))

    async def qom_list_properties(
        self,
        *,
        typename: str,
    ) -> list[ObjectPropertyInfo]:
        """``qom-list-properties``."""
        arguments: dict[str, object] = {"typename": typename}
        return cast(list[ObjectPropertyInfo], await self._execute("qom-list-properties", arguments))

    async def object_add(
        self,
        *,
        qom_type: str,
        id: str,
        properties: Mapping[str, JSONValue] | None = None,
    ) -> None:
        """``object-add``."""
        arguments: dict[str, object] = {"qom-type": qom_type, "id": id}
        if properties is not None:
            arguments.update(properties)
        await self._execute("object-add", arguments)

    async def object_del(
        self,
        *,
        id: str,
    ) -> None:
        """``object-del``."""
        arguments: dict[str, object] = {"id": id}
        await self._execute("object-del", arguments)

    async def device_list_properties(
        self,
        *,
        typename: str,
    ) -> list[ObjectPropertyInfo]:
        """``device-list-properties``."""
        arguments: dict[str, object] = {"typename": typename}
        return cast(
            list[ObjectPropertyInfo], await self._execute("device-list-properties", arguments)
        )

    async def device_add(
        self,
        *,
        driver: str,
        bus: str | None = None,
        id: str | None = None,
        properties: Mapping[str, JSONValue] | None = None,
    ) -> None:
        """``device_add``."""
        arguments: dict[str, object] = {"driver": driver}
        if bus is not None:
            arguments["bus"] = bus
        if id is not None:
            arguments["id"] = id
        if properties is not None:
            arguments.update(properties)
        await self._execute("device_add", arguments)

    async def device_del(
        self,
        *,
        id: str,
    ) -> None:
        """``device_del``."""
        arguments: dict[str, object] = {"id": id}
        await self._execute("device_del", arguments)

    async def system_reset(self) -> None:
        """``system_reset``."""
        arguments: dict[str, object] = {}
        await self._execute("system_reset", arguments)

    async def pmemsave(
        self,
        *,
        val: int,
        size: int,
        filename: str,
    ) -> None:
        """``pmemsave``."""
        arguments: dict[str, object] = {"val": val, "size": size, "filename": filename}
        await self._execute("pmemsave", arguments)

    async def query_pci(self) -> list[PciInfo]:
        """``query-pci``."""
        arguments: dict[str, object] = {}
        return cast(list[PciInfo], await self._execute("query-pci", arguments))

    async def input_send_event(
        self,
        *,
        device: str | None = None,
        head: int | None = None,
        events: Sequence[InputEvent],
    ) -> None:
        """``input-send-event``."""
        arguments: dict[str, object] = {"events": events}
        if device is not None:
            arguments["device"] = device
        if head is not None:
            arguments["head"] = head
        await self._execute("input-send-event", arguments)

    async def query_name(self) -> NameInfo:
        """``query-name``."""
        arguments: dict[str, object] = {}
        return cast(NameInfo, await self._execute("query-name", arguments))

    async def stop(self) -> None:
        """``stop``."""
        arguments: dict[str, object] = {}
        await self._execute("stop", arguments)

    async def cont(self) -> None:
        """``cont``."""
        arguments: dict[str, object] = {}
        await self._execute("cont", arguments)

    async def human_monitor_command(
        self,
        *,
        command_line: str,
        cpu_index: int | None = None,
    ) -> str:
        """``human-monitor-command``."""
        arguments: dict[str, object] = {"command-line": command_line}
        if cpu_index is not None:
            arguments["cpu-index"] = cpu_index
        return cast(str, await self._execute("human-monitor-command", arguments))

    async def getfd(
        self,
        *,
        fdname: str,
    ) -> None:
        """``getfd``."""
        arguments: dict[str, object] = {"fdname": fdname}
        await self._execute("getfd", arguments)

    async def closefd(
        self,
        *,
        fdname: str,
    ) -> None:
        """``closefd``."""
        arguments: dict[str, object] = {"fdname": fdname}
        await self._execute("closefd", arguments)

    async def x_vmkit_save(
        self,
        *,
        path: str,
    ) -> VmkitSaveStats:
        """``x-vmkit-save`` (unstable)."""
        arguments: dict[str, object] = {"path": path}
        return cast(VmkitSaveStats, await self._execute("x-vmkit-save", arguments))

    @overload
    def listen(self, name: Literal["SHUTDOWN"], /) -> AsyncListener[ShutdownEvent]: ...

    @overload
    def listen(self, name: Literal["RESET"], /) -> AsyncListener[ResetEvent]: ...

    @overload
    def listen(self, name: Literal["STOP"], /) -> AsyncListener[StopEvent]: ...

    @overload
    def listen(self, name: Literal["RESUME"], /) -> AsyncListener[ResumeEvent]: ...

    @overload
    def listen(self, name: Literal["MIGRATION"], /) -> AsyncListener[MigrationEvent]: ...

    @overload
    def listen(self, name: Literal["MIGRATION_PASS"], /) -> AsyncListener[MigrationPassEvent]: ...

    @overload
    def listen(self, name: Literal["DEVICE_DELETED"], /) -> AsyncListener[DeviceDeletedEvent]: ...

    @overload
    def listen(self, name: EventName, /, *names: EventName) -> AsyncListener[AnyEvent]: ...

    def listen(self, name: EventName, /, *names: EventName) -> AsyncListener[Any]:
        """Events called ``name`` (or any of ``names``) from the moment
        the ``with`` block is entered: enter it, then run the command
        that causes them, and none is missed."""
        return self._listen((name, *names))


class SyncCommands:
    """vmkit's QMP commands as synchronous methods; subclasses send them."""

    @abstractmethod
    def _execute(self, command: str, arguments: dict[str, object]) -> object:
        """Sends ``command``; returns its answer."""

    @abstractmethod
    def _listen(self, names: tuple[str, ...]) -> Listener[Any]:
        """Subscribes to the events named ``names``."""

    def query_status(self) -> StatusInfo:
        """``query-status``."""
        arguments: dict[str, object] = {}
        return cast(StatusInfo, self._execute("query-status", arguments))

    def query_migrate(self) -> MigrationInfo:
        """``query-migrate``."""
        arguments: dict[str, object] = {}
        return cast(MigrationInfo, self._execute("query-migrate", arguments))

    def migrate_set_capabilities(
        self,
        *,
        capabilities: Sequence[MigrationCapabilityStatus],
    ) -> None:
        """``migrate-set-capabilities``."""
        arguments: dict[str, object] = {"capabilities": capabilities}
        self._execute("migrate-set-capabilities", arguments)

    def query_migrate_capabilities(self) -> list[MigrationCapabilityStatus]:
        """``query-migrate-capabilities``."""
        arguments: dict[str, object] = {}
        return cast(
            list[MigrationCapabilityStatus], self._execute("query-migrate-capabilities", arguments)
        )

    def migrate_set_parameters(
        self,
        *,
        announce_initial: int | None = None,
        announce_max: int | None = None,
        announce_rounds: int | None = None,
        announce_step: int | None = None,
        compress_level: int | None = None,
        compress_threads: int | None = None,
        compress_wait_thread: bool | None = None,
        decompress_threads: int | None = None,
        throttle_trigger_threshold: int | None = None,
        cpu_throttle_initial: int | None = None,
        cpu_throttle_increment: int | None = None,
        cpu_throttle_tailslow: bool | None = None,
        tls_creds: StrOrNull | Absent = ABSENT,
        tls_hostname: StrOrNull | Absent = ABSENT,
        tls_authz: StrOrNull | Absent = ABSENT,
        max_bandwidth: int | None = None,
        downtime_limit: int | None = None,
        x_checkpoint_delay: int | None = None,
        block_incremental: bool | None = None,
        multifd_channels: int | None = None,
        xbzrle_cache_size: int | None = None,
        max_postcopy_bandwidth: int | None = None,
        max_cpu_throttle: int | None = None,
        multifd_compression: MultiFDCompression | None = None,
        multifd_zlib_level: int | None = None,
        multifd_zstd_level: int | None = None,
        zero_page_detection: ZeroPageDetection | None = None,
        x_vmkit_fault: VmkitFaultOrNull | Absent = ABSENT,
    ) -> None:
        """``migrate-set-parameters``."""
        arguments: dict[str, object] = {}
        if announce_initial is not None:
            arguments["announce-initial"] = announce_initial
        if announce_max is not None:
            arguments["announce-max"] = announce_max
        if announce_rounds is not None:
            arguments["announce-rounds"] = announce_rounds
        if announce_step is not None:
            arguments["announce-step"] = announce_step
        if compress_level is not None:
            arguments["compress-level"] = compress_level
        if compress_threads is not None:
            arguments["compress-threads"] = compress_threads
        if compress_wait_thread is not None:
            arguments["compress-wait-thread"] = compress_wait_thread
        if decompress_threads is not None:
            arguments["decompress-threads"] = decompress_threads
        if throttle_trigger_threshold is not None:
            arguments["throttle-trigger-threshold"] = throttle_trigger_threshold
        if cpu_throttle_initial is not None:
            arguments["cpu-throttle-initial"] = cpu_throttle_initial
        if cpu_throttle_increment is not None:
            arguments["cpu-throttle-increment"] = cpu_throttle_increment
        if cpu_throttle_tailslow is not None:
            arguments["cpu-throttle-tailslow"] = cpu_throttle_tailslow
        if not isinstance(tls_creds, Absent):
            arguments["tls-creds"] = tls_creds
        if not isinstance(tls_hostname, Absent):
            arguments["tls-hostname"] = tls_hostname
        if not isinstance(tls_authz, Absent):
            arguments["tls-authz"] = tls_authz
        if max_bandwidth is not None:
            arguments["max-bandwidth"] = max_bandwidth
        if downtime_limit is not None:
            arguments["downtime-limit"] = downtime_limit
        if x_checkpoint_delay is not None:
            arguments["x-checkpoint-delay"] = x_checkpoint_delay
        if block_incremental is not None:
            arguments["block-incremental"] = block_incremental
        if multifd_channels is not None:
            arguments["multifd-channels"] = multifd_channels
        if xbzrle_cache_size is not None:
            arguments["xbzrle-cache-size"] = xbzrle_cache_size
        if max_postcopy_bandwidth is not None:
            arguments["max-postcopy-bandwidth"] = max_postcopy_bandwidth
        if max_cpu_throttle is not None:
            arguments["max-cpu-throttle"] = max_cpu_throttle
        if multifd_compression is not None:
            arguments["multifd-compression"] = multifd_compression
        if multifd_zlib_level is not None:
            arguments["multifd-zlib-level"] = multifd_zlib_level
        if multifd_zstd_level is not None:
            arguments["multifd-zstd-level"] = multifd_zstd_level
        if zero_page_detection is not None:
            arguments["zero-page-detection"] = zero_page_detection
        if not isinstance(x_vmkit_fault, Absent):
            arguments["x-vmkit-fault"] = x_vmkit_fault
        self._execute("migrate-set-parameters", arguments)

    def query_migrate_parameters(self) -> MigrationParameters:
        """``query-migrate-parameters``."""
        arguments: dict[str, object] = {}
        return cast(MigrationParameters, self._execute("query-migrate-parameters", arguments))

    def migrate_cancel(self) -> None:
        """``migrate_cancel``."""
        arguments: dict[str, object] = {}
        self._execute("migrate_cancel", arguments)

    def migrate_continue(
        self,
        *,
        state: MigrationStatus,
    ) -> None:
        """``migrate-continue``."""
        arguments: dict[str, object] = {"state": state}
        self._execute("migrate-continue", arguments)

    def migrate(
        self,
        *,
        uri: str | None = None,
        channels: Sequence[MigrationChannel] | None = None,
        detach: bool | None = None,
        resume: bool | None = None,
        blk: bool | None = None,
        inc: bool | None = None,
        capabilities: Sequence[MigrationCapabilityStatus] | None = None,
        parameters: MigrateSetParameters | None = None,
    ) -> None:
        """``migrate``."""
        arguments: dict[str, object] = {}
        if uri is not None:
            arguments["uri"] = uri
        if channels is not None:
            arguments["channels"] = channels
        if detach is not None:
            arguments["detach"] = detach
        if resume is not None:
            arguments["resume"] = resume
        if blk is not None:
            arguments["blk"] = blk
        if inc is not None:
            arguments["inc"] = inc
        if capabilities is not None:
            arguments["capabilities"] = capabilities
        if parameters is not None:
            arguments["parameters"] = parameters
        self._execute("migrate", arguments)

    def migrate_incoming(
        self,
        *,
        uri: str | None = None,
        channels: Sequence[MigrationChannel] | None = None,
        x_vmkit_unmodelled: VmkitUnmodelledPolicy | None = None,
    ) -> None:
        """``migrate-incoming``."""
        arguments: dict[str, object] = {}
        if uri is not None:
            arguments["uri"] = uri
        if channels is not None:
            arguments["channels"] = channels
        if x_vmkit_unmodelled is not None:
            arguments["x-vmkit-unmodelled"] = x_vmkit_unmodelled
        self._execute("migrate-incoming", arguments)

    def calc_dirty_rate(
        self,
        *,
        calc_time: int,
        calc_time_unit: TimeUnit | None = None,
        sample_pages: int | None = None,
        mode: DirtyRateMeasureMode | None = None,
    ) -> None:
        """``calc-dirty-rate``."""
        arguments: dict[str, object] = {"calc-time": calc_time}
        if calc_time_unit is not None:
            arguments["calc-time-unit"] = calc_time_unit
        if sample_pages is not None:
            arguments["sample-pages"] = sample_pages
        if mode is not None:
            arguments["mode"] = mode
        self._execute("calc-dirty-rate", arguments)

    def query_dirty_rate(
        self,
        *,
        calc_time_unit: TimeUnit | None = None,
    ) -> DirtyRateInfo:
        """``query-dirty-rate``."""
        arguments: dict[str, object] = {}
        if calc_time_unit is not None:
            arguments["calc-time-unit"] = calc_time_unit
        return cast(DirtyRateInfo, self._execute("query-dirty-rate", arguments))

    def qmp_capabilities(
        self,
        *,
        enable: Sequence[QMPCapability] | None = None,
    ) -> None:
        """``qmp_capabilities``."""
        arguments: dict[str, object] = {}
        if enable is not None:
            arguments["enable"] = enable
        self._execute("qmp_capabilities", arguments)

    def query_version(self) -> VersionInfo:
        """``query-version``."""
        arguments: dict[str, object] = {}
        return cast(VersionInfo, self._execute("query-version", arguments))

    def query_commands(self) -> list[CommandInfo]:
        """``query-commands``."""
        arguments: dict[str, object] = {}
        return cast(list[CommandInfo], self._execute("query-commands", arguments))

    def quit(self) -> None:
        """``quit``."""
        arguments: dict[str, object] = {}
        self._execute("quit", arguments)

    def query_qmp_schema(self) -> list[SchemaInfo]:
        """``query-qmp-schema``."""
        arguments: dict[str, object] = {}
        return cast(list[SchemaInfo], self._execute("query-qmp-schema", arguments))

    def qom_list(
        self,
        *,
        path: str,
    ) -> list[ObjectPropertyInfo]:
        """``qom-list``."""
        arguments: dict[str, object] = {"path": path}
        return cast(list[ObjectPropertyInfo], self._execute("qom-list", arguments))

    def qom_get(
        self,
        *,
        path: str,
        property: str,
    ) -> JSONValue:
        """``qom-get``."""
        arguments: dict[str, object] = {"path": path, "property": property}
        return cast(JSONValue, self._execute("qom-get", arguments))

    def qom_set(
        self,
        *,
        path: str,
        property: str,
        value: JSONValue,
    ) -> None:
        """``qom-set``."""
        arguments: dict[str, object] = {"path": path, "property": property, "value": value}
        self._execute("qom-set", arguments)

    def qom_list_types(
        self,
        *,
        implements: str | None = None,
        abstract: bool | None = None,
    ) -> list[ObjectTypeInfo]:
        """``qom-list-types``."""
        arguments: dict[str, object] = {}
        if implements is not None:
            arguments["implements"] = implements
        if abstract is not None:
            arguments["abstract"] = abstract
        return cast(list[ObjectTypeInfo], self._execute("qom-list-types", arguments))

    def qom_list_properties(
        self,
        *,
        typename: str,
    ) -> list[ObjectPropertyInfo]:
        """``qom-list-properties``."""
        arguments: dict[str, object] = {"typename": typename}
        return cast(list[ObjectPropertyInfo], self._execute("qom-list-properties", arguments))

    def object_add(
        self,
        *,
        qom_type: str,
        id: str,
        properties: Mapping[str, JSONValue] | None = None,
    ) -> None:
        """``object-add``."""
        arguments: dict[str, object] = {"qom-type": qom_type, "id": id}
        if properties is not None:
            arguments.update(properties)
        self._execute("object-add", arguments)

    def object_del(
        self,
        *,
        id: str,
    ) -> None:
        """``object-del``."""
        arguments: dict[str, object] = {"id": id}
        self._execute("object-del", arguments)

    def device_list_properties(
        self,
        *,
        typename: str,
    ) -> list[ObjectPropertyInfo]:
        """``device-list-properties``."""
        arguments: dict[str, object] = {"typename": typename}
        return cast(list[ObjectPropertyInfo], self._execute("device-list-properties", arguments))

    def device_add(
        self,
        *,
        driver: str,
        bus: str | None = None,
        id: str | None = None,
        properties: Mapping[str, JSONValue] | None = None,
    ) -> None:
        """``device_add``."""
        arguments: dict[str, object] = {"driver": driver}
        if bus is not None:
            arguments["bus"] = bus
        if id is not None:
            arguments["id"] = id
        if properties is not None:
            arguments.update(properties)
        self._execute("device_add", arguments)

    def device_del(
        self,
        *,
        id: str,
    ) -> None:
        """``device_del``."""
        arguments: dict[str, object] = {"id": id}
        self._execute("device_del", arguments)

    def system_reset(self) -> None:
        """``system_reset``."""
        arguments: dict[str, object] = {}
        self._execute("system_reset", arguments)

    def pmemsave(
        self,
        *,
        val: int,
        size: int,
        filename: str,
    ) -> None:
        """``pmemsave``."""
        arguments: dict[str, object] = {"val": val, "size": size, "filename": filename}
        self._execute("pmemsave", arguments)

    def query_pci(self) -> list[PciInfo]:
        """``query-pci``."""
        arguments: dict[str, object] = {}
        return cast(list[PciInfo], self._execute("query-pci", arguments))

    def input_send_event(
        self,
        *,
        device: str | None = None,
        head: int | None = None,
        events: Sequence[InputEvent],
    ) -> None:
        """``input-send-event``."""
        arguments: dict[str, object] = {"events": events}
        if device is not None:
            arguments["device"] = device
        if head is not None:
            arguments["head"] = head
        self._execute("input-send-event", arguments)

    def query_name(self) -> NameInfo:
        """``query-name``."""
        arguments: dict[str, object] = {}
        return cast(NameInfo, self._execute("query-name", arguments))

    def stop(self) -> None:
        """``stop``."""
        arguments: dict[str, object] = {}
        self._execute("stop", arguments)

    def cont(self) -> None:
        """``cont``."""
        arguments: dict[str, object] = {}
        self._execute("cont", arguments)

    def human_monitor_command(
        self,
        *,
        command_line: str,
        cpu_index: int | None = None,
    ) -> str:
        """``human-monitor-command``."""
        arguments: dict[str, object] = {"command-line": command_line}
        if cpu_index is not None:
            arguments["cpu-index"] = cpu_index
        return cast(str, self._execute("human-monitor-command", arguments))

    def getfd(
        self,
        *,
        fdname: str,
    ) -> None:
        """``getfd``."""
        arguments: dict[str, object] = {"fdname": fdname}
        self._execute("getfd", arguments)

    def closefd(
        self,
        *,
        fdname: str,
    ) -> None:
        """``closefd``."""
        arguments: dict[str, object] = {"fdname": fdname}
        self._execute("closefd", arguments)

    def x_vmkit_save(
        self,
        *,
        path: str,
    ) -> VmkitSaveStats:
        """``x-vmkit-save`` (unstable)."""
        arguments: dict[str, object] = {"path": path}
        return cast(VmkitSaveStats, self._execute("x-vmkit-save", arguments))

    @overload
    def listen(self, name: Literal["SHUTDOWN"], /) -> Listener[ShutdownEvent]: ...

    @overload
    def listen(self, name: Literal["RESET"], /) -> Listener[ResetEvent]: ...

    @overload
    def listen(self, name: Literal["STOP"], /) -> Listener[StopEvent]: ...

    @overload
    def listen(self, name: Literal["RESUME"], /) -> Listener[ResumeEvent]: ...

    @overload
    def listen(self, name: Literal["MIGRATION"], /) -> Listener[MigrationEvent]: ...

    @overload
    def listen(self, name: Literal["MIGRATION_PASS"], /) -> Listener[MigrationPassEvent]: ...

    @overload
    def listen(self, name: Literal["DEVICE_DELETED"], /) -> Listener[DeviceDeletedEvent]: ...

    @overload
    def listen(self, name: EventName, /, *names: EventName) -> Listener[AnyEvent]: ...

    def listen(self, name: EventName, /, *names: EventName) -> Listener[Any]:
        """Events called ``name`` (or any of ``names``) from the moment
        the ``with`` block is entered: enter it, then run the command
        that causes them, and none is missed."""
        return self._listen((name, *names))
