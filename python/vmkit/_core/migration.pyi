"""Stubs of ``vmkit._core.migration``: bindings of the migration stream (vmkit-migration)."""

import os
from collections.abc import Callable
from typing import Any, Self, final

from vmkit._core.memory import RamBlock
from vmkit._core.qom import Object

__all__ = [
    "FdRegistry",
    "Listener",
    "Precopy",
    "VMStateDescription",
    "VMStateField",
    "analyze",
    "load_ram",
    "register_device_vmstate",
    "restore",
    "save",
]

_KindSpec = str | dict[str, Any]
_State = dict[str, Any]

@final
class VMStateField:
    """One field of a VMState description."""
    def __new__(
        cls,
        name: str,
        kind: _KindSpec,
        *,
        since: int | None = None,
        exists: Callable[[_State, int], bool] | None = None,
    ) -> Self: ...
    @property
    def name(self) -> str: ...
    @property
    def since(self) -> int: ...

@final
class VMStateDescription:
    """A VMState description: how a device's state is laid out on the wire."""
    def __new__(
        cls,
        name: str,
        fields: list[VMStateField],
        *,
        version_id: int = 1,
        minimum_version_id: int | None = None,
        subsections: list[VMStateDescription] = ...,
        priority: str = "default",
        pre_save: Callable[[_State], object] | None = None,
        pre_load: Callable[[_State], object] | None = None,
        post_load: Callable[[_State, int], object] | None = None,
        needed: Callable[[_State], bool] | None = None,
    ) -> Self: ...
    @property
    def name(self) -> str: ...
    @property
    def version_id(self) -> int: ...
    @property
    def minimum_version_id(self) -> int: ...
    @property
    def field_names(self) -> list[str]: ...
    @property
    def subsection_names(self) -> list[str]: ...
    def encode(self, state: _State) -> bytes: ...
    def decode(self, body: bytes, version_id: int | None = None) -> _State: ...

def analyze(path: str | os.PathLike[str]) -> str: ...
def load_ram(path: str | os.PathLike[str], blocks: list[RamBlock]) -> str: ...
def save(
    path: str | os.PathLike[str],
    *,
    machine_type: str,
    ram: list[RamBlock],
    devices: Object | None = None,
    footers: bool = True,
    vmdesc: bool = True,
    open_timeout: float | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, int]: ...
def restore(
    path: str | os.PathLike[str],
    *,
    machine_type: str,
    ram: list[RamBlock],
    devices: Object | None = None,
    footers: bool = True,
    cancelled: Callable[[], bool] | None = None,
    report_unmodelled: bool = False,
) -> dict[str, Any]: ...
def register_device_vmstate(
    type_name: str,
    vmsd: VMStateDescription,
    *,
    save: Callable[[Object], _State] | None = None,
    load: Callable[[Object, _State, int], object] | None = None,
) -> None: ...

@final
class FdRegistry:
    def __new__(cls) -> FdRegistry: ...
    def add(self, name: str, fd: int) -> None: ...
    def close(self, name: str) -> None: ...
    def names(self) -> list[str]: ...
    def __len__(self) -> int: ...

@final
class Listener:
    def __new__(
        cls,
        uri: str,
        *,
        allow_remote: bool = False,
        fds: FdRegistry | None = None,
        ignore_shared: bool = False,
    ) -> Listener: ...
    @property
    def uri(self) -> str: ...
    def restore(
        self,
        *,
        machine_type: str,
        ram: list[RamBlock],
        devices: Object | None = None,
        footers: bool = True,
        timeout: float | None = None,
        cancelled: Callable[[], bool] | None = None,
        report_unmodelled: bool = False,
    ) -> dict[str, Any]: ...
    def close(self) -> None: ...

@final
class Precopy:
    def __new__(
        cls,
        uri: str,
        *,
        max_bandwidth: int = ...,
        downtime_limit_ms: int | None = None,
        max_passes: int = ...,
        allow_remote: bool = False,
        fds: FdRegistry | None = None,
        zero_page_detection: bool = True,
        ignore_shared: bool = False,
        return_path: bool = False,
    ) -> Precopy: ...
    @property
    def uri(self) -> str: ...
    def run(
        self,
        *,
        machine_type: str,
        ram: list[RamBlock],
        stop: Callable[[], object],
        devices: Object | None = None,
        timeout: float | None = None,
        progress: Callable[[str, int], object] | None = None,
    ) -> dict[str, Any]: ...
    def inject_fault(
        self,
        action: str,
        *,
        offset: int | None = None,
        pass_number: int | None = None,
        section: str | None = None,
        length: int = 1,
        delay_ms: int = 0,
    ) -> None: ...
    def fault(self) -> dict[str, Any] | None: ...
    def cancel(self) -> None: ...
    def set_params(
        self, *, max_bandwidth: int | None = None, downtime_limit_ms: int | None = None
    ) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...
