"""``vmkit run`` speaks QEMU's options with QEMU's meanings, and a user's
mistake is one line on stderr with a non-zero status, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from vmkit.qemu_opts import (
    QemuOptionError,
    parse_display,
    parse_machine,
    parse_memory,
    parse_name,
    parse_qmp,
)
from vmkit.run import parse_qmp_address

MIB = 1 << 20


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ----- the values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256", 256 * MIB),  # a number alone is MiB, as in QEMU
        ("1G", 1 << 30),
        ("size=1G", 1 << 30),
        ("512M", 512 * MIB),
        ("size=64", 64 * MIB),
        ("64K", 64 << 10),
    ],
)
def test_memory_sizes_mean_what_they_mean_in_qemu(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no size given"),
        ("0", "more than 0"),
        ("12Q", "-m 12Q:"),
        ("1G,slots=2,maxmem=4G", "parameter 'slots', 'maxmem' not supported"),
    ],
)
def test_memory_errors(text: str, message: str) -> None:
    with pytest.raises(QemuOptionError, match=message):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("unix:/run/a.qmp", "unix:/run/a.qmp"),
        ("unix:/run/a.qmp,server=on,wait=off", "unix:/run/a.qmp"),
        ("unix:/run/a.qmp,server,nowait", "unix:/run/a.qmp"),
        ("tcp:127.0.0.1:4444,server=on,wait=off", "tcp:127.0.0.1:4444"),
        # ",," is a comma in the path; the options after it are still parsed.
        ("unix:/run/a,,b.qmp,server=on", "unix:/run/a,b.qmp"),
    ],
)
def test_qmp_options_are_parsed_never_part_of_the_path(text: str, address: str) -> None:
    assert parse_qmp(text) == address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unix:/a,server=off", "'server=off' not supported"),
        ("unix:/a,wait=on", "'wait=on' not supported"),
        ("unix:/a,wait", "'wait' not supported"),
        ("unix:/a,reconnect=1", "parameter 'reconnect' not supported"),
    ],
)
def test_qmp_options_vmkit_cannot_honour_are_refused(text: str, message: str) -> None:
    with pytest.raises(QemuOptionError, match=message):
        parse_qmp(text)


def test_machine_name_display() -> None:
    assert parse_machine("pc-q35-7.2") == "pc-q35-7.2"
    assert parse_machine("type=pc-q35-7.2") == "pc-q35-7.2"
    with pytest.raises(QemuOptionError, match="parameter 'accel' not supported"):
        parse_machine("q35,accel=kvm")
    with pytest.raises(QemuOptionError, match="no machine type"):
        parse_machine("")
    assert parse_name("vm1") == "vm1"
    assert parse_name("guest=vm1") == "vm1"
    with pytest.raises(QemuOptionError, match="'process' not supported"):
        parse_name("vm1,process=x")
    assert parse_display("none") == "none"
    with pytest.raises(QemuOptionError, match="vmkit has no display"):
        parse_display("gtk")


# ----- on the command line ---------------------------------------------------


def test_m_256_is_256_mib_through_save(tmp_path: Path) -> None:
    for spelling in ("4", "size=4", "4M"):
        out = cli("save", str(tmp_path / "s"), "-m", spelling, "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["ram_bytes"] == 4 * MIB


def test_qemu_spellings_start_a_machine(tmp_path: Path) -> None:
    """QEMU's spellings, single dashes: the socket is at PATH (not
    'PATH,server=on,wait=off'), the name and machine type are the ones given."""
    sock = tmp_path / "vm.qmp"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "vmkit.cli", "run", "-S", "-nodefaults", "-display", "none",
            "-name", "guest=q1", "-M", "pc-q35-7.2", "-m", "16", "--workload-rate", "0",
            "-qmp", f"unix:{sock},server=on,wait=off",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once listening
        assert line == f"QMP: unix:{sock}\n", proc.stderr.read() if proc.stderr else ""
        assert sock.exists()

        async def check() -> None:
            client = QMPClient("t")
            await client.connect(str(sock))
            try:
                assert await client.execute("query-name") == {"name": "q1"}
                assert await client.execute("query-status") == {
                    "status": "prelaunch",
                    "running": False,
                }
                size = await client.execute(
                    "qom-get", {"path": "/objects/pc.ram", "property": "size"}
                )
                assert size == 16 * MIB
            finally:
                await client.disconnect()

        asyncio.run(asyncio.wait_for(check(), 60))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert not sock.exists()


@pytest.mark.parametrize(
    "option", ["-smp", "-enable-kvm", "-mem-prealloc", "-vnc", "-drive", "-nographic"]
)
def test_options_vmkit_does_not_model_are_refused_by_name(option: str) -> None:
    out = cli("run", "-S", "-m", "16", option, "x")
    assert out.returncode == 2
    assert out.stderr == f"vmkit run: option '{option}' is not supported by vmkit\n"


# ----- errors are messages ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["run", "-qmp", "unix:/a,wait=on"], 2, "'wait=on' not supported"),
        (["run", "-m", "12Q"], 2, "-m 12Q:"),
        (["run", "-machine", "q35,accel=kvm"], 2, "parameter 'accel' not supported"),
        (["run", "--plugin", "no_such_plugin_mod"], 2, "--plugin no_such_plugin_mod: no module"),
        (["save", "S", "--plugin", "no_such_plugin_mod"], 2, "no module named"),
        (["run", "--backend", "file"], 2, "--backend file needs --mem-path"),
        (["restore", "S", "--backend", "file"], 2, "--backend file needs --mem-path"),
        (["run", "-qmp", "unix:/nonexistent-dir/x/vm.qmp"], 1, "cannot serve QMP"),
    ],
)
def test_user_mistakes_are_one_line(
    tmp_path: Path, args: list[str], status: int, message: str
) -> None:
    args = [str(tmp_path / "s") if a == "S" else a for a in args]
    out = cli(*args)
    assert out.returncode == status, out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert message in out.stderr


def test_socket_on_a_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_text("keep me")
    out = cli("run", "-S", "-m", "16", "-qmp", f"unix:{path}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"vmkit: cannot serve QMP on unix:{path}: ")
    assert path.read_text() == "keep me"


def test_plugins_reach_save_restore_and_props(tmp_path: Path) -> None:
    stream = str(tmp_path / "s")
    dev = ["--plugin", "vmkit.demo_devices", "-device", "demo-isa-serial,id=serial0"]
    out = cli("save", stream, "-m", "4", *dev)
    assert out.returncode == 0, out.stderr
    out = cli("restore", stream, "-m", "4", *dev)
    assert out.returncode == 0, out.stderr
    out = cli("restore", stream, "-m", "4")  # without the device the stream is refused
    assert out.returncode == 1 and "Traceback" not in out.stderr
    out = cli("props", "--plugin", "vmkit.demo_devices", "demo-isa-serial")
    assert out.returncode == 0, out.stderr


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    stream = str(tmp_path / "s")
    assert cli("save", stream, "-m", "4").returncode == 0
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the reader is gone before anything is written
    with os.fdopen(write_fd, "w") as closed:
        out = subprocess.run(
            [sys.executable, "-m", "vmkit.cli", "analyze", "--json", stream],
            stdout=closed,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr


def test_ctrl_c_is_a_message() -> None:
    """SIGINT while a command works: one line, status 130."""
    code = (
        "import signal, sys, vmkit.cli as c\n"
        # As a foreground process has it even when this suite runs as a
        # background job, whose shell starts it with SIGINT ignored.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "def boom(args):\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "    return 0\n"
        "c._cmd_types = boom\n"
        "sys.argv = ['vmkit', 'types']\n"
        "sys.exit(c.run())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 130
    assert out.stderr == "vmkit: interrupted\n"


def test_parse_qmp_address_still_takes_the_bare_address() -> None:
    assert parse_qmp_address("unix:/a/b") == "/a/b"


# ----- help --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["-device", "help"], ["Uncategorized devices:", 'name "demo-isa-serial"']),
        (
            ["-device", "demo-isa-serial,help"],
            ["demo-isa-serial options:", "  iobase=<uint32>        -  (default: 1016)"],
        ),
        (["-object", "help"], ["List of user creatable objects:", "  memory-backend-ram"]),
        (
            ["-object", "memory-backend-ram,help"],
            ["memory-backend-ram options:", "  size=<size>            - size of the memory"],
        ),
        (["-machine", "help"], ["Supported machines are:", "pc-q35-vmkit "]),
    ],
)
def test_help_prints_what_qemu_prints(option: list[str], expected: list[str]) -> None:
    out = cli("run", "--plugin", "vmkit.demo_devices", *option)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == expected[0]
    assert any(line.startswith(expected[1]) for line in lines[1:]), out.stdout
    assert not out.stdout.startswith("QMP:")  # nothing was started


# ----- progress ----------------------------------------------------------------


def _save_with_stderr_on_a_terminal(tmp_path: Path, *extra: str) -> str:
    """Runs ``vmkit save`` with stderr on a pseudo-terminal; returns what it showed there."""
    import pty

    main_fd, sub_fd = pty.openpty()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "vmkit.cli", "save", str(tmp_path / "s"), "-m", "4",
             "--run-for", "0.3", "--workload-rate", "1M", *extra],
            stdout=subprocess.PIPE, stderr=sub_fd, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0
        os.close(sub_fd)
        sub_fd = -1
        shown = b""
        with contextlib.suppress(OSError):  # EIO once everything is read
            while chunk := os.read(main_fd, 65536):
                shown += chunk
        return shown.decode(errors="replace")
    finally:
        os.close(main_fd)
        if sub_fd >= 0:
            os.close(sub_fd)


def test_progress_on_a_terminal_only(tmp_path: Path) -> None:
    shown = _save_with_stderr_on_a_terminal(tmp_path)
    assert "running the workload" in shown and "saving to" in shown
    assert _save_with_stderr_on_a_terminal(tmp_path, "--quiet") == ""
    out = cli("save", str(tmp_path / "s"), "-m", "4", "--run-for", "0.1")  # stderr: a pipe
    assert out.returncode == 0 and out.stderr == ""


# ----- machine types ---------------------------------------------------------------


def test_machine_help_lists_every_type_accepted() -> None:
    from vmkit.machine import DEFAULT_MACHINE_TYPE
    from vmkit.machine_types import MACHINE_TYPES

    for spelling in ("-machine", "-M"):
        out = cli("run", spelling, "help")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "Supported machines are:"
        names = [line.split()[0] for line in lines[1:]]
        assert names == list(MACHINE_TYPES)
        assert {"pc-q35-7.2", "pc-q35-9.2", "q35", DEFAULT_MACHINE_TYPE} <= set(names)
        defaults = [line for line in lines[1:] if line.endswith("(default)")]
        assert len(defaults) == 1 and defaults[0].startswith(f"{DEFAULT_MACHINE_TYPE} ")
        # QEMU's layout: the name in a 20-column field, then the description.
        assert all(line[20] == " " and line[21] != " " for line in lines[1:]), lines
    # Each name listed is accepted, and only those.
    for name in names:
        assert parse_machine(name).startswith("pc-q35-")
    assert parse_machine("q35") == "pc-q35-9.2"
    with pytest.raises(QemuOptionError, match=r"unsupported machine type 'pc-i440fx-7\.2'"):
        parse_machine("pc-i440fx-7.2")
    out = cli("run", "-M", "nonesuch")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [
        "vmkit run: -machine nonesuch: unsupported machine type 'nonesuch'"
        " (-machine help lists them) (see vmkit run --help)"
    ]


# ----- single-dash options, told from an own table ---------------------------------


def test_unknown_single_dash_options_are_refused_by_name() -> None:
    from vmkit.cli import build_parser, main

    parser = build_parser()
    run = parser.subcommands["run"]
    assert run.options["-qmp"] is True and run.options["-S"] is False
    assert run.options["--run-for"] is True and "-smp" not in run.options
    assert set(parser.subcommands) >= {"run", "save", "restore", "analyze", "props"}
    for argv, bad in [
        (["run", "-smp", "2"], "-smp"),
        (["run", "-m", "16", "-enable-kvm"], "-enable-kvm"),
        (["save", "x.stream", "-qmp", "unix:/x"], "-qmp"),  # run's, not save's
    ]:
        out = cli(*argv)
        assert out.returncode == 2, out.stderr
        assert out.stderr == f"vmkit {argv[0]}: option '{bad}' is not supported by vmkit\n"
    # An option's value is not taken for an option: -name's here.
    assert main(["run", "-name", "vm-1", "-M", "help"]) == 0


# ----- run --run-for: progress -------------------------------------------------------


def test_the_countdown_draws_on_the_console_given() -> None:
    import io

    from rich.console import Console

    from vmkit import cli_progress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80)
    with cli_progress.Countdown("running the machine", 4.0, show=True, console=console) as bar:
        bar.update(1.0)
        bar.update(9.0)  # past the end: a full bar
    assert "running the machine" in screen.getvalue()
    assert "━" in screen.getvalue()
    quiet = io.StringIO()
    with cli_progress.Countdown(
        "running the machine", 4.0, show=False, console=Console(file=quiet, force_terminal=True)
    ) as bar:
        bar.update(1.0)
    assert quiet.getvalue() == ""


def test_run_for_ends_the_machine_by_its_clock(tmp_path: Path) -> None:
    import io
    import itertools

    from vmkit.machine import Machine
    from vmkit.run import run_machine

    ticks = itertools.count()  # one second per look at the clock
    seen: list[float] = []
    out = io.StringIO()
    vm = Machine(memory=MIB)
    status = run_machine(
        vm,
        str(tmp_path / "q.sock"),
        out=out,
        run_for=5.0,
        on_progress=seen.append,
        clock=lambda: float(next(ticks)),
    )
    assert status == 0
    assert out.getvalue().startswith("QMP: unix:")
    assert seen and seen == sorted(seen) and seen[-1] < 5.0
    assert vm.status != "running"  # closed


def _run_with_stderr_on_a_terminal(tmp_path: Path, *extra: str) -> str:
    """Runs ``vmkit run --run-for`` with stderr on a pseudo-terminal; returns what it showed."""
    import pty

    main_fd, sub_fd = pty.openpty()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "vmkit.cli", "run", "-m", "4", "--workload-rate", "0",
             "-qmp", f"unix:{tmp_path / 'q.sock'}", "--run-for", "0.5", *extra],
            stdout=subprocess.PIPE, stderr=sub_fd, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0
        os.close(sub_fd)
        sub_fd = -1
        shown = b""
        with contextlib.suppress(OSError):  # EIO once everything is read
            while chunk := os.read(main_fd, 65536):
                shown += chunk
        return shown.decode(errors="replace")
    finally:
        os.close(main_fd)
        if sub_fd >= 0:
            os.close(sub_fd)


def test_run_for_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    assert "running the machine" in _run_with_stderr_on_a_terminal(tmp_path)
    assert "running the machine" not in _run_with_stderr_on_a_terminal(tmp_path, "--quiet")
    out = cli("run", "-m", "4", "-qmp", f"unix:{tmp_path / 'p.sock'}", "--run-for", "0.1")
    assert out.returncode == 0 and "running the machine" not in out.stderr
    out = cli("run", "--run-for", "0")
    assert out.returncode == 2 and "--run-for 0: needs a number of seconds above 0" in out.stderr


def test_os_errors_read_as_path_and_reason(tmp_path: Path) -> None:
    missing = tmp_path / "missing.stream"
    out = cli("restore", str(missing), "-m", "4")
    assert out.returncode == 1
    assert out.stderr == f"vmkit: {missing}: No such file or directory\n"
    out = cli("run", "-m", "4", "-qmp", f"unix:{tmp_path / 'q.sock'}", "-incoming", "bogus:x")
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if not line.startswith("vmkit[")]
    assert lines == [
        "vmkit: cannot listen for a migration on bogus:x: 'bogus:x': unknown scheme 'bogus:'"
        " (expected unix:PATH, tcp:HOST:PORT, fd:NAME, file:PATH or exec:CMD)"
    ]
