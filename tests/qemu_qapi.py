"""Helpers of tests/test_qapi_qemu.py: QEMU's schema, recorded, and how
two ``query-qmp-schema`` answers differ.

``python tests/qemu_qapi.py`` records the installed ``qemu-system-x86_64``'s
``query-qmp-schema`` (and ``query-version``) into :data:`RECORDING`, one
entry per line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECORDING = Path(__file__).resolve().parent / "data" / "qemu-7.2-qmp-schema.json"
TIMEOUT = 20.0

Info = Mapping[str, Mapping[str, Any]]
"""A ``query-qmp-schema`` answer by entry name."""


# --- recording -------------------------------------------------------------------


def record(binary: str) -> dict[str, Any]:
    """``{"version": query-version, "schema": query-qmp-schema}`` of
    ``binary`` (no machine, paused, no devices)."""
    from vmkit.qmp import QMPSocket

    directory = Path(tempfile.mkdtemp(prefix="qrec-"))
    sock = directory / "q.sock"
    args = [binary, "-M", "none", "-nodefaults", "-display", "none", "-S"]
    proc = subprocess.Popen(
        [*args, "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                assert proc.stderr is not None
                raise RuntimeError(f"{binary} did not serve QMP: {proc.stderr.read()!r}")
            time.sleep(0.02)
        with QMPSocket(str(sock), negotiate=True, timeout=TIMEOUT) as qmp:
            version = qmp.execute("query-version")
            schema = qmp.execute("query-qmp-schema")
            qmp.execute("quit")
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)
    return {"version": version, "schema": schema}


def dumps(recording: Mapping[str, Any]) -> str:
    """The recording as written: one schema entry per line (readable diffs)."""
    entries = ",\n".join(json.dumps(e, sort_keys=True) for e in recording["schema"])
    version = json.dumps(recording["version"], sort_keys=True)
    return f'{{"version": {version},\n"schema": [\n{entries}\n]}}\n'


def load() -> dict[str, Any]:
    """The committed recording."""
    recording: dict[str, Any] = json.loads(RECORDING.read_text())
    return recording


def by_name(schema: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {entry["name"]: entry for entry in schema}


# --- comparison --------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One place where vmkit's schema and QEMU's differ."""

    path: str
    """``command.member``, ``EVENT.member.member``, ``command.member[]`` (array
    elements), ``command.member(tag=case)`` (a union's branch)."""
    what: str
    vmkit_features: tuple[str, ...] = ()
    """The features of what only vmkit has (a member, an enum value, a command)."""

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def _members(entry: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {m["name"]: m for m in entry.get("members", [])}


def _features(entry: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(entry.get("features", ()))


class _Comparer:
    def __init__(self, qemu: Info, vmkit: Info) -> None:
        self.qemu = qemu
        self.vmkit = vmkit
        self.out: list[Difference] = []
        self.done: set[tuple[str, str, str]] = set()

    def add(self, path: str, what: str, features: tuple[str, ...] = ()) -> None:
        self.out.append(Difference(path, what, features))

    def features(self, path: str, q: tuple[str, ...], v: tuple[str, ...]) -> None:
        if set(q) - set(v):
            self.add(path, f"features only in QEMU: {sorted(set(q) - set(v))}")
        if set(v) - set(q):
            self.add(path, f"features only in vmkit: {sorted(set(v) - set(q))}", v)

    def types(self, q_name: str, v_name: str, path: str) -> None:
        key = (q_name, v_name, path)
        if key in self.done:
            return
        self.done.add(key)
        q, v = self.qemu[q_name], self.vmkit[v_name]
        meta = q["meta-type"]
        if meta != v["meta-type"]:
            self.add(path, f"{meta} in QEMU, {v['meta-type']} in vmkit")
            return
        if meta == "builtin" and q["json-type"] != v["json-type"]:
            self.add(path, f"{q['json-type']} in QEMU, {v['json-type']} in vmkit")
        elif meta == "enum":
            self.enum(q, v, path)
        elif meta == "array":
            self.types(q["element-type"], v["element-type"], f"{path}[]")
        elif meta == "alternate":
            qb = [self.qemu[m["type"]]["meta-type"] for m in q["members"]]
            vb = [self.vmkit[m["type"]]["meta-type"] for m in v["members"]]
            if len(qb) != len(vb):
                self.add(path, f"alternate of {qb} in QEMU, of {vb} in vmkit")
            else:
                for qm, vm in zip(q["members"], v["members"], strict=True):
                    self.types(qm["type"], vm["type"], path)
        elif meta == "object":
            self.object(q, v, path)

    def enum(self, q: Mapping[str, Any], v: Mapping[str, Any], path: str) -> None:
        qm, vm = _members(q), _members(v)
        only_q = [n for n in qm if n not in vm]
        if only_q:
            self.add(path, f"values only in QEMU: {only_q}")
        for name in vm:
            if name not in qm:
                self.add(path, f"value only in vmkit: {name}", _features(vm[name]))
            else:
                self.features(f"{path}={name}", _features(qm[name]), _features(vm[name]))

    def object(self, q: Mapping[str, Any], v: Mapping[str, Any], path: str) -> None:
        qm, vm = _members(q), _members(v)
        for name in qm:
            if name not in vm:
                self.add(f"{path}.{name}", "only in QEMU")
        for name, member in vm.items():
            where = f"{path}.{name}"
            if name not in qm:
                self.add(where, "only in vmkit", _features(member))
                continue
            other = qm[name]
            if ("default" in other) != ("default" in member):
                side = "vmkit" if "default" in member else "QEMU"
                self.add(where, f"optional only in {side}")
            self.features(where, _features(other), _features(member))
            self.types(other["type"], member["type"], where)
        if q.get("tag") != v.get("tag"):
            self.add(path, f"union tag {q.get('tag')} in QEMU, {v.get('tag')} in vmkit")
            return
        qv = {c["case"]: c["type"] for c in q.get("variants", [])}
        vv = {c["case"]: c["type"] for c in v.get("variants", [])}
        for case in qv.keys() - vv.keys():
            self.add(f"{path}({q['tag']}={case})", "branch only in QEMU")
        for case in vv.keys() - qv.keys():
            self.add(f"{path}({v['tag']}={case})", "branch only in vmkit")
        for case in qv.keys() & vv.keys():
            self.types(qv[case], vv[case], f"{path}({q['tag']}={case})")

    def entities(self) -> None:
        for name, v in self.vmkit.items():
            if v["meta-type"] not in ("command", "event"):
                continue
            q = self.qemu.get(name)
            if q is None or q["meta-type"] != v["meta-type"]:
                self.add(name, f"{v['meta-type']} only in vmkit", _features(v))
                continue
            self.features(name, _features(q), _features(v))
            self.types(q["arg-type"], v["arg-type"], name)


def differences(qemu: Info, vmkit: Info) -> list[Difference]:
    """Where the arguments (names, types, optionality, features) of the
    commands and events ``vmkit`` has differ from ``qemu``'s, and what only
    vmkit has. Types are compared by shape, not by their opaque names."""
    comparer = _Comparer(qemu, vmkit)
    comparer.entities()
    return sorted(comparer.out, key=str)


if __name__ == "__main__":
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        sys.exit("qemu-system-x86_64 not found")
    RECORDING.write_text(dumps(record(qemu)))
    print(f"recorded {RECORDING}")
