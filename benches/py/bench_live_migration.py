"""Live migration between two processes: vmkit → vmkit side by side with
QEMU 7.2 → QEMU 7.2 and with the socket's ceiling, all in one run.

Run: ``.venv/bin/python benches/py/bench_live_migration.py`` (after ``make
build`` and ``cargo build --release -p vmkit-benches --bin socket_ceiling``;
``make bench`` does both). ``--json`` prints one JSON object; ``--parts``
picks ``throughput``, ``convergence`` or both; ``--smoke`` is a tiny run of
everything (seconds) that only checks the bench works.

**Throughput** (paused machines, random RAM). For each size a file in
``--dir`` (``/dev/shm``) is filled from ``os.urandom`` once; the sources map
it as their guest RAM, the destinations get fresh anonymous RAM. Cases, each
a fresh pair of processes whose start is not timed:

- ``vmkit``: ``vmkit run -S --backend file --mem-path FILE`` migrates with QMP
  ``migrate`` to ``vmkit run -S --incoming defer`` (``migrate-incoming``).
- ``qemu``: ``qemu-system-x86_64 -machine q35,accel=tcg -nodefaults -S`` with
  ``memory-backend-file,id=pc.ram,mem-path=FILE,share=on`` migrates to the
  same QEMU with ``memory-backend-ram,id=pc.ram`` and ``-incoming defer``.
  Neither source preallocates (vmkit's file backend cannot), so both fault
  their mapping of the file in during the migration, as the ceiling does.
- ``ceiling``: ``socket_ceiling send`` writes the RAM file's pages into the
  same kind of socket, 2 MiB per ``write(2)``, and ``socket_ceiling recv``
  reads them straight into a fresh anonymous mapping (transparent huge
  pages, as both VMMs' RAM): only the unavoidable work.
- ``ceiling-copy``: the same with a receiver that reads into a 1 MiB buffer
  and copies into the mapping — what any receiver that must read record
  headers before it knows where a page goes does at least.
- ``ceiling-populate``: ``ceiling-copy`` faulting each buffer's stretch of
  the mapping in with one ``MADV_POPULATE_WRITE`` before the copy, as
  vmkit's receiver does (page faults one by one cost far more in this VM).

Both VMMs get ``max-bandwidth`` = 100 GiB/s (QEMU's default is 128 MiB/s)
and the ``events`` capability on both sides. A migration is timed from
sending ``migrate`` to the source until both sides have reported the
``MIGRATION`` event ``completed`` (the destination's is the later: it has
loaded everything); the ceiling from spawning the sender until the receiver
has the last byte. Over ``unix:`` at every size (``--sizes`` and
``--growth-sizes``, the latter for cost growth: seconds per GiB by size),
over ``tcp:`` loopback at ``--sizes``. Cases run round-robin, each round
starting one case later, ``--rounds`` rounds after one untimed warm-up,
with ``--settle`` seconds (3) after each case: this VM reports freed memory
to its host about 2 s after the free, and memory the host took back is slow
to fault in again, so each case starts once the last one's RAM is gone.
Figures are medians in GB/s (10^9 bytes of guest RAM per second).

**Convergence** (vmkit only: a running guest needs vmkit's workload). The
source is a :class:`vmkit.machine.Machine` in this process (``--conv-ram``,
random RAM) whose workload writes whole pages uniformly at random at a
fraction of the link (``--conv-link``, the ``max-bandwidth`` cap); it is
migrated through :class:`vmkit.migrations.OutgoingMigration` (QMP
``migrate``'s code: settings, auto-converge) to ``vmkit run --incoming
defer`` without ``-S``, which resumes the guest once it has loaded. For each
fraction: whether it converged (switchover before the pass cap), the
guest-felt pause (the source's stop, taken in this process, to the
destination's ``RESUME`` event, both on the real-time clock) against
``downtime-limit``, and stream bytes against RAM + the bytes the workload
wrote from ``migrate`` to the stop (``--conv-rates``; ``--conv-auto`` with
auto-converge on).

Every file and process the bench creates is removed on the way out, also on
error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

QEMU = "qemu-system-x86_64"
BLOCK = "pc.ram"
PAGE = 4096
MIB = 1 << 20
GIB = 1 << 30
#: Both VMMs' max-bandwidth in the throughput cases: 100 GiB/s, i.e. none.
UNLIMITED = 100 * GIB
TIMEOUT = 600.0
ROOT = Path(__file__).resolve().parents[2]
VMKIT = Path(sys.executable).parent / "vmkit"

Result = dict[str, Any]


def parse_size(text: str) -> int:
    """``1G``, ``512M``, ``4096K`` or plain bytes."""
    units = {"K": 1 << 10, "M": MIB, "G": GIB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def size_name(size: int) -> str:
    return f"{size // GIB}G" if size % GIB == 0 else f"{size // MIB}M"


def fill_random(path: Path, size: int) -> None:
    chunk = 64 * MIB
    with path.open("wb") as f:
        done = 0
        while done < size:
            n = min(chunk, size - done)
            f.write(os.urandom(n))
            done += n


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ceiling_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "socket_ceiling"


# --- peers ---------------------------------------------------------------------------------


class Peer:
    """A VMM process (vmkit or QEMU) with QMP connected on a UNIX socket,
    ``events`` on; killed and reaped on :meth:`close`."""

    def __init__(self, kind: str, cmd: list[str], work: Path, name: str) -> None:
        from vmkit.qmp import QMPSocket

        self.kind = kind
        self.qmp_path = work / f"{name}.qmp"
        unlink(self.qmp_path)
        self.log = work / f"{name}.log"
        qmp_arg = (
            f"unix:{self.qmp_path},server=on,wait=off"
            if kind == "qemu"
            else f"unix:{self.qmp_path}"
        )
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*cmd, "-qmp" if kind == "qemu" else "--qmp", qmp_arg],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        self.qmp: Any = None
        try:
            self.qmp = QMPSocket(self.qmp_path, timeout=120, negotiate=True)
            self.qmp.execute(
                "migrate-set-capabilities",
                capabilities=[{"capability": "events", "state": True}],
            )
        except BaseException:
            self.close()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def execute(self, name: str, **args: Any) -> Any:
        return self.qmp.execute(name, **args)

    def wait_migration(self) -> str:
        """Waits for a final ``MIGRATION`` status; returns it."""
        while True:
            status = self.qmp.next_event("MIGRATION").get("data", {}).get("status")
            if status in ("completed", "failed", "cancelled"):
                return str(status)

    def close(self) -> None:
        try:
            if self.qmp is not None:
                with contextlib.suppress(OSError, RuntimeError, ValueError):
                    self.qmp.sock.settimeout(5)
                    self.qmp.execute("quit")
                self.qmp.close()
        except Exception:  # the process is waited for or killed below anyway
            pass
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=60)
            unlink(self.qmp_path)


def vmkit_cmd(size: int, *, paused: bool, ram_file: Path | None, incoming: str | None) -> list[str]:
    cmd = [str(VMKIT), "run", "-m", f"{size // MIB}M", "--workload-rate", "0"]
    if paused:
        cmd.append("-S")
    if ram_file is not None:
        cmd += ["--backend", "file", "--mem-path", str(ram_file)]
    if incoming is not None:
        cmd += ["--incoming", incoming]
    return cmd


def qemu_cmd(
    binary: str, size: int, *, ram_file: Path | None, incoming: bool, memfd: bool = False
) -> list[str]:
    mib = size // MIB
    if ram_file is not None:
        backend = f"memory-backend-file,id={BLOCK},size={mib}M,mem-path={ram_file},share=on"
    elif memfd:
        backend = f"memory-backend-memfd,id={BLOCK},size={mib}M"
    else:
        backend = f"memory-backend-ram,id={BLOCK},size={mib}M"
    cmd = [
        binary,
        "-no-user-config",
        "-nodefaults",
        "-machine",
        f"q35,accel=tcg,memory-backend={BLOCK}",
        "-m",
        f"{mib}M",
        "-object",
        backend,
        "-display",
        "none",
        "-S",
    ]
    if incoming:
        cmd += ["-incoming", "defer"]
    return cmd


def listen_uri(transport: str, work: Path) -> str:
    if transport == "unix":
        path = work / "migration.sock"
        unlink(path)
        return f"unix:{path}"
    return f"tcp:127.0.0.1:{free_port()}"


def migrate_pair(src: Peer, dst: Peer, uri: str, size: int) -> Result:
    """Migrates ``src`` to ``dst`` at ``uri``; wall time from ``migrate`` to
    both sides' ``completed``."""
    dst.execute("migrate-incoming", uri=uri)
    src.execute("migrate-set-parameters", **{"max-bandwidth": UNLIMITED})
    start = time.perf_counter()
    src.execute("migrate", uri=uri)
    dst_status = dst.wait_migration()
    src_status = src.wait_migration()
    wall = time.perf_counter() - start
    if (src_status, dst_status) != ("completed", "completed"):
        raise RuntimeError(
            f"{src.kind} migration: source {src_status}, destination {dst_status}\n"
            f"source log:\n{src.output()}\ndestination log:\n{dst.output()}"
        )
    info = src.execute("query-migrate")
    ram = info.get("ram", {})
    if int(ram.get("normal", 0)) < size // PAGE:
        raise RuntimeError(f"{src.kind} sent {ram.get('normal')} pages of {size // PAGE}: {info}")
    return {
        "seconds": wall,
        "total_time_ms": info.get("total-time"),
        "transferred": ram.get("transferred"),
        "normal_pages": ram.get("normal"),
        "zero_pages": ram.get("duplicate"),
    }


def vmm_case(
    kind: str,
    qemu: str | None,
    size: int,
    ram_file: Path,
    transport: str,
    work: Path,
    *,
    memfd: bool = False,
) -> Result:
    with contextlib.ExitStack() as stack:
        if kind == "vmkit":
            src_cmd = vmkit_cmd(size, paused=True, ram_file=ram_file, incoming=None)
            dst_cmd = vmkit_cmd(size, paused=True, ram_file=None, incoming="defer")
        else:
            assert qemu is not None
            src_cmd = qemu_cmd(qemu, size, ram_file=ram_file, incoming=False)
            dst_cmd = qemu_cmd(qemu, size, ram_file=None, incoming=True, memfd=memfd)
        dst = Peer(kind, dst_cmd, work, "dst")
        stack.callback(dst.close)
        src = Peer(kind, src_cmd, work, "src")
        stack.callback(src.close)
        return migrate_pair(src, dst, listen_uri(transport, work), size)


def ceiling_case(
    size: int,
    ram_file: Path,
    transport: str,
    work: Path,
    *,
    copy: bool = False,
    huge: bool = False,
    populate: bool = False,
) -> Result:
    binary = str(ceiling_binary())
    uri = listen_uri(transport, work)
    cmd = [binary, "recv", uri, str(size)]
    cmd += (["--copy"] if copy else []) + (["--huge"] if huge else [])
    cmd += ["--populate"] if populate else []
    recv = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert recv.stdout is not None
        line = recv.stdout.readline().split()
        if line[:1] != ["listening"]:
            raise RuntimeError(f"socket_ceiling recv: {line}")
        start = time.perf_counter()
        send = subprocess.run([binary, "send", line[1], str(size), str(ram_file)], check=False)
        done = recv.stdout.readline().split()
        wall = time.perf_counter() - start
        if send.returncode != 0 or done[:2] != ["received", str(size)]:
            raise RuntimeError(f"socket_ceiling: sender {send.returncode}, receiver {done}")
        return {"seconds": wall, "receiver_seconds": float(done[2])}
    finally:
        if recv.poll() is None:
            recv.kill()
        recv.wait(timeout=60)


# --- throughput ----------------------------------------------------------------------------


def throughput(
    sizes: list[tuple[int, list[str]]],
    rounds: int,
    warmup: bool,
    qemu: str | None,
    ceiling: bool,
    ceiling_thp: bool,
    qemu_memfd: bool,
    settle: float,
    work: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, transports in sizes:
        ram_file = work / f"ram-{size_name(size)}"
        fill_random(ram_file, size)
        try:
            for transport in transports:
                cases: dict[str, Callable[[], Result]] = {
                    "vmkit": partial(vmm_case, "vmkit", None, size, ram_file, transport, work),
                }
                if qemu is not None:
                    cases["qemu"] = partial(vmm_case, "qemu", qemu, size, ram_file, transport, work)
                    if qemu_memfd:
                        cases["qemu-memfd"] = partial(cases["qemu"], memfd=True)
                ceil = partial(ceiling_case, size, ram_file, transport, work)
                if ceiling:
                    cases["ceiling"] = ceil
                    cases["ceiling-copy"] = partial(ceil, copy=True)
                    cases["ceiling-populate"] = partial(ceil, copy=True, populate=True)
                if ceiling_thp:
                    cases["ceiling-thp"] = partial(ceil, huge=True)
                samples: dict[str, list[Result]] = {name: [] for name in cases}
                names = list(cases)
                first = 0 if warmup else 1
                for r in range(first, rounds + 1):
                    k = r % len(names)
                    for name in names[k:] + names[:k]:
                        res = cases[name]()
                        res["load1"] = os.getloadavg()[0]
                        log(
                            f"{size_name(size)} {transport} {name} round {r}: "
                            f"{res['seconds']:.3f} s"
                        )
                        if r > 0:
                            samples[name].append(res)
                        # The destination's RAM was just freed: let the
                        # guest report it to the host (free page
                        # reporting, about 2 s later) before the next
                        # case, so every case starts from the same state.
                        time.sleep(settle)
                seconds = {
                    n: statistics.median(s["seconds"] for s in v) for n, v in samples.items()
                }
                gbps = {n: size / s / 1e9 for n, s in seconds.items()}
                ratios: dict[str, float] = {}
                if "ceiling" in gbps:
                    for c in ("ceiling", "ceiling-copy", "ceiling-populate"):
                        ratios[f"vmkit/{c}"] = gbps["vmkit"] / gbps[c]
                for q in ("qemu", "qemu-memfd"):
                    if q in gbps:
                        ratios[f"vmkit/{q}"] = gbps["vmkit"] / gbps[q]
                        if "ceiling" in gbps:
                            ratios[f"ceiling/{q}"] = gbps["ceiling"] / gbps[q]
                if "ceiling-thp" in gbps and "qemu" in gbps:
                    ratios["ceiling-thp/qemu"] = gbps["ceiling-thp"] / gbps["qemu"]
                out.setdefault(size_name(size), {})[transport] = {
                    "gbps": gbps,
                    "median_seconds": seconds,
                    "seconds_per_gib": {n: s * GIB / size for n, s in seconds.items()},
                    "ratios": ratios,
                    "samples": {n: v for n, v in samples.items()},
                }
        finally:
            unlink(ram_file)
    return out


# --- convergence ---------------------------------------------------------------------------


def convergence_case(
    ram: int,
    link: int,
    fraction: float,
    auto_converge: bool,
    downtime_limit_ms: int,
    work: Path,
    seed: int,
) -> Result:
    from vmkit.jobs import JobManager
    from vmkit.machine import Machine
    from vmkit.migration_settings import MigrationSettings
    from vmkit.migrations import OutgoingMigration
    from vmkit.runstate import RunState

    rate = int(link * fraction)
    uri = listen_uri("unix", work)
    # Listening from the start, and resuming once loaded (no -S), as
    # QEMU's -incoming URI.
    cmd = vmkit_cmd(ram, paused=False, ram_file=None, incoming=uri)
    dst = Peer("vmkit", cmd, work, "cdst")
    try:
        sock = Path(uri.removeprefix("unix:"))
        deadline = time.monotonic() + 60
        while not sock.exists():
            if time.monotonic() > deadline or dst.proc.poll() is not None:
                raise RuntimeError(f"the destination does not listen\n{dst.output()}")
            time.sleep(0.01)
        vm = Machine(memory=ram, workload_rate=rate, workload_pattern="uniform", seed=seed)
        try:
            chunk = 64 * MIB
            for off in range(0, ram, chunk):
                vm.ram.write(off, os.urandom(min(chunk, ram - off)))
            stop: dict[str, Any] = {}

            def on_state(_old: RunState, new: RunState) -> None:
                if new == RunState.FINISH_MIGRATE and "time" not in stop:
                    stop["time"] = time.time()
                    wl = vm.workload
                    stop["workload_bytes"] = wl.stats()["bytes"] if wl is not None else 0
                    stop["throttle"] = wl.throttle if wl is not None else 0

            vm.add_state_listener(on_state)
            vm.cont()
            settings = MigrationSettings()
            caps = [{"capability": "auto-converge", "state": auto_converge}]
            settings.set_capabilities(caps)
            settings.set_parameters({"max-bandwidth": link, "downtime-limit": downtime_limit_ms})
            mig = OutgoingMigration(vm, uri, settings, lambda _name, _data: None)
            wl = vm.workload
            assert wl is not None
            before = int(wl.stats()["bytes"])
            start = time.perf_counter()
            job = JobManager().start("migrate", mig.run)
            job.join(TIMEOUT)
            wall = time.perf_counter() - start
            info = mig.info()
            if info["status"] != "completed":
                raise RuntimeError(f"convergence migration {info['status']}: {info}")
            resume = dst.qmp.next_event("RESUME")["timestamp"]
            status = dst.execute("query-migrate").get("status")
            if status != "completed":
                raise RuntimeError(f"destination {status}\n{dst.output()}")
            resumed = resume["seconds"] + resume["microseconds"] / 1e6
            snap = mig.precopy.snapshot()
            dirtied = int(stop["workload_bytes"]) - before
            transferred = int(info["ram"]["transferred"])
            return {
                "seconds": wall,
                "rate": rate,
                "passes": len(snap["passes"]),
                "switchover": snap.get("switchover"),
                "pause_ms": (resumed - stop["time"]) * 1000,
                "downtime_ms": info.get("downtime"),
                "transferred": transferred,
                "workload_bytes": dirtied,
                "bytes_over_ram_plus_dirtied": transferred / (ram + dirtied),
                "throttle_at_stop": stop["throttle"],
            }
        finally:
            vm.close()
    finally:
        dst.close()


# --- report --------------------------------------------------------------------------------


@contextmanager
def workdir(base: Path) -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="vmkit-bench-live-", dir=base))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def print_summary(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(f"{m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']}; {results['qemu'] or 'no QEMU'}")
    print(f"{results['date']}, load {results['load_before']} -> {results['load_after']}")
    for size, by_transport in results.get("throughput", {}).items():
        for transport, r in by_transport.items():
            rates = ", ".join(f"{n} {v:.2f}" for n, v in r["gbps"].items())
            ratios = ", ".join(f"{n} {v:.2f}x" for n, v in r["ratios"].items())
            print(f"{size:>5} {transport:<4} GB/s: {rates}; {ratios}")
    unix = {s: r["unix"] for s, r in results.get("throughput", {}).items() if "unix" in r}
    if unix:
        print(
            "seconds per GiB over unix: "
            + "; ".join(
                f"{s}: " + ", ".join(f"{n} {v:.3f}" for n, v in r["seconds_per_gib"].items())
                for s, r in unix.items()
            )
        )
    conv = results.get("convergence")
    if conv:
        print(
            f"convergence: RAM {size_name(conv['ram'])}, link {conv['link'] / MIB:.0f} MiB/s, "
            f"downtime-limit {conv['downtime_limit_ms']} ms"
        )
        for key, c in conv.items():
            if not isinstance(c, dict):
                continue
            for run in c["runs"]:
                print(
                    f"  {key:<20} {run['switchover']}, {run['passes']} passes, "
                    f"{run['seconds']:.1f} s, pause {run['pause_ms']:.0f} ms, "
                    f"bytes/(RAM+dirtied) {run['bytes_over_ram_plus_dirtied']:.3f}, "
                    f"throttle {run['throttle_at_stop']} %"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--parts", default="throughput,convergence")
    parser.add_argument("--sizes", default="1G,4G", help="sizes over unix: and tcp:")
    parser.add_argument("--growth-sizes", default="256M,8G", help="more sizes, unix: only")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"))
    parser.add_argument(
        "--settle", type=float, default=3.0, help="pause (s) after each throughput case"
    )
    parser.add_argument("--no-qemu", action="store_true")
    parser.add_argument("--no-ceiling", action="store_true")
    parser.add_argument(
        "--ceiling-thp",
        action="store_true",
        help="also a ceiling whose receiver maps its RAM for huge pages, as QEMU does",
    )
    parser.add_argument(
        "--qemu-memfd",
        action="store_true",
        help="also QEMU with a memory-backend-memfd destination (no huge pages)",
    )
    parser.add_argument("--qemu", default=QEMU, help="QEMU binary")
    parser.add_argument("--conv-ram", default="512M")
    parser.add_argument("--conv-link", default="128M", help="max-bandwidth, bytes/s")
    parser.add_argument("--conv-rates", default="0.25,0.5", help="workload / link")
    parser.add_argument("--conv-auto", default="1.5", help="workload / link, auto-converge")
    parser.add_argument("--downtime-limit", type=int, default=300, help="ms")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.growth_sizes, args.rounds, args.settle = "16M", "", 1, 0.0
        args.conv_ram, args.conv_link = "16M", "64M"
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}

    def log(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    qemu = None if args.no_qemu else shutil.which(args.qemu)
    if qemu is None and not args.no_qemu:
        log(f"{args.qemu} not found: QEMU cases skipped (make system-deps)")
    ceiling = not args.no_ceiling
    if ceiling and not ceiling_binary().exists():
        parser.error(
            f"{ceiling_binary()} missing: cargo build --release -p vmkit-benches "
            "--bin socket_ceiling (or --no-ceiling)"
        )
    sizes = [(parse_size(s), ["unix", "tcp"]) for s in args.sizes.split(",") if s.strip()]
    sizes += [(parse_size(s), ["unix"]) for s in args.growth_sizes.split(",") if s.strip()]
    sizes.sort()

    results: dict[str, Any] = {
        "machine": machine_info(),
        "load_before": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rounds": args.rounds,
        "qemu": None,
    }
    if qemu is not None:
        version = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
        results["qemu"] = version.stdout.splitlines()[0] if version.stdout else qemu
    with workdir(args.dir) as work:
        if "throughput" in parts:
            results["throughput"] = throughput(
                sizes,
                args.rounds,
                not args.smoke,
                qemu,
                ceiling,
                args.ceiling_thp,
                args.qemu_memfd,
                args.settle,
                work,
                log,
            )
        if "convergence" in parts:
            ram, link = parse_size(args.conv_ram), parse_size(args.conv_link)
            conv: dict[str, Any] = {
                "ram": ram,
                "link": link,
                "downtime_limit_ms": args.downtime_limit,
            }
            plan = [(float(f), False) for f in args.conv_rates.split(",") if f.strip()]
            plan += [(float(f), True) for f in args.conv_auto.split(",") if f.strip()]
            for fraction, auto in plan:
                key = f"{fraction:.0%}" + (" auto-converge" if auto else "")
                runs = []
                for r in range(args.rounds):
                    res = convergence_case(ram, link, fraction, auto, args.downtime_limit, work, r)
                    log(f"convergence {key} round {r}: {json.dumps(res)}")
                    runs.append(res)
                conv[key] = {
                    "runs": runs,
                    "median_pause_ms": statistics.median(r["pause_ms"] for r in runs),
                    "median_seconds": statistics.median(r["seconds"] for r in runs),
                    "max_bytes_ratio": max(r["bytes_over_ram_plus_dirtied"] for r in runs),
                }
            results["convergence"] = conv
    results["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
