"""QMP round trips per second: ``vmkit run`` side by side with real QEMU.

Run: ``.venv/bin/python benches/py/bench_qmp.py`` (after ``make build``; QEMU
from Debian's ``qemu-system-x86`` for the comparison, else ``--no-qemu``).

Both peers run paused (``-S``) with a QMP monitor on a UNIX socket: QEMU as
``qemu-system-x86_64 -machine q35 -accel tcg -nodefaults -S``, vmkit as
``vmkit run -S``. For each, after capabilities negotiation:

- ``raw``: sequential ``query-status`` round trips with a plain socket
  client (send one command, read up to the CRLF that ends the answer);
- ``qemu.qmp``: the same with QEMU's own client library
  (``await client.execute("query-status")``).

Each figure is the median of several rounds of ``--count`` round trips, in
round trips per second. ``parser_chunked_mb_per_s`` is the stream parser's
rate on a 2 MiB string fed in 1 KiB chunks (the lexer, not the fast path:
what a test once asserted with a wall clock). ``--json`` prints one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROUNDS = 5
COUNT = 5000
QUERY = b'{"execute":"query-status"}\r\n'


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no QMP socket at {path}")
        time.sleep(0.05)


@contextmanager
def qemu_peer(workdir: Path) -> Iterator[Path]:
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        raise RuntimeError("qemu-system-x86_64 is not installed (make system-deps)")
    sock = workdir / "qemu.qmp"
    args = [binary, "-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none"]
    args += ["-m", "128M", "-S", "-qmp", f"unix:{sock},server=on,wait=off"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_socket(sock, proc)
        yield sock
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def vmkit_peer(workdir: Path, *machine: str) -> Iterator[Path]:
    """A stopped ``vmkit run`` serving QMP on a socket in ``workdir``;
    ``machine`` are its shape options (default ``-m 128M``)."""
    sock = workdir / "vmkit.qmp"
    args = [sys.executable, "-m", "vmkit.cli", "run", "-S", "--qmp", f"unix:{sock}"]
    args += machine or ("-m", "128M")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(b"QMP: "):
            raise RuntimeError(f"vmkit run did not start: {line!r}")
        yield sock
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RawClient:
    """A minimal QMP client: a socket, a line buffer."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.buf = b""
        self.read_message()  # greeting
        self.sock.sendall(b'{"execute":"qmp_capabilities"}\r\n')
        assert b"return" in self.read_message()

    def read_message(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def round_trips(self, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            self.sock.sendall(QUERY)
            reply = self.read_message()
            while reply.startswith(b'{"event"'):
                reply = self.read_message()
        return count / (time.perf_counter() - start)

    def close(self) -> None:
        self.sock.close()


def raw_rate(path: Path, count: int, rounds: int) -> float:
    client = RawClient(path)
    try:
        client.round_trips(min(count, 500))  # warm-up
        return statistics.median(client.round_trips(count) for _ in range(rounds))
    finally:
        client.close()


def qemu_qmp_rate(path: Path, count: int, rounds: int) -> float:
    from qemu.qmp import QMPClient

    async def main() -> float:
        client = QMPClient("bench")
        await client.connect(str(path))
        try:
            rates = []
            for _ in range(rounds + 1):
                start = time.perf_counter()
                for _ in range(count):
                    await client.execute("query-status")
                rates.append(count / (time.perf_counter() - start))
            return statistics.median(rates[1:])  # the first round warms up
        finally:
            await client.disconnect()

    return asyncio.run(main())


def parser_chunked_rate(rounds: int) -> float:
    """MB/s of a 2 MiB string parsed from 1 KiB chunks (median of ``rounds``)."""
    from vmkit.qmp import JSONStreamParser

    payload = b'{"s": "' + b"y" * (2 << 20) + b'"}'
    rates = []
    for _ in range(rounds):
        parser = JSONStreamParser(max_message_size=4 << 20)
        start = time.perf_counter()
        for i in range(0, len(payload), 1024):
            parser.feed(payload[i : i + 1024])
        rates.append(len(payload) / (time.perf_counter() - start) / 1e6)
    return statistics.median(rates)


def measure(count: int, rounds: int, with_qemu: bool) -> dict[str, float]:
    results: dict[str, float] = {"parser_chunked_mb_per_s": parser_chunked_rate(rounds)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        peers = [("vmkit", vmkit_peer)]
        if with_qemu:
            peers.insert(0, ("qemu", qemu_peer))
        for name, peer in peers:
            with peer(work) as sock:
                results[f"{name}_raw_per_s"] = raw_rate(sock, count, rounds)
                results[f"{name}_qemu_qmp_per_s"] = qemu_qmp_rate(sock, count // 5, rounds)
    if with_qemu:
        results["ratio_raw"] = results["vmkit_raw_per_s"] / results["qemu_raw_per_s"]
        results["ratio_qemu_qmp"] = results["vmkit_qemu_qmp_per_s"] / results["qemu_qemu_qmp_per_s"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=COUNT, help="round trips per round")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--no-qemu", action="store_true", help="measure vmkit only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = measure(args.count, args.rounds, not args.no_qemu)
    if args.json:
        print(json.dumps(results))
        return
    for key, value in results.items():
        unit = "" if key.startswith("ratio") else " round trips/s"
        if key.endswith("mb_per_s"):
            unit = " MB/s"
        print(f"{key:<24} {value:12.2f}{unit}")


if __name__ == "__main__":
    main()
