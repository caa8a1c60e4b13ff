"""The ``vmkit`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vmkit import __version__, qom
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
    except VmkitError as e:
        print(f"vmkit: {e}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
