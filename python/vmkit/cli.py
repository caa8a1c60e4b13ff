"""The ``vmkit`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from vmkit import __version__, migration, qom
from vmkit.errors import VmkitError


def _cmd_types(args: argparse.Namespace) -> int:
    for t in qom.list_types(args.implements, include_abstract=args.all):
        flag = " (abstract)" if t.abstract else ""
        print(f"{t.name}{flag}  <- {t.parent or '-'}")
    return 0


def _cmd_props(args: argparse.Namespace) -> int:
    for p in qom.list_properties(args.type):
        default = "" if p.default_value is None else f" = {p.default_value!r}"
        descr = f"  # {p.description}" if p.description else ""
        print(f"{p.name}: {p.type}{default}{descr}")
    return 0


def _cmd_tree(args: argparse.Namespace) -> int:
    qom.create_machine(args.machine)
    print(qom.tree(args.path), end="")
    return 0


def _cell(v: object) -> str:
    return "-" if v is None else str(v)


def _print_report(report: dict[str, Any]) -> None:
    rows = [
        [
            str(r["offset"]),
            r["type"],
            _cell(r["section_id"]),
            _cell(r["idstr"]),
            _cell(r["instance_id"]),
            _cell(r["version_id"]),
        ]
        for r in report["records"]
    ]
    header = ["offset", "type", "section", "idstr", "instance", "version"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    blocks = report["ram"]["blocks"]
    if blocks:
        print("ram:")
        for b in blocks:
            print(
                f"  {b['idstr']}: used_length={b['used_length']:#x}"
                f" zero_pages={b['zero_pages']} normal_pages={b['normal_pages']}"
            )
    if report["devices"]:
        print("devices:")
        for d in report["devices"]:
            fields = json.dumps(d["fields"], separators=(",", ":"))
            print(
                f"  {d['idstr']} (instance {d['instance_id']}, version {d['version_id']}): {fields}"
            )
    print(f"length: {report['length']}")


def _cmd_analyze(args: argparse.Namespace) -> int:
    report = migration.analyze(args.stream)
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    err = report["error"]
    if err is None:
        return 0
    section = f" (section '{err['section']}')" if err["section"] is not None else ""
    print(f"vmkit: error at offset {err['offset']}{section}: {err['message']}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="vmkit", description="Model, inspect and drive vmkit machines."
    )
    parser.add_argument("--version", action="version", version=f"vmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("types", help="list registered QOM types")
    p.add_argument("--implements", help="only types that are or implement this type")
    p.add_argument("--all", action="store_true", help="include abstract types")
    p.set_defaults(func=_cmd_types)

    p = sub.add_parser("props", help="list the properties of a type (qom-list-properties)")
    p.add_argument("type")
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
    p.set_defaults(func=_cmd_analyze)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        status: int = args.func(args)
    except (VmkitError, OSError) as e:
        print(f"vmkit: {e}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
