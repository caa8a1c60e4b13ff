"""The ``vmkit`` command line."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn

from vmkit import __version__, cli_progress, migrate_cmd, migration, qom
from vmkit.errors import HookError, VmkitError
from vmkit.machine import DEFAULT_MACHINE_TYPE, Machine
from vmkit.qemu_opts import (
    QemuOptionError,
    parse_display,
    parse_machine,
    parse_memory,
    parse_name,
    parse_qmp,
    split_option,
)


def _cmd_types(args: argparse.Namespace) -> int:
    _load_plugins(args.plugin)
    for t in qom.list_types(args.implements, include_abstract=args.all):
        flag = " (abstract)" if t.abstract else ""
        print(f"{t.name}{flag}  <- {t.parent or '-'}")
    return 0


def _cmd_props(args: argparse.Namespace) -> int:
    _load_plugins(args.plugin)
    for p in qom.type_properties(args.type):
        default = "" if p.default_value is None else f" = {p.default_value!r}"
        descr = f"  # {p.description}" if p.description else ""
        print(f"{p.name}: {p.type}{default}{descr}")
    return 0


def _cmd_tree(args: argparse.Namespace) -> int:
    qom.create_machine(args.machine)
    print(qom.qom_tree(args.path), end="")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    report = migration.analyze(args.stream)
    if args.json:
        print(json.dumps(report))
    else:
        from vmkit.analyze_text import format_report

        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
        print(format_report(report, width=width, device=args.device), end="")
    err = report["error"]
    if err is None:
        return 0
    print(f"vmkit: {err['summary']}", file=sys.stderr)
    return 1


class UsageError(VmkitError):
    """A command line that asks for something impossible: exit status 2."""


class OptionError(UsageError):
    """A ``-device`` / ``-object`` option that does not parse."""


class DeviceOption(NamedTuple):
    """A parsed ``-device`` / ``-object`` option: the type, the id, and
    each property's value as text (the property's type parses it)."""

    driver: str
    id: str | None
    props: dict[str, str]


_split_option = split_option


def parse_device_option(text: str) -> DeviceOption:
    """Parses ``TYPE[,id=ID][,PROP=VALUE...]`` as QEMU's option parser does.

    ``,,`` is a literal comma (``serial=a,,b`` sets ``a,b``); a property
    without ``=`` is set to ``on``. Values stay text: :func:`build_device`
    has each converted by its property's own type (``on``, ``0x10``,
    ``64K``, an enum member, a path), as QEMU does.

    :raises OptionError: no type, or an empty property name.
    """
    driver, *items = _split_option(text)
    if not driver:
        raise OptionError(f"'{text}': no type given (TYPE,prop=value,...)")
    if "=" in driver:
        raise OptionError(f"'{text}': the type comes first (TYPE,prop=value,...)")
    dev_id: str | None = None
    props: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise OptionError(f"'{text}': invalid parameter '{item}' (no name)")
        if not sep:
            value = "on"
        if key == "id":
            dev_id = value
        else:
            props[key] = value
    return DeviceOption(driver, dev_id, props)


def _add_plugin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a Python module first, e.g. one registering device types"
        " (vmkit.demo_devices); repeatable",
    )


def _add_machine_options(p: argparse.ArgumentParser) -> None:
    """The machine's shape: shared by save, restore and run."""
    p.add_argument(
        "-m",
        "--memory",
        type=_typed(parse_memory),
        default="128M",
        metavar="[size=]SIZE",
        help="RAM size as in QEMU: a number alone is MiB (256, 1G, size=512M; default 128M)",
    )
    p.add_argument("--backend", choices=["ram", "memfd", "file"], default="ram")
    p.add_argument("--mem-path", help="backing file of the file backend")
    p.add_argument(
        "--share",
        action="store_true",
        help="map the file backend shared (QEMU's share=on): writes reach the file, and"
        " another process mapping it sees them (see x-ignore-shared)",
    )
    p.add_argument(
        "-M",
        "-machine",
        "--machine",
        "--machine-type",
        dest="machine_type",
        type=_typed(parse_machine),
        default=DEFAULT_MACHINE_TYPE,
        metavar="[type=]TYPE",
        help=f"machine type named in migration streams (default {DEFAULT_MACHINE_TYPE})",
    )
    _add_plugin_option(p)
    p.add_argument(
        "-device",
        "--device",
        action="append",
        default=[],
        metavar="TYPE[,id=ID][,PROP=VALUE...]",
        help="add a device (repeatable; ',,' is a comma in a value); PCI devices"
        " (pci-testdev, qemu-xhci) take addr=SS[.F] on pcie.0, USB devices"
        " (usb-tablet, usb-kbd) bus=ID.0[,port=N]",
    )
    p.add_argument(
        "--no-pci-hotplug",
        dest="pci_hotplug",
        action="store_false",
        help="pcie.0 refuses devices plugged or unplugged at run time, as QEMU's q35 root bus does",
    )


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a :mod:`vmkit.qemu_opts` parser: its error
    becomes a usage error (one line, exit status 2)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except QemuOptionError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def _load_plugins(modules: list[str]) -> None:
    """Imports each ``--plugin`` module; one that is not there is a usage error."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            raise UsageError(f"--plugin {module}: no module named '{e.name}'") from e


def _print_help_asked(args: argparse.Namespace) -> bool:
    """``-device help``, ``-device TYPE,help``, ``-object help``,
    ``-object TYPE,help``, ``-machine help``: prints what QEMU prints for
    the first one given and returns True."""
    from vmkit import qemu_help

    _load_plugins(args.plugin)
    if args.machine_type == "help":
        print(qemu_help.machine_list(DEFAULT_MACHINE_TYPE), end="")
        return True
    for flag, texts in (("-device", args.device), ("-object", getattr(args, "object", []))):
        for text in texts:
            if text == "help":
                listing = qemu_help.device_list() if flag == "-device" else qemu_help.object_list()
                print(listing, end="")
                return True
            driver, *items = _split_option(text)
            if "help" in items:  # other mistakes are the option's own, reported when it is added
                print(qemu_help.type_options(driver, device=flag == "-device"), end="")
                return True
    return False


def _build_machine(args: argparse.Namespace, **extra: Any) -> Machine:
    _load_plugins(args.plugin)
    if args.backend == "file" and not args.mem_path:
        raise UsageError("--backend file needs --mem-path FILE")
    vm = Machine(
        memory=args.memory,
        backend=args.backend,
        mem_path=args.mem_path,
        share=args.share,
        machine_type=args.machine_type,
        pci_hotplug=args.pci_hotplug,
        **extra,
    )
    try:
        for text in getattr(args, "object", []):
            _add_from_option("-object", text)
        for text in args.device:
            _add_from_option("-device", text)
        vm.creation_done()  # what comes over QMP from now on is hot-plugged
    except BaseException:
        vm.close()
        raise
    return vm


def _add_from_option(flag: str, text: str) -> None:
    """Adds what a ``-device`` / ``-object`` option describes; an error
    names the option as given."""
    try:
        opt = parse_device_option(text)
    except OptionError as e:
        raise OptionError(f"{flag} {e}") from e  # its message quotes the text already
    try:
        if flag == "-object":
            if opt.id is None:
                raise OptionError("an id is required")
            qom.object_add_from_text(opt.driver, opt.id, opt.props)
        else:
            qom.device_add_from_text(opt.driver, opt.id, opt.props)
    except VmkitError as e:
        # A device's own refusal reads as QEMU prints it.
        reason = e.reason if isinstance(e, HookError) else None
        raise OptionError(f"{flag} {text}: {reason or e}") from e


def _print_result(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        shown = f"{value:#018x}" if key == "ram_xxh3_64" else value
        print(f"{key}: {shown}")


def _cmd_save(args: argparse.Namespace) -> int:
    if _print_help_asked(args):
        return 0
    show = cli_progress.enabled(args.quiet or args.json)
    runs = args.run_for > 0 or args.run_ops > 0
    rate = qom.parse_size(args.workload_rate) if runs else 0
    with _build_machine(
        args, workload_rate=rate, workload_pattern=args.workload_pattern, seed=args.seed
    ) as vm:
        if runs:
            vm.cont()
            if args.run_for > 0:
                cli_progress.run_for(args.run_for, show=show)
            if args.run_ops > 0 and vm.workload is not None:
                # Ends early only if the workload's threads fail.
                vm.workload.wait_ops(args.run_ops, timeout=3600)
            vm.stop()
        started = time.perf_counter()
        with cli_progress.activity(f"saving to {args.stream}", show=show):
            stats = vm.save(args.stream)
        seconds = time.perf_counter() - started
        result: dict[str, Any] = {
            "stream": args.stream,
            **stats,
            "seconds": round(seconds, 6),
            "ram_gb_per_s": round(stats["ram_bytes"] / seconds / 1e9, 3),
            "ram_xxh3_64": vm.ram.checksum(),
        }
    _print_result(args, result)
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    if _print_help_asked(args):
        return 0
    show = cli_progress.enabled(args.quiet or args.json)
    with _build_machine(args) as vm:
        started = time.perf_counter()
        with cli_progress.activity(f"restoring from {args.stream}", show=show):
            stats = vm.restore(args.stream)
        seconds = time.perf_counter() - started
        result: dict[str, Any] = {
            "stream": args.stream,
            **stats,
            "seconds": round(seconds, 6),
            "status": vm.status,
            "ram_xxh3_64": vm.ram.checksum(),
        }
    _print_result(args, result)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    if _print_help_asked(args):
        return 0
    from vmkit.run import QMPAddressError, parse_qmp_address, run_machine

    try:
        address = (
            parse_qmp_address(args.qmp, allow_remote=args.qmp_allow_remote) if args.qmp else None
        )
    except QMPAddressError as e:
        print(f"vmkit: {e}", file=sys.stderr)
        return 2
    if args.run_for is not None and args.run_for <= 0:
        raise UsageError(f"--run-for {args.run_for:g}: needs a number of seconds above 0")
    vm = _build_machine(
        args,
        workload_rate=qom.parse_size(args.workload_rate),
        workload_pattern=args.workload_pattern,
        workload_threads=args.workload_threads,
        seed=args.seed,
    )
    show = args.run_for is not None and cli_progress.enabled(args.quiet)
    with cli_progress.Countdown("running the machine", args.run_for or 0.0, show=show) as bar:
        return run_machine(
            vm,
            address,
            start_paused=args.S,
            name=args.name,
            verbose=args.verbose,
            incoming=args.incoming,
            migration_allow_remote=args.migration_allow_remote,
            unmodelled=args.unmodelled,
            run_for=args.run_for,
            on_progress=bar.update if show else None,
        )


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``vmkit run: -m 12Q: ...``), status 2.

    Keeps a table of its own options (:attr:`options`) and, for the top
    level, of its subcommands' parsers (:attr:`subcommands`), so that
    options it does not know can be told apart without argparse's
    internals."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options: dict[str, bool] = {}  # option string -> takes a value
        self.subcommands: dict[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        for option in action.option_strings:
            self.options[option] = action.nargs != 0
        return action

    def error(self, message: str) -> NoReturn:
        # A value parser's message names its option already.
        message = re.sub(r"^argument [^:]+: (?=-)", "", message)
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> _Parser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog="vmkit", description="Model, inspect and drive vmkit machines.")
    parser.add_argument("--version", action="version", version=f"vmkit {__version__}")
    subcommands = parser.subcommands

    class _Subcommand(_Parser):
        """A subcommand's parser, listed in the top level's table."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            subcommands[self.prog.rsplit(" ", 1)[-1]] = self

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Subcommand)

    p = sub.add_parser("types", help="list registered QOM types")
    p.add_argument("--implements", help="only types that are or implement this type")
    p.add_argument("--all", action="store_true", help="include abstract types")
    _add_plugin_option(p)
    p.set_defaults(func=_cmd_types)

    p = sub.add_parser("props", help="list the properties of a type (qom-list-properties)")
    p.add_argument("type")
    _add_plugin_option(p)
    p.set_defaults(func=_cmd_props)

    p = sub.add_parser("tree", help="print the object tree of a fresh machine (info qom-tree)")
    p.add_argument("--machine", default="none-machine")
    p.add_argument("path", nargs="?", default="/machine")
    p.set_defaults(func=_cmd_tree)

    p = sub.add_parser(
        "analyze", help="list the records of a migration stream file (analyze-migration.py)"
    )
    p.add_argument("stream", help="the stream file")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--device",
        metavar="GLOB",
        help="show only the device sections whose idstr matches, every field in full",
    )
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser(
        "save",
        help="build a machine, optionally run its workload, and save it to a stream file",
    )
    p.add_argument("stream", help="the stream file to write")
    _add_machine_options(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on the terminal")
    p.add_argument(
        "--run-for", type=float, default=0.0, metavar="SECONDS", help="run the workload first"
    )
    p.add_argument(
        "--run-ops",
        type=int,
        default=0,
        metavar="N",
        help="run the workload first until it has written N pages (after --run-for)",
    )
    p.add_argument("--workload-rate", default="64M", help="bytes/s the workload writes")
    p.add_argument(
        "--workload-pattern",
        "--pattern",  # deprecated spelling
        dest="workload_pattern",
        default="uniform",
        choices=["sequential", "uniform", "hot-set", "zipf"],
    )
    p.add_argument("--seed", type=int, default=0, help="the workload's seed")
    p.set_defaults(func=_cmd_save)

    p = sub.add_parser(
        "restore",
        help="build a machine of the saved shape and restore a stream file into it",
    )
    p.add_argument("stream", help="the stream file to read")
    _add_machine_options(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on the terminal")
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser(
        "run",
        help="run a machine in the foreground with a QMP monitor (like qemu-system-x86_64)",
        description="Run one machine until QMP 'quit', SIGTERM or SIGINT. Prints"
        " 'QMP: unix:PATH' (or tcp:HOST:PORT) on stdout once the monitor listens.",
    )
    p.add_argument("-S", action="store_true", help="start paused (prelaunch) until 'cont'")
    p.add_argument(
        "--incoming",
        "-incoming",
        metavar="URI|defer",
        help="wait for a migration at URI (unix:PATH, tcp:HOST:PORT, file:PATH, exec:CMD;"
        " prints 'incoming: URI' once listening) or, with 'defer', for QMP migrate-incoming;"
        " the machine runs once it loaded unless -S",
    )
    p.add_argument(
        "-qmp",
        "--qmp",
        type=_typed(parse_qmp),
        metavar="unix:PATH|tcp:HOST:PORT[,server=on,wait=off]",
        help="QMP monitor address (default: a 0600 socket in the per-user runtime directory);"
        " the monitor always listens without waiting (QEMU's server=on,wait=off)",
    )
    p.add_argument(
        "-nodefaults",
        action="store_true",
        help="accepted for QEMU's sake: vmkit creates no default devices",
    )
    p.add_argument(
        "-display",
        type=_typed(parse_display),
        metavar="none",
        help="accepted for QEMU's sake: vmkit has no display",
    )
    p.add_argument(
        "--qmp-allow-remote", action="store_true", help="allow a non-loopback TCP address"
    )
    p.add_argument(
        "--unmodelled",
        choices=["refuse", "report"],
        default="refuse",
        help="what an incoming migration does with RAM blocks and device sections this machine"
        " does not model: refuse the stream (as QEMU does; the default) or take them, decode"
        " them by the stream's VMDESCRIPTION and list them (query-migrate x-vmkit-unmodelled;"
        " for a stream from a real QEMU)",
    )
    p.add_argument(
        "--migration-allow-remote",
        action="store_true",
        help="let migrations (migrate, --incoming, migrate-incoming) use TCP addresses that"
        " are not loopback; the stream is not encrypted",
    )
    _add_machine_options(p)
    p.add_argument(
        "-name",
        "--name",
        type=_typed(parse_name),
        metavar="[guest=]NAME",
        help="the machine name (query-name)",
    )
    p.add_argument(
        "-object",
        "--object",
        action="append",
        default=[],
        metavar="TYPE,id=ID[,PROP=VALUE...]",
        help="add a user-creatable object (repeatable)",
    )
    p.add_argument(
        "--workload-rate", default="32M", help="bytes/s the workload writes while running (0: none)"
    )
    p.add_argument(
        "--workload-pattern",
        default="uniform",
        choices=["sequential", "uniform", "hot-set", "zipf"],
    )
    p.add_argument("--workload-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the workload's seed")
    p.add_argument(
        "--run-for",
        type=float,
        metavar="SECONDS",
        help="end the machine (as on SIGTERM) after it has run this long; a bar on a terminal",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on the terminal")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=_cmd_run)

    migrate_cmd.add_parser(sub)
    return parser


def _unsupported_option(parser: _Parser, argv: Sequence[str]) -> str | None:
    """The first QEMU-style single-dash option (``-smp``, ``-enable-kvm``)
    the chosen subcommand does not know, so it is refused by name rather
    than read as ``-m`` / ``-S`` with a glued value."""
    subcommand = parser.subcommands.get(argv[0]) if argv else None
    if subcommand is None:
        return None
    known = subcommand.options
    takes_value = False
    for token in argv[1:]:
        if token == "--":
            return None
        if takes_value:
            takes_value = False
            continue
        name = token.partition("=")[0]
        if name in known:
            takes_value = known[name] and "=" not in token
            continue
        single_dash = token.startswith("-") and not token.startswith("--") and len(token) > 2
        if single_dash and not token[1:].replace(".", "", 1).isdigit():  # not a number
            return token
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (2 for a usage error)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    unsupported = _unsupported_option(parser, argv)
    if unsupported is not None:
        print(f"vmkit {argv[0]}: option '{unsupported}' is not supported by vmkit", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        status: int = args.func(args)
    except UsageError as e:
        print(f"vmkit: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise  # for run(): not an error of the command
    except OSError as e:
        print(f"vmkit: {_os_error_text(e)}", file=sys.stderr)
        return 1
    except VmkitError as e:
        print(f"vmkit: {e}", file=sys.stderr)
        return 1
    return status


def _os_error_text(e: OSError) -> str:
    """``PATH: reason`` rather than Python's ``[Errno N] reason: 'PATH'``."""
    if e.strerror is None:
        return str(e)
    return f"{e.filename}: {e.strerror}" if e.filename is not None else e.strerror


def run() -> int:
    """The console entry point: :func:`main`, with Ctrl-C and a closed
    output pipe (``vmkit analyze --json | head``) ending quietly."""
    try:
        status = main()
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except KeyboardInterrupt:
        print("vmkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Python would complain again when flushing at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(run())
