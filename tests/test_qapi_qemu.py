"""vmkit's QMP schema against QEMU's.

For every command and event vmkit and QEMU both have, the arguments —
names, types (by shape: QEMU hides type names), optionality, features —
agree with the ``query-qmp-schema`` of QEMU 7.2 recorded in
``tests/data/qemu-7.2-qmp-schema.json``, except for the differences listed
in :data:`EXPECTED`, each with its reason: vmkit follows QEMU 9.2 (the
version it announces) where 9.2 differs from 7.2, vmkit's own extensions
(which carry the ``unstable`` feature and, when vmkit named them, the
``x-vmkit-`` prefix), and what vmkit does not model. With QEMU installed,
the recording is checked against the installed QEMU's answer
(``python tests/qemu_qapi.py`` records it again).
"""

from __future__ import annotations

from typing import Any

import pytest

from qemu_qapi import Difference, by_name, differences, load, record
from qmp_peers import short_dir, start_peer, vmkit_command
from vmkit.qmp import QMPSocket

EXTENSION = "vmkit's extension"
NOT_MODELLED = "not modelled by vmkit"

#: Every difference, and why. Kinds: a QEMU version after 7.2 (vmkit
#: follows 9.2), EXTENSION, NOT_MODELLED, or a deliberate difference.
EXPECTED: dict[str, str] = {
    # QEMU after 7.2
    "MIGRATION.status: value only in vmkit: postcopy-recover-setup": "QEMU 9.1",
    "migrate-continue.state: value only in vmkit: postcopy-recover-setup": "QEMU 9.1",
    "calc-dirty-rate.calc-time-unit: only in vmkit": "QEMU 8.2",
    "query-dirty-rate.calc-time-unit: only in vmkit": "QEMU 8.2",
    "migrate.channels: only in vmkit": "QEMU 8.2",
    "migrate.uri: optional only in vmkit": "QEMU 8.2 (uri or channels)",
    "migrate-incoming.channels: only in vmkit": "QEMU 8.2",
    "migrate-incoming.uri: optional only in vmkit": "QEMU 8.2 (uri or channels)",
    "migrate-set-parameters.zero-page-detection: only in vmkit": "QEMU 9.0",
    "migrate.blk: features only in vmkit: ['deprecated']": "QEMU 8.1 (removed in 9.1)",
    "migrate.inc: features only in vmkit: ['deprecated']": "QEMU 8.1 (removed in 9.1)",
    # vmkit's own
    "x-vmkit-save: command only in vmkit": EXTENSION,
    "migrate.capabilities: only in vmkit": EXTENSION,
    "migrate.parameters: only in vmkit": EXTENSION,
    "migrate-incoming.x-vmkit-unmodelled: only in vmkit": EXTENSION,
    "migrate-set-parameters.x-vmkit-fault: only in vmkit": EXTENSION,
    # What vmkit does not have
    "migrate-set-parameters.block-bitmap-mapping: only in QEMU": f"{NOT_MODELLED}: no block layer",
    "human-monitor-command: features only in QEMU: ['savevm-monitor-nodes']": (
        f"{NOT_MODELLED}: no HMP savevm/loadvm"
    ),
    # Deliberate
    "device_add: features only in QEMU: ['json-cli', 'json-cli-hotplug']": (
        "vmkit's -device takes QEMU's option syntax, not JSON"
    ),
    "object-add.qom-type: enum in QEMU, builtin in vmkit": (
        "vmkit's user-creatable types are registered at run time: a string, checked by the handler"
    ),
    "object-add: union tag qom-type in QEMU, None in vmkit": (
        "the type's properties come as further members ('gen': false)"
    ),
}


@pytest.fixture(scope="module")
def vmkit_info() -> dict[str, Any]:
    """``query-qmp-schema`` of ``vmkit run``, by entry name."""
    with short_dir() as d:
        sock = d / "v.qmp"
        with (
            start_peer("vmkit", vmkit_command(sock, ["-m", "16M"]), sock),
            QMPSocket(sock, negotiate=True) as qmp,
        ):
            return by_name(qmp.execute("query-qmp-schema"))


@pytest.fixture(scope="module")
def found(vmkit_info: dict[str, Any]) -> list[Difference]:
    return differences(by_name(load()["schema"]), vmkit_info)


def test_vmkit_agrees_with_qemu_except_where_listed(found: list[Difference]) -> None:
    listed = set(EXPECTED)
    actual = {str(d) for d in found}
    assert actual - listed == set(), "differences nobody explained"
    assert listed - actual == set(), "listed differences that are gone"


def test_extensions_are_unstable_or_x_vmkit(found: list[Difference]) -> None:
    extensions = [d for d in found if EXPECTED[str(d)] == EXTENSION]
    assert len(extensions) == 5
    for d in extensions:
        # QAPI's rule is the x- prefix or the feature; vmkit's are all unstable.
        assert "unstable" in d.vmkit_features, d
    # Whatever only vmkit has is an extension or newer QEMU's.
    for d in found:
        if "only in vmkit" in d.what and EXPECTED[str(d)] != EXTENSION:
            assert EXPECTED[str(d)].startswith("QEMU "), d


def test_vmkit_announces_the_version_whose_schema_it_follows(vmkit_info: dict[str, Any]) -> None:
    from vmkit.monitor import QEMU_VERSION

    assert QEMU_VERSION[:2] == (9, 2)
    assert load()["version"]["qemu"]["major"] == 7, "the recording and EXPECTED are 7.2's"


@pytest.mark.qemu
def test_the_recording_is_the_installed_qemus(qemu_binary: str) -> None:
    recorded = load()
    live = record(qemu_binary)
    version = live["version"]["qemu"]
    if (version["major"], version["minor"]) != (7, 2):
        pytest.skip(f"QEMU {version['major']}.{version['minor']} installed; the recording is 7.2's")
    assert live["schema"] == recorded["schema"], "re-record with: python tests/qemu_qapi.py"


# --- the comparison itself -------------------------------------------------------------


def _info(*entries: dict[str, Any]) -> dict[str, Any]:
    builtins = [
        {"name": "str", "meta-type": "builtin", "json-type": "string"},
        {"name": "int", "meta-type": "builtin", "json-type": "int"},
        {"name": "0", "meta-type": "object", "members": []},
    ]
    return by_name([*builtins, *entries])


def _command(args: str) -> dict[str, Any]:
    return {"name": "c", "meta-type": "command", "arg-type": args, "ret-type": "0"}


def test_differences_finds_members_optionality_types_values_and_branches() -> None:
    qemu = _info(
        _command("1"),
        {
            "name": "1",
            "meta-type": "object",
            "members": [
                {"name": "a", "type": "str"},
                {"name": "b", "type": "int"},
                {"name": "k", "type": "2"},
                {"name": "q", "type": "str"},
            ],
            "tag": "k",
            "variants": [{"case": "x", "type": "3"}, {"case": "y", "type": "0"}],
        },
        {"name": "2", "meta-type": "enum", "members": [{"name": "x"}, {"name": "y"}]},
        {"name": "3", "meta-type": "object", "members": [{"name": "m", "type": "int"}]},
    )
    vmkit = _info(
        _command("7"),
        {"name": "E", "meta-type": "event", "arg-type": "0"},
        {
            "name": "7",
            "meta-type": "object",
            "members": [
                {"name": "a", "type": "str", "default": None},
                {"name": "b", "type": "str"},
                {"name": "k", "type": "8"},
                {"name": "v", "type": "int", "features": ["unstable"]},
            ],
            "tag": "k",
            "variants": [{"case": "x", "type": "9"}, {"case": "z", "type": "0"}],
        },
        {
            "name": "8",
            "meta-type": "enum",
            "members": [{"name": "x"}, {"name": "z", "features": ["unstable"]}],
        },
        {"name": "9", "meta-type": "object", "members": [{"name": "m", "type": "str"}]},
    )
    found = differences(qemu, vmkit)
    assert [str(d) for d in found] == [
        "E: event only in vmkit",
        "c(k=x).m: int in QEMU, string in vmkit",
        "c(k=y): branch only in QEMU",
        "c(k=z): branch only in vmkit",
        "c.a: optional only in vmkit",
        "c.b: int in QEMU, string in vmkit",
        "c.k: value only in vmkit: z",
        "c.k: values only in QEMU: ['y']",
        "c.q: only in QEMU",
        "c.v: only in vmkit",
    ]
    assert {str(d): d.vmkit_features for d in found}["c.v: only in vmkit"] == ("unstable",)
    assert differences(qemu, qemu) == []
