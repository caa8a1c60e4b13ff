"""The QAPI schema's costs: query-qmp-schema, argument checking, the typed client.

Run: ``.venv/bin/python benches/py/bench_qapi.py`` (after ``make build``).

- ``query-qmp-schema``: the first answer's computation in this process
  (``schema_info``, cold) and the median round trip of the command against
  ``vmkit run -S`` with a plain socket client (send, read to the CRLF,
  decode the JSON): target ≤ 5 ms.
- argument checking: per command of a representative set, the median time
  to check its arguments (``checks``) and to dispatch it to a handler that
  does nothing (``dispatch``), in microseconds, on the monitor's registry.
  The same script runs against the tree before the schema (where each
  command had a hand-written table) to give today's figures:
  ``--checks-only`` skips the rest; see docs/PERFORMANCE.md for the
  command. Target: at most 10 µs more per command.
- typed client: ``query-status`` round trips per second against
  ``vmkit run -S`` with ``qemu.qmp``'s ``QMPClient.execute`` and with
  :class:`vmkit.qmp.typed.AsyncQMP` (and the synchronous ``QMP``), medians
  of ``--rounds``; target: the typed client within 1.2x of the raw one.

``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench_qmp import RawClient, vmkit_peer

ROUNDS = 7
COUNT = 2000

#: Commands and arguments as clients send them.
CASES: dict[str, dict[str, Any]] = {
    "query-status": {},
    "qom-get": {"path": "/objects/pc.ram", "property": "size"},
    "calc-dirty-rate": {"calc-time": 1, "calc-time-unit": "second", "mode": "page-sampling"},
    "device_add": {"driver": "x", "id": "d0", "bus": "pci.0", "addr": "0x3"},
    "migrate-set-parameters": {"downtime-limit": 300, "max-bandwidth": 1 << 30, "tls-creds": ""},
    "migrate-set-capabilities": {
        "capabilities": [
            {"capability": "events", "state": True},
            {"capability": "auto-converge", "state": False},
        ]
    },
    "migrate": {
        "uri": "unix:/run/dest.sock",
        "capabilities": [{"capability": "events", "state": True}],
        "parameters": {"max-bandwidth": 1 << 30, "downtime-limit": 500},
    },
}


def _median_us(fn: Callable[[], object], count: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        times.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(times)


def argument_checks(count: int, rounds: int) -> dict[str, float]:
    """µs per check and per no-op dispatch, by command (either tree's API)."""
    from vmkit.machine import Machine
    from vmkit.monitor import MachineMonitor
    from vmkit.qmp import CommandRegistry, SessionPhase, SessionState
    from vmkit.qmp.commands import check_arguments, dispatch_now

    with Machine(memory="16M") as vm:
        registry = MachineMonitor(vm).register(CommandRegistry())
    # The same declarations, handlers that do nothing.
    noop = CommandRegistry(registry.schema) if hasattr(registry, "schema") else CommandRegistry()
    noop.check_output = False
    for command in registry:
        if hasattr(command, "checker"):
            noop.register(command.name, lambda ctx: None)
        else:
            noop.register(command.name, lambda ctx: None, command.schema)
    session = SessionState(phase=SessionPhase.COMMAND)
    out: dict[str, float] = {}
    for name, arguments in CASES.items():
        command = registry.get(name)
        assert command is not None, name
        if hasattr(command, "checker"):
            check = partial(command.checker.check_arguments, arguments)
        else:
            check = partial(check_arguments, command.schema, arguments)
        out[f"check_us[{name}]"] = _median_us(check, count, rounds)
        request = {"execute": name, "arguments": arguments, "id": 1}
        reply = dispatch_now(noop, request, session)
        assert isinstance(reply, dict) and "return" in reply, reply
        dispatch = partial(dispatch_now, noop, request, session)
        out[f"dispatch_us[{name}]"] = _median_us(dispatch, count, rounds)
    return out


def schema_answer(path: Path, count: int, rounds: int) -> dict[str, float]:
    from vmkit.qmp.qapi import vmkit_schema
    from vmkit.qmp.qapi.introspect import schema_info

    schema = vmkit_schema()
    cold = _median_us(lambda: schema_info(schema), 20, rounds) / 1000
    client = RawClient(path)
    request = b'{"execute":"query-qmp-schema"}\r\n'

    def ask() -> None:
        client.sock.sendall(request)
        reply = json.loads(client.read_message())
        assert "return" in reply

    try:
        ask()
        round_trip = _median_us(ask, count, rounds) / 1000
        client.sock.sendall(request)
        length = len(client.read_message())
    finally:
        client.close()
    return {
        "schema_info_cold_ms": cold,
        "query_qmp_schema_round_trip_ms": round_trip,
        "query_qmp_schema_bytes": float(length),
    }


def client_rates(path: Path, count: int, rounds: int) -> dict[str, float]:
    from qemu.qmp import QMPClient

    from vmkit.qmp.typed import QMP, AsyncQMP

    async def measure() -> tuple[float, float]:
        raw = QMPClient("bench-raw")
        typed = AsyncQMP("bench-typed")
        await raw.connect(str(path))
        await typed.connect(str(path))
        raw_rates, typed_rates = [], []
        try:
            for _ in range(rounds + 1):  # alternate, so load shifts hit both
                start = time.perf_counter()
                for _ in range(count):
                    await raw.execute("query-status")
                raw_rates.append(count / (time.perf_counter() - start))
                start = time.perf_counter()
                for _ in range(count):
                    await typed.query_status()
                typed_rates.append(count / (time.perf_counter() - start))
        finally:
            await raw.disconnect()
            await typed.disconnect()
        return statistics.median(raw_rates[1:]), statistics.median(typed_rates[1:])

    raw_rate, typed_rate = asyncio.run(measure())
    with QMP(str(path)) as sync:
        sync.query_status()
        sync_rates = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(count):
                sync.query_status()
            sync_rates.append(count / (time.perf_counter() - start))
    return {
        "qemu_qmp_per_s": raw_rate,
        "typed_async_per_s": typed_rate,
        "typed_sync_per_s": statistics.median(sync_rates),
        "typed_async_time_ratio": raw_rate / typed_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=COUNT)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--checks-only", action="store_true", help="argument checking only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = argument_checks(args.count * 10, args.rounds)
    if not args.checks_only:
        with tempfile.TemporaryDirectory() as tmp, vmkit_peer(Path(tmp), "-m", "64M") as sock:
            results |= schema_answer(sock, args.count // 10, args.rounds)
            results |= client_rates(sock, args.count, args.rounds)
    if args.json:
        print(json.dumps(results))
        return
    for key, value in results.items():
        print(f"{key:45} {value:12.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
