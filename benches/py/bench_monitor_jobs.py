"""A client's QMP round trip while another client saves a 2 GiB machine, or floods.

Run: ``.venv/bin/python benches/py/bench_monitor_jobs.py`` (after ``make build``).

``vmkit run -S`` serves a machine whose RAM (``--backend file``, in
``/dev/shm``) holds non-zero data, so a save writes every page. Client B
measures ``query-status`` round trips (send, read to the CRLF):

- ``idle``: nothing else happens;
- ``save``: meanwhile client A runs ``x-vmkit-save`` to a file in the same
  directory, ``--saves`` times in a row; only B's round trips that start
  and end while a save is running count;
- ``flood``: meanwhile another process sends ``}`` x 256 KiB, over and over,
  and reads the 262,144 error replies to each (``--flood-round-trips`` of
  B's round trips).

The save runs as a job (:mod:`vmkit.jobs`) in a worker thread, with the GIL
released by the Rust core, so the event loop keeps answering B. Prints the
p50/p99 round trip (ms) for both, and each save's duration; ``--json``
prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

from bench_qmp import QUERY, RawClient
from bench_qmp import vmkit_peer as qmp_peer

RAM = 2 << 30
IDLE_ROUND_TRIPS = 5000
SAVES = 3


class Client(RawClient):
    """bench_qmp's minimal client, timing one round trip at a time."""

    def reply(self) -> bytes:
        """The next message that is not an event."""
        while (line := self.read_message()).startswith(b'{"event"'):
            pass
        return line

    def round_trip_ns(self) -> int:
        start = time.perf_counter_ns()
        self.sock.sendall(QUERY)
        self.reply()
        return time.perf_counter_ns() - start

    def has_input(self) -> bool:
        return bool(self.buf) or bool(select.select([self.sock], [], [], 0)[0])


def fill_ram_file(path: Path, size: int) -> None:
    """``size`` bytes of incompressible-looking data, no zero pages."""
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(size // len(block)):
            f.write(block)


def vmkit_peer(workdir: Path, ram_file: Path) -> AbstractContextManager[Path]:
    """``vmkit run`` with the RAM in ``ram_file``."""
    return qmp_peer(workdir, "-m", f"{RAM >> 20}", "--backend", "file", "--mem-path", str(ram_file))


FLOODER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rb")
f.readline()
s.sendall(b'{"execute":"qmp_capabilities"}')
f.readline()
print("ready", flush=True)
while True:
    s.sendall(b"}" * (256 << 10))
    for _ in range(256 << 10):
        if not f.readline():
            sys.exit(0)
"""


def flood_round_trips(sock: Path, prober: Client, count: int) -> list[int]:
    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, str(sock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert flooder.stdout is not None and flooder.stdout.readline() == "ready\n"
        return [prober.round_trip_ns() for _ in range(count)]
    finally:
        flooder.kill()
        flooder.wait()


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ms = sorted(s / 1e6 for s in samples_ns)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": cuts[49], "p99_ms": cuts[98], "max_ms": ms[-1], "count": len(ms)}


def measure(
    saves: int, idle_round_trips: int, flood_count: int, directory: str | None
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        work = Path(tmp)
        ram_file = work / "ram"
        fill_ram_file(ram_file, RAM)
        with vmkit_peer(work, ram_file) as sock:
            saver, prober = Client(sock), Client(sock)
            for _ in range(500):  # warm-up
                prober.round_trip_ns()
            idle = [prober.round_trip_ns() for _ in range(idle_round_trips)]
            during: list[int] = []
            durations: list[float] = []
            stream = work / "saved.mig"
            stream_bytes = 0
            for _ in range(saves):
                request = {"execute": "x-vmkit-save", "arguments": {"path": str(stream)}}
                start = time.perf_counter()
                saver.sock.sendall(json.dumps(request).encode() + b"\r\n")
                while not saver.has_input():
                    sample = prober.round_trip_ns()
                    if not saver.has_input():  # the save was still running at the end
                        during.append(sample)
                reply = json.loads(saver.reply())
                durations.append(time.perf_counter() - start)
                if "return" not in reply:
                    raise RuntimeError(f"save failed: {reply}")
                stream_bytes = reply["return"]["bytes"]
                stream.unlink()
            flood = flood_round_trips(sock, prober, flood_count)
            saver.sock.close()
            prober.sock.close()
    return {
        "ram_bytes": RAM,
        "stream_bytes": stream_bytes,
        "idle": percentiles(idle),
        "save": percentiles(during) if during else None,
        "flood": percentiles(flood),
        "save_seconds": durations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=SAVES)
    parser.add_argument("--idle-round-trips", type=int, default=IDLE_ROUND_TRIPS)
    parser.add_argument("--flood-round-trips", type=int, default=IDLE_ROUND_TRIPS)
    parser.add_argument(
        "--dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where the RAM file and the saved stream go (default /dev/shm)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = measure(args.saves, args.idle_round_trips, args.flood_round_trips, args.dir)
    if args.json:
        print(json.dumps(results))
        return
    for name in ("idle", "save", "flood"):
        r = results[name]
        if r is None:
            continue
        assert isinstance(r, dict)
        print(
            f"query-status {name:<5} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms"
            f"  max {r['max_ms']:.3f} ms  ({r['count']} round trips)"
        )
    seconds = results["save_seconds"]
    assert isinstance(seconds, list)
    print(
        "saves (s):", " ".join(f"{s:.2f}" for s in seconds), f"stream {results['stream_bytes']} B"
    )


if __name__ == "__main__":
    main()
