"""``vmkit migrate SOURCE_QMP DEST_QMP``: a live migration between two QMP
monitors (vmkit's or QEMU's), followed live and summed up.

The options become a :class:`~vmkit.migration_driver.MigrationRequest`;
:func:`migrate_and_report` drives it (:mod:`vmkit.migration_driver`),
shows the progress while it runs (on stderr, when it is a terminal and not
``--quiet``), then prints the summary (:mod:`vmkit.migration_report`,
:mod:`vmkit.migration_view`) and writes the ``--plot``. ``make demo`` calls
:func:`migrate_and_report` too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from vmkit import qom
from vmkit.errors import VmkitError
from vmkit.migration_driver import (
    DriveError,
    MigrationOutcome,
    MigrationRequest,
    drive,
    parse_monitor_address,
)
from vmkit.migration_report import Summary, summarize
from vmkit.migration_view import LiveProgress, print_summary, write_plot

__all__ = ["MigrateReport", "add_parser", "migrate_and_report", "request_from_args"]

_STATES = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}


def add_parser(sub: Any) -> None:
    """Adds ``migrate`` to the ``vmkit`` subcommands."""
    p: argparse.ArgumentParser = sub.add_parser(
        "migrate",
        help="live-migrate between two QMP monitors (vmkit run or QEMU), with live progress",
        description="Live-migrate the machine behind SOURCE_QMP into the one behind DEST_QMP"
        " (each unix:PATH, tcp:HOST:PORT or a socket path; vmkit run or QEMU). The destination"
        " must wait with -incoming defer (then migrate-incoming is issued, on --uri or tcp port 0"
        " of its host) or -incoming URI. Prints a summary: total time, QEMU's downtime, the"
        " pause the guest felt (when both are vmkit), bytes and passes.",
    )
    p.add_argument("source", metavar="SOURCE_QMP", help="the source's QMP monitor")
    p.add_argument("dest", metavar="DEST_QMP", help="the destination's QMP monitor")
    p.add_argument("--uri", help="the migration URI (default: where the destination listens)")
    p.add_argument(
        "--max-bandwidth", metavar="BYTES_PER_S", help="max-bandwidth, e.g. 64M (bytes/s)"
    )
    p.add_argument("--downtime-limit", metavar="MS", help="downtime-limit in milliseconds")
    p.add_argument(
        "--capability",
        action="append",
        default=[],
        metavar="NAME=on|off",
        help="set a migration capability (repeatable)",
    )
    p.add_argument(
        "--plot", metavar="FILE.png", help="write remaining bytes and throughput per pass"
    )
    p.add_argument(
        "--leave-paused",
        action="store_true",
        help="do not run a destination left paused (-S) after the migration",
    )
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def request_from_args(args: argparse.Namespace) -> MigrationRequest:
    """The request the options describe.

    :raises DriveError: (status 2) an option value that does not parse.
    """
    parse_monitor_address(args.source)
    parse_monitor_address(args.dest)
    bandwidth: int | None = None
    if args.max_bandwidth is not None:
        try:
            bandwidth = qom.parse_size(args.max_bandwidth)
        except VmkitError as e:
            raise DriveError(f"--max-bandwidth: {e}", 2) from None
    limit: int | None = None
    if args.downtime_limit is not None:
        text = str(args.downtime_limit)
        if not text.isdigit():
            raise DriveError(f"--downtime-limit: '{text}' is not a number of milliseconds", 2)
        limit = int(text)
    capabilities: dict[str, bool] = {}
    for item in args.capability:
        name, sep, state = str(item).partition("=")
        if not name or (sep and state.lower() not in _STATES):
            raise DriveError(f"--capability: '{item}': expected NAME=on or NAME=off", 2)
        capabilities[name] = _STATES[state.lower()] if sep else True
    if args.uri is not None and not args.uri:
        raise DriveError("--uri is empty", 2)
    return MigrationRequest(
        source=args.source,
        dest=args.dest,
        uri=args.uri,
        max_bandwidth=bandwidth,
        downtime_limit=limit,
        capabilities=capabilities,
        leave_paused=args.leave_paused,
    )


@dataclass
class MigrateReport:
    """What :func:`migrate_and_report` did: the outcome, its summary and
    the plot written (if asked)."""

    outcome: MigrationOutcome
    summary: Summary
    plot: Path | None


def migrate_and_report(
    request: MigrationRequest,
    *,
    console: Console,
    live: bool,
    plot: str | Path | None = None,
    as_json: bool = False,
    handle_sigint: bool = False,
) -> MigrateReport:
    """Drives ``request``, with a live display on stderr if ``live``;
    prints the summary on ``console`` (or one JSON object with
    ``as_json``) and writes the ``plot``.

    :raises DriveError: as :func:`vmkit.migration_driver.drive`; (status 1)
        the plot cannot be written.
    """
    progress_console = Console(stderr=True)
    with LiveProgress(progress_console, enabled=live) as view:
        outcome = asyncio.run(drive(request, view.update, handle_sigint=handle_sigint))
    summary = summarize(outcome.source_info, outcome.dest_info, outcome.samples)
    written: Path | None = None
    if plot is not None:
        try:
            written = write_plot(summary.passes, plot)
        except OSError as e:
            raise DriveError(f"cannot write the plot {plot}: {e.strerror or e}") from None
    if as_json:
        data = {
            **summary.as_dict(),
            "uri": outcome.uri,
            "destination-status": outcome.dest_status,
            "plot": None if written is None else str(written),
        }
        print(json.dumps(data), file=console.file, flush=True)
    else:
        print_summary(console, summary)
        # Paths stay on one line, whatever the width.
        console.print(
            f"destination: {outcome.dest_status} (migrated over {outcome.uri})", soft_wrap=True
        )
        if written is not None:
            console.print(f"plot: {written}", soft_wrap=True)
    return MigrateReport(outcome, summary, written)


def run(args: argparse.Namespace) -> int:
    """``vmkit migrate``: returns the exit status."""
    try:
        request = request_from_args(args)
        if args.plot is not None and not Path(args.plot).parent.is_dir():
            raise DriveError(f"--plot: no directory {Path(args.plot).parent}", 2)
        migrate_and_report(
            request,
            console=Console(),
            live=not args.quiet and not args.json and sys.stderr.isatty(),
            plot=args.plot,
            as_json=args.json,
            handle_sigint=True,
        )
    except DriveError as e:
        print(f"vmkit: {e}", file=sys.stderr)
        return e.status
    return 0
