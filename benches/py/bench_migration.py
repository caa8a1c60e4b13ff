"""Migration-stream throughput of vmkit, side by side with a real QEMU saving
the same RAM contents to the same kinds of sink, in one run.

Run: ``.venv/bin/python benches/py/bench_migration.py`` (after ``make build``;
QEMU from ``make system-deps``, or ``--no-qemu``). Options: ``--sizes 1G,4G``,
``--rounds 3`` (each figure is the median of that many timed rounds, after one
untimed warm-up round), ``--dir /dev/shm``, ``--json`` (one JSON object).

For every size and for two RAM contents, a file in ``--dir`` is filled once:
``random`` (``os.urandom``, no page is zero) and ``zero`` (zeros written out,
so the file is real tmpfs memory, not holes). QEMU maps it as the
``memory-backend-file`` of a paused (``-S``) q35 TCG machine (``share=on``),
vmkit as ``RamBlock.file(..., share=True)``: both read the same pages, and both
name the block ``pc.ram``. QEMU runs with ``max-bandwidth`` raised from its
128 MiB/s default to 1 TiB/s; being paused, it sends every page once. QEMU
refuses to migrate a machine twice, so every QEMU case starts a fresh one,
with ``prealloc=on`` so that its mapping is faulted in before the (untimed)
start ends, as vmkit's mapping is after the warm-up round.

Cases run round-robin, each round starting one case later than the round
before, so no case always follows the same one: after ``dd`` writes and
frees a 4 GiB file, the next case runs slower for seconds (the zero scan
took 0.23-0.36 s instead of 0.15 s right after it, in this VM, even 2.5 s
later). ``--settle S`` pauses S seconds (untimed) after each case that
leaves a file of 64 MiB or more (default 0). In a VM with free page
reporting (virtio-balloon), freed pages go back to the host about 2 s after
the free and the next file sink faults them in again: file-sink figures
depend on the host, so compare them within a run.

Every figure is RAM bytes per second in GB/s (10^9), the wall-clock time of
one whole stream:

- ``dd``: ``dd if=<RAM file> of=<dir>/dd.out bs=1M`` (the file truncated, as
  vmkit's sink is), from spawning dd to its exit: the reference for a file sink.
- ``vmkit/null``, ``vmkit/file``: ``migration.save`` straight into
  ``/dev/null`` / a new file in ``--dir`` (the call's duration). vmkit hands
  the kernel the guest pages themselves (``writev``), as QEMU's ``fd:`` does.
- ``vmkit/cat-null``, ``vmkit/cat-file``: ``migration.save`` into a FIFO read
  by ``cat > /dev/null`` / ``cat > <dir>/FILE`` — the pipe-and-cat path of
  QEMU's ``exec:cat``; timed from spawning cat to cat's exit.
  vmkit raises the FIFO's pipe buffer to 1 MiB itself (``F_SETPIPE_SZ``,
  Linux's unprivileged maximum); QEMU's ``exec:`` pipe keeps Linux's 64 KiB.
- ``ceiling/cat-null``, ``ceiling/cat-file`` (and ``ceiling64k/...``): the
  most a writer gets through that path in this run: a producer whose only
  work is ``write(2)`` of one pre-filled 1 MiB buffer, as many bytes as the
  RAM, into a FIFO with a 1 MiB (64 KiB) pipe read by the same ``cat``.
  vmkit and QEMU both ``write`` into the pipe, so ``ceiling/QEMU`` bounds
  the vmkit/QEMU ratio on that path. Random RAM only.
- ``vmsplice/cat-null``, ``vmsplice/cat-file``: the RAM file's own pages
  (mapped shared, as vmkit and QEMU map them) lent to the same pipe with
  ``vmsplice(2)``: the pipe references them, nothing is copied into it.
  What a producer that lends guest memory to the pipe would get; vmkit does
  not, because guest pages could change before ``cat`` reads them.
- ``qemu/cat-null``, ``qemu/cat-file``: QMP ``migrate`` with
  ``exec:cat > /dev/null`` / ``exec:cat > <dir>/FILE``; timed from sending
  the command to the exit of that cat (the shell then opens a FIFO the
  bench waits on). QEMU's own ``total-time`` is recorded too.
- ``qemu/fd-null``, ``qemu/fd-file``: ``migrate`` to ``fd:`` with an fd of
  ``/dev/null`` / a new file passed by ``getfd`` (QEMU writes the sink itself,
  no pipe); timed from the command to the ``MIGRATION`` ``completed`` event.
- ``decode``: ``migration.restore`` of vmkit's stream file into an anonymous
  block of the same size (prefaulted with non-zero bytes before each round).

Ratios: vmkit/QEMU on the common ``cat`` paths (target ≥ 3 for random RAM,
≥ 1 for zero RAM) with the ceiling/QEMU bound beside them, ``vmkit/file``
over ``dd`` (target ≥ 0.7). Zero pages
scanned: ``vmkit/null`` on zero RAM (target ≥ 20 GB/s). Encode and decode of
random RAM: target ≥ 3 GB/s. Page counts of both sides are checked and
reported (QEMU adds its firmware blocks, ``pc.bios`` and friends).

Every file and QEMU process the bench creates is removed on the way out,
also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vmkit import migration
from vmkit.memory import RamBlock
from vmkit.qmp import QMPSocket

QEMU = "qemu-system-x86_64"
MACHINE_TYPE = "pc-q35-7.2"
BLOCK = "pc.ram"
PAGE = 4096
MIB = 1 << 20
GIB = 1 << 30
CHUNK = 64 * MIB
#: QEMU's max-bandwidth for the bench (bytes/s): 1 TiB/s, i.e. unlimited.
MAX_BANDWIDTH = 1 << 40
TIMEOUT = 600.0
#: The pipe buffers of the ceiling producers: vmkit's FIFO sinks, QEMU's exec: pipe.
PIPE_1M = MIB
PIPE_64K = 64 * 1024
#: A case that leaves a file this large is followed by ``--settle``.
SETTLE_MIN_FREED = 64 * MIB
#: What the ceiling producers write, over and over.
CEILING_CHUNK = os.urandom(MIB)

Result = dict[str, Any]


def parse_size(text: str) -> int:
    """``1G``, ``512M``, ``4096K`` or plain bytes."""
    units = {"K": 1 << 10, "M": MIB, "G": GIB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def size_name(size: int) -> str:
    return f"{size // GIB}G" if size % GIB == 0 else f"{size // MIB}M"


def gbps(size: int, seconds: float) -> float:
    return size / seconds / 1e9


def fill_file(path: Path, size: int, content: str) -> None:
    """Writes ``size`` bytes of ``content`` ("random" or "zero") to ``path``."""
    zeros = bytes(CHUNK)
    with path.open("wb") as f:
        done = 0
        while done < size:
            n = min(CHUNK, size - done)
            f.write(os.urandom(n) if content == "random" else zeros[:n])
            done += n


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --- QEMU ----------------------------------------------------------------------------------


def wait_migration(qmp: QMPSocket) -> str:
    """Waits for a ``MIGRATION`` event with a final status; returns it."""
    while True:
        status = qmp.next_event("MIGRATION").get("data", {}).get("status")
        if status in ("completed", "failed"):
            return str(status)


class Qemu:
    """A paused q35 TCG QEMU whose RAM is ``ram_file``, with QMP connected,
    migration events on and bandwidth unlimited."""

    def __init__(self, binary: str, ram_file: Path, size: int, work: Path) -> None:
        self.sock_dir = Path(tempfile.mkdtemp(prefix="vmkit-qmp-"))
        self.log = work / "qemu.log"
        mib = size // MIB
        cmd = [
            binary,
            "-no-user-config",
            "-nodefaults",
            "-machine",
            f"q35,accel=tcg,memory-backend={BLOCK}",
            "-m",
            f"{mib}M",
            "-object",
            # prealloc: the mapping is faulted in at start (untimed), as vmkit's
            # is after the first round and a running guest's would be.
            f"memory-backend-file,id={BLOCK},size={mib}M,mem-path={ram_file},share=on,prealloc=on",
            "-display",
            "none",
            "-S",
            "-qmp",
            f"unix:{self.sock_dir / 'qmp.sock'},server=on,wait=off",
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.qmp: QMPSocket | None = None
        try:
            self.qmp = QMPSocket(self.sock_dir / "qmp.sock", timeout=60, negotiate=True)
            self.qmp.execute(
                "migrate-set-capabilities",
                capabilities=[{"capability": "events", "state": True}],
            )
            params: dict[str, Any] = {"max-bandwidth": MAX_BANDWIDTH}
            self.qmp.execute("migrate-set-parameters", **params)
            v = self.qmp.execute("query-version")["qemu"]
            self.version = f"{v['major']}.{v['minor']}.{v['micro']}"
        except BaseException:
            self.close()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _finish(self, wall: float) -> Result:
        assert self.qmp is not None
        info: dict[str, Any] = self.qmp.execute("query-migrate")
        if info.get("status") != "completed":
            raise RuntimeError(f"QEMU migration did not complete: {info}\n{self.output()}")
        ram = info.get("ram", {})
        return {
            "seconds": wall,
            "total_time_ms": info.get("total-time"),
            "zero_pages": ram.get("duplicate"),
            "normal_pages": ram.get("normal"),
            "transferred": ram.get("transferred"),
        }

    def migrate_cat(self, sink: Path, done: Path) -> Result:
        """``migrate exec:cat > sink``; wall time until that cat exited."""
        assert self.qmp is not None
        ended: list[float] = []

        def wait_done() -> None:
            with done.open("rb") as f:
                f.read()
            ended.append(time.perf_counter())

        waiter = threading.Thread(target=wait_done, daemon=True)
        waiter.start()
        try:
            start = time.perf_counter()
            self.qmp.execute("migrate", uri=f"exec:cat > '{sink}'; : > '{done}'")
            waiter.join(TIMEOUT)
        finally:
            if waiter.is_alive():
                # Release the waiter's blocking open of the FIFO.
                with contextlib.suppress(OSError):
                    os.close(os.open(done, os.O_WRONLY | os.O_NONBLOCK))
                waiter.join(5)
        if not ended:
            raise RuntimeError(f"QEMU's cat did not finish\n{self.output()}")
        if wait_migration(self.qmp) != "completed":
            raise RuntimeError(f"QEMU migration failed\n{self.output()}")
        return self._finish(ended[0] - start)

    def migrate_fd(self, sink: Path) -> Result:
        """``migrate fd:`` to an fd of ``sink`` (truncated); wall time until
        the ``MIGRATION`` event says completed."""
        assert self.qmp is not None
        fd = os.open(sink, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.qmp.execute_with_fds("getfd", [fd], fdname="bench")
        finally:
            os.close(fd)
        start = time.perf_counter()
        self.qmp.execute("migrate", uri="fd:bench")
        status = wait_migration(self.qmp)
        wall = time.perf_counter() - start
        if status != "completed":
            raise RuntimeError(f"QEMU migration failed\n{self.output()}")
        return self._finish(wall)

    def close(self) -> None:
        try:
            if self.qmp is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    self.qmp.execute("quit")
                self.qmp.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=60)
            shutil.rmtree(self.sock_dir, ignore_errors=True)


# --- vmkit and dd --------------------------------------------------------------------------


def vmkit_save(block: RamBlock, sink: Path) -> Result:
    if sink != Path(os.devnull):
        unlink(sink)
    start = time.perf_counter()
    stats = migration.save(sink, machine_type=MACHINE_TYPE, ram=[block])
    wall = time.perf_counter() - start
    return {"seconds": wall, **stats}


def vmkit_save_cat(block: RamBlock, fifo: Path, sink: Path) -> Result:
    """Saves into ``fifo`` read by ``cat > sink``: spawn of cat to its exit."""
    return through_cat(
        fifo, sink, lambda: migration.save(fifo, machine_type=MACHINE_TYPE, ram=[block])
    )


@contextmanager
def fifo_writer(fifo: Path, pipe_size: int) -> Iterator[int]:
    """The write end of ``fifo``, its pipe buffer set to ``pipe_size``."""
    fd = os.open(fifo, os.O_WRONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, pipe_size)
        yield fd
    finally:
        os.close(fd)


def ceiling_cat(fifo: Path, sink: Path, size: int, pipe_size: int) -> Result:
    """A producer that costs nothing but its ``write`` calls: ``size`` bytes
    of one pre-filled 1 MiB buffer into ``fifo`` (pipe buffer ``pipe_size``)
    read by ``cat > sink``: the most any writer gets through that path."""

    def produce() -> dict[str, Any]:
        with fifo_writer(fifo, pipe_size) as fd:
            left = size
            view = memoryview(CEILING_CHUNK)
            while left > 0:
                left -= os.write(fd, view[: min(left, len(view))])
        return {"bytes": size}

    return through_cat(fifo, sink, produce)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def vmsplice_cat(fifo: Path, sink: Path, ram: mmap.mmap) -> Result:
    """As :func:`ceiling_cat` (1 MiB pipe), but the pages of ``ram`` are lent
    to the pipe by ``vmsplice(2)``, 1 MiB per call, not copied into it."""
    libc = ctypes.CDLL(None, use_errno=True)
    vmsplice = libc.vmsplice
    vmsplice.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_uint]
    vmsplice.restype = ctypes.c_ssize_t
    size = len(ram)

    def produce() -> dict[str, Any]:
        anchor = ctypes.c_char.from_buffer(ram)
        try:
            with fifo_writer(fifo, PIPE_1M) as fd:
                base = ctypes.addressof(anchor)
                done = 0
                iov = _IoVec()
                while done < size:
                    iov.base = base + done
                    iov.len = min(MIB, size - done)
                    n = vmsplice(fd, ctypes.byref(iov), 1, 0)
                    if n < 0:
                        raise OSError(ctypes.get_errno(), "vmsplice")
                    done += n
        finally:
            del anchor
        return {"bytes": size}

    return through_cat(fifo, sink, produce)


def through_cat(fifo: Path, sink: Path, produce: Callable[[], dict[str, Any]]) -> Result:
    """Runs ``produce`` (which writes ``fifo``) while ``cat fifo > sink``
    reads it; wall time from spawning cat to its exit."""
    if sink != Path(os.devnull):
        unlink(sink)
    start = time.perf_counter()
    cat: subprocess.Popen[bytes] | None = None
    try:
        with sink.open("wb") as out:
            cat = subprocess.Popen(["cat", str(fifo)], stdout=out)
        stats = produce()
        if cat.wait(TIMEOUT) != 0:
            raise RuntimeError(f"cat exited with {cat.returncode}")
    finally:
        if cat is not None and cat.poll() is None:
            cat.kill()
            cat.wait()
    wall = time.perf_counter() - start
    return {"seconds": wall, **stats}


def dd_copy(src: Path, dst: Path) -> Result:
    unlink(dst)
    start = time.perf_counter()
    subprocess.run(
        ["dd", f"if={src}", f"of={dst}", "bs=1M"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return {"seconds": time.perf_counter() - start}


def vmkit_restore(stream: Path, dest: RamBlock) -> Result:
    dest.fill(0, dest.size, 0xA5)
    start = time.perf_counter()
    stats = migration.restore(stream, machine_type=MACHINE_TYPE, ram=[dest])
    wall = time.perf_counter() - start
    return {"seconds": wall, **stats}


# --- the run -------------------------------------------------------------------------------


@contextmanager
def workdir(base: Path) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="vmkit-bench-mig-", dir=base))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_content(
    size: int, content: str, rounds: int, qemu_binary: str | None, work: Path, settle: float
) -> dict[str, Any]:
    """All sinks for one RAM size and content; returns medians and samples."""
    ram_file = work / f"{content}.ram"
    out_file = work / "stream.out"
    dd_file = work / "dd.out"
    fifo = work / "stream.fifo"
    done = work / "done.fifo"
    null = Path(os.devnull)
    qemu_version: str | None = None

    def qemu_case(migrate: Callable[[Qemu], Result]) -> Callable[[], Result]:
        """A fresh QEMU for each migration (QEMU refuses to migrate a machine
        a second time); its start is not timed."""

        def case() -> Result:
            nonlocal qemu_version
            assert qemu_binary is not None
            qemu = Qemu(qemu_binary, ram_file, size, work)
            try:
                qemu_version = qemu.version
                return migrate(qemu)
            finally:
                qemu.close()

        return case

    stack = contextlib.ExitStack()
    try:
        os.mkfifo(fifo)
        os.mkfifo(done)
        fill_file(ram_file, size, content)
        block = RamBlock.file(BLOCK, size, ram_file, share=True)
        checksum = block.checksum()
        with ram_file.open("r+b") as f:
            # Shared and writable only because ctypes needs a writable
            # buffer for an address; nothing writes through it.
            ram_map = stack.enter_context(mmap.mmap(f.fileno(), size, mmap.MAP_SHARED))
        cases: dict[str, Callable[[], Result]] = {
            "dd": lambda: dd_copy(ram_file, dd_file),
            "vmkit/null": lambda: vmkit_save(block, null),
            "vmkit/file": lambda: vmkit_save(block, out_file),
            "vmkit/cat-null": lambda: vmkit_save_cat(block, fifo, null),
            "vmkit/cat-file": lambda: vmkit_save_cat(block, fifo, out_file),
        }
        if content == "random":
            # A zero-RAM stream is a few MB: the ceiling only bounds full pages.
            cases |= {
                "ceiling/cat-null": lambda: ceiling_cat(fifo, null, size, PIPE_1M),
                "ceiling/cat-file": lambda: ceiling_cat(fifo, out_file, size, PIPE_1M),
                "ceiling64k/cat-null": lambda: ceiling_cat(fifo, null, size, PIPE_64K),
                "ceiling64k/cat-file": lambda: ceiling_cat(fifo, out_file, size, PIPE_64K),
                "vmsplice/cat-null": lambda: vmsplice_cat(fifo, null, ram_map),
                "vmsplice/cat-file": lambda: vmsplice_cat(fifo, out_file, ram_map),
            }
        if qemu_binary is not None:
            cases |= {
                "qemu/cat-null": qemu_case(lambda q: q.migrate_cat(null, done)),
                "qemu/cat-file": qemu_case(lambda q: q.migrate_cat(out_file, done)),
                "qemu/fd-null": qemu_case(lambda q: q.migrate_fd(null)),
                "qemu/fd-file": qemu_case(lambda q: q.migrate_fd(out_file)),
            }
        samples: dict[str, list[Result]] = {name: [] for name in cases}
        # Round-robin over the cases, so that drift on the shared machine
        # hits every case alike, each round starting one case later so that
        # no case always runs after the same one; round 0 is an untimed
        # warm-up.
        names = list(cases)
        for r in range(rounds + 1):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                res = cases[name]()
                if r > 0:
                    samples[name].append(res)
                freed = sum(p.stat().st_size for p in (dd_file, out_file) if p.exists())
                unlink(dd_file)
                unlink(out_file)
                # Let the guest's free page reporting (2 s after the free)
                # happen here rather than in the next case.
                if settle > 0 and freed >= SETTLE_MIN_FREED:
                    time.sleep(settle)
        if block.checksum() != checksum:
            raise RuntimeError("the RAM file changed during the bench")

        # Decode of vmkit's stream, from a file in the same directory.
        vmkit_save(block, out_file)
        dest = RamBlock.anonymous(BLOCK, size)
        decode = [vmkit_restore(out_file, dest) for _ in range(rounds + 1)][1:]
        if dest.checksum() != checksum:
            raise RuntimeError("decoded RAM differs from the source")
        del dest
        unlink(out_file)
        samples["decode"] = decode
    finally:
        stack.close()
        unlink(ram_file)
        unlink(fifo)
        unlink(done)

    medians = {
        name: gbps(size, statistics.median(s["seconds"] for s in runs))
        for name, runs in samples.items()
    }
    pages: dict[str, Any] = {
        "vmkit": {k: samples["vmkit/null"][0][k] for k in ("zero_pages", "normal_pages")},
    }
    if qemu_binary is not None:
        last = samples["qemu/cat-file"][-1]
        pages["qemu"] = {k: last[k] for k in ("zero_pages", "normal_pages")}
        pages["qemu_total_time_ms"] = {
            name: statistics.median(s["total_time_ms"] for s in samples[name])
            for name in samples
            if name.startswith("qemu/")
        }
    return {
        "gbps": medians,
        "seconds": {k: [s["seconds"] for s in v] for k, v in samples.items()},
        "pages": pages,
        "qemu_version": qemu_version,
    }


def ratios(r: dict[str, float], content: str, have_qemu: bool) -> dict[str, float]:
    out = {"vmkit_file_over_dd": r["vmkit/file"] / r["dd"]}
    ceiling = "ceiling/cat-null" in r
    if ceiling:
        for sink in ("cat-null", "cat-file"):
            out[f"vmkit_over_ceiling/{sink}"] = r[f"vmkit/{sink}"] / r[f"ceiling/{sink}"]
    if have_qemu:
        for sink in ("cat-null", "cat-file"):
            out[f"vmkit_over_qemu/{sink}"] = r[f"vmkit/{sink}"] / r[f"qemu/{sink}"]
            if ceiling:
                # The bound on that ratio: the free producer over QEMU.
                out[f"ceiling_over_qemu/{sink}"] = r[f"ceiling/{sink}"] / r[f"qemu/{sink}"]
                out[f"vmsplice_over_qemu/{sink}"] = r[f"vmsplice/{sink}"] / r[f"qemu/{sink}"]
        # vmkit's direct path against QEMU's direct (fd:) path to the same sink.
        out["vmkit_null_over_qemu_fd-null"] = r["vmkit/null"] / r["qemu/fd-null"]
        out["vmkit_file_over_qemu_fd-file"] = r["vmkit/file"] / r["qemu/fd-file"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", default="1G,4G", help="RAM sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"), help="file sink dir")
    parser.add_argument(
        "--settle", type=float, default=0.0, help="pause (s) after a case freed a large file"
    )
    parser.add_argument("--no-qemu", action="store_true", help="vmkit and dd only")
    parser.add_argument("--qemu", default=QEMU, help="QEMU binary")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    if any(s <= 0 or s % (2 * MIB) for s in sizes):
        parser.error("sizes must be positive multiples of 2 MiB")

    qemu_binary: str | None = None
    note = None
    if not args.no_qemu:
        qemu_binary = shutil.which(args.qemu)
        if qemu_binary is None:
            note = f"{args.qemu} not found: QEMU columns skipped (make system-deps)"
    else:
        note = "--no-qemu: QEMU columns skipped"
    if note:
        print(note, file=sys.stderr)

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "load_before": os.getloadavg(),
        },
        "rounds": args.rounds,
        "settle_seconds": args.settle,
        "dir": str(args.dir),
        "qemu": None,
        "note": note,
        "sizes": {},
    }
    with workdir(args.dir) as work:
        for size in sizes:
            for content in ("random", "zero"):
                res = run_content(size, content, args.rounds, qemu_binary, work, args.settle)
                results["qemu"] = res.pop("qemu_version") or results["qemu"]
                res["ratios"] = ratios(res["gbps"], content, qemu_binary is not None)
                results["sizes"].setdefault(size_name(size), {})[content] = res
    results["machine"]["load_after"] = os.getloadavg()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    q = results["qemu"]
    print(f"GB/s of RAM, median of {args.rounds} rounds; QEMU {q or 'not run'}")
    for size_key, by_content in results["sizes"].items():
        for content, res in by_content.items():
            print(f"\n{size_key} {content} RAM")
            for name, value in res["gbps"].items():
                print(f"  {name:<20} {value:8.2f} GB/s")
            for name, value in res["ratios"].items():
                print(f"  {name:<30} {value:6.2f}x")
            print(f"  pages: {json.dumps(res['pages'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
