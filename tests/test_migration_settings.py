"""Migration capabilities and parameters: QEMU 7.2's names, defaults,
checks and messages, and all-or-nothing changes. (tests/test_qmp_compat.py
runs the same commands against a real QEMU.)"""

# ruff: noqa: E501  (tables of QEMU's messages, one case a line)

from __future__ import annotations

from typing import Any

import pytest

from vmkit.migration_settings import CAPABILITIES, MigrationSettings, SettingsError


def test_defaults_are_qemus() -> None:
    s = MigrationSettings()
    assert not any(s.capabilities().values()) and len(CAPABILITIES) == 21
    p = s.parameters()
    assert p["max-bandwidth"] == 128 << 20
    assert p["downtime-limit"] == 300
    assert p["multifd-channels"] == 2
    assert p["cpu-throttle-initial"] == 20 and p["cpu-throttle-increment"] == 10
    assert p["throttle-trigger-threshold"] == 50 and p["max-cpu-throttle"] == 99
    assert p["tls-creds"] == "" and p["multifd-compression"] == "none"
    assert s.query_capabilities()[0] == {"capability": "xbzrle", "state": False}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"downtime-limit": 2000001},
            "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
        ),
        (
            {"downtime-limit": -1},
            "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
        ),
        (
            {"cpu-throttle-initial": 0},
            "Parameter 'cpu_throttle_initial' expects an integer in the range of 1 to 99",
        ),
        (
            {"cpu-throttle-increment": 100},
            "Parameter 'cpu_throttle_increment' expects an integer in the range of 1 to 99",
        ),
        (
            {"throttle-trigger-threshold": 0},
            "Parameter 'throttle_trigger_threshold' expects an integer in the range of 1 to 100",
        ),
        ({"multifd-channels": 0}, "Parameter 'multifd_channels' expects a value between 1 and 255"),
        ({"compress-level": 10}, "Parameter 'compress_level' expects a value between 0 and 9"),
        ({"compress-threads": 0}, "Parameter 'compress_threads' expects a value between 1 and 255"),
        (
            {"decompress-threads": 0},
            "Parameter 'decompress_threads' expects a value between 1 and 255",
        ),
        (
            {"max-cpu-throttle": 10},
            "Parameter 'max_cpu_throttle' expects an integer in the range of cpu_throttle_initial to 99",
        ),
        (
            {"xbzrle-cache-size": 1000},
            "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size",
        ),
        (
            {"announce-initial": 100001},
            "Parameter 'announce_initial' expects a value between 0 and 100000",
        ),
        (
            {"announce-rounds": 1001},
            "Parameter 'announce_rounds' expects a value between 0 and 1000",
        ),
        ({"announce-step": 0}, "Parameter 'announce_step' expects a value between 0 and 10000"),
        (
            {"multifd-compression": "lz4"},
            "Parameter 'multifd-compression' does not accept value 'lz4'",
        ),
        (
            {"cpu-throttle-tailslow": 1},
            "Invalid parameter type for 'cpu-throttle-tailslow', expected: boolean",
        ),
        ({"tls-creds": 5}, "Invalid parameter type for 'tls-creds', expected: StrOrNull"),
        ({"x-checkpoint-delay": -1}, "Parameter 'x-checkpoint-delay' expects uint32_t"),
        ({"compress-threads": 256}, "Parameter 'compress-threads' expects uint8_t"),
        ({"max-bandwidth": "x"}, "Parameter 'max-bandwidth' expects uint64"),
        ({"no-such": 1}, "Parameter 'no-such' is unexpected"),
        # QEMU checks in its own order: compress_level before compress_threads.
        (
            {"compress-threads": 0, "compress-level": 10},
            "Parameter 'compress_level' expects a value between 0 and 9",
        ),
    ],
)
def test_parameters_are_refused_with_qemus_messages(values: dict[str, Any], message: str) -> None:
    s = MigrationSettings()
    before = s.parameters()
    with pytest.raises(SettingsError) as info:
        s.set_parameters({"downtime-limit": 5, **values})
    assert str(info.value) == message
    assert s.parameters() == before, "a refused change changes nothing"


def test_parameters_that_pass_are_applied_together() -> None:
    s = MigrationSettings()
    s.set_parameters({"max-bandwidth": -1, "downtime-limit": 100, "tls-creds": None})
    p = s.parameters()
    # QAPI takes a negative integer for a uint64 modulo 2^64, as QEMU does.
    assert p["max-bandwidth"] == (1 << 64) - 1 and p["downtime-limit"] == 100
    assert p["tls-creds"] == ""
    s.set_parameters({"cpu-throttle-initial": 50, "max-cpu-throttle": 60})
    with pytest.raises(SettingsError, match="max_cpu_throttle"):
        s.set_parameters({"max-cpu-throttle": 40})


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [{"capability": "nope", "state": True}],
            "Parameter 'capability' does not accept value 'nope'",
        ),
        ([{"capability": "events"}], "Parameter 'capabilities[0].state' is missing"),
        ({}, "Invalid parameter type for 'capabilities', expected: array"),
        (
            [{"capability": "postcopy-preempt", "state": True}],
            "Postcopy preempt requires postcopy-ram",
        ),
        (
            [{"capability": "zero-copy-send", "state": True}],
            "Zero copy only available for non-compressed non-TLS multifd migration",
        ),
        (
            [
                {"capability": "background-snapshot", "state": True},
                {"capability": "compress", "state": True},
            ],
            "Background-snapshot is not compatible with compress",
        ),
    ],
)
def test_capabilities_are_refused_with_qemus_messages(entries: object, message: str) -> None:
    s = MigrationSettings()
    with pytest.raises(SettingsError) as info:
        s.set_capabilities(entries)
    assert str(info.value) == message
    assert not any(s.capabilities().values())


def test_capabilities_change_together_and_snapshots_are_independent() -> None:
    s = MigrationSettings()
    s.set_capabilities(
        [
            {"capability": "events", "state": True},
            {"capability": "multifd", "state": True},
            {"capability": "zero-copy-send", "state": True},
        ]
    )
    frozen = s.snapshot()
    s.set_capabilities([{"capability": "events", "state": False}])
    assert frozen.capabilities()["events"] and not s.capabilities()["events"]
    assert s.capabilities()["zero-copy-send"]


def test_auto_converge_throttles_after_two_high_passes_and_steps_up() -> None:
    from vmkit.migrations import AutoConverge

    params = MigrationSettings().parameters()  # threshold 50 %, 20 then +10, at most 99
    ac = AutoConverge(params)
    assert ac.after_pass(dirtied_bytes=40, sent_bytes=100) == 0, "below the threshold"
    assert ac.after_pass(dirtied_bytes=60, sent_bytes=100) == 0, "one high pass is not enough"
    assert ac.after_pass(dirtied_bytes=60, sent_bytes=100) == 20, "the second: initial"
    assert ac.after_pass(dirtied_bytes=90, sent_bytes=100) == 20
    assert ac.after_pass(dirtied_bytes=90, sent_bytes=100) == 30, "then the increment"
    for _ in range(20):
        ac.after_pass(dirtied_bytes=500, sent_bytes=100)
    assert ac.percentage == 99, "never above max-cpu-throttle"


def test_auto_converge_tailslow_steps_by_the_overshoot() -> None:
    from vmkit.migrations import AutoConverge

    settings = MigrationSettings()
    settings.set_parameters({"cpu-throttle-tailslow": True, "cpu-throttle-increment": 30})
    ac = AutoConverge(settings.parameters())
    for _ in range(2):
        ac.after_pass(dirtied_bytes=200, sent_bytes=100)
    assert ac.percentage == 20
    for _ in range(2):
        ac.after_pass(dirtied_bytes=125, sent_bytes=100)
    # An overshoot of 1.25 asks 20 * (1 - 1/1.25) = 4 points, not the full 30.
    assert ac.percentage == 24
