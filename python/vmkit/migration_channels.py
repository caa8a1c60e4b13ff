"""QEMU's ``channels`` argument of ``migrate`` and ``migrate-incoming``.

A ``MigrationChannel`` names where a stream goes as a structured
``MigrationAddress`` instead of a URI string. vmkit serves the ``main``
channel and turns its address into the URI its transports parse, so both
spellings reach one code path::

    {"channel-type": "main",
     "addr": {"transport": "socket", "type": "inet", "host": "::1", "port": "4446"}}
    -> "tcp:[::1]:4446"

Errors carry QEMU's messages (``qmp_migrate`` / ``qmp_migrate_incoming``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

__all__ = ["ChannelError", "migration_uri"]


class ChannelError(ValueError):
    """``uri`` / ``channels`` arguments that name no single destination."""


def migration_uri(arguments: Mapping[str, Any], command: str) -> str:
    """The URI that ``command``'s ``uri`` or ``channels`` argument names.

    :raises ChannelError: both or neither given, more than one channel, or an
        address vmkit cannot use, with QEMU's message where QEMU has one.
    """
    uri, channels = arguments.get("uri"), arguments.get("channels")
    if uri is not None and channels is not None:
        raise ChannelError(
            "'uri' and 'channels' arguments are mutually exclusive; exactly one of the"
            f" two should be present in '{command}' qmp command "
        )
    if uri is not None:
        if not isinstance(uri, str):
            raise ChannelError("Invalid parameter type for 'uri', expected: string")
        return uri
    if channels is None:
        raise ChannelError(
            f"neither 'uri' or 'channels' argument are specified in '{command}' qmp command "
        )
    if not isinstance(channels, list) or not channels:
        raise ChannelError("Invalid parameter type for 'channels', expected: array")
    if len(channels) > 1:
        raise ChannelError("Channel list has more than one entries")
    channel = channels[0]
    if not isinstance(channel, dict):
        raise ChannelError("Invalid parameter type for 'channels[0]', expected: object")
    kind = channel.get("channel-type")
    if kind != "main":
        raise ChannelError(
            f"Parameter 'channels[0].channel-type' does not accept value '{kind}'"
            if isinstance(kind, str)
            else "Parameter 'channels[0].channel-type' is missing"
        )
    addr = channel.get("addr")
    if not isinstance(addr, dict):
        raise ChannelError("Parameter 'channels[0].addr' is missing")
    return address_uri(addr)


def address_uri(addr: Mapping[str, Any]) -> str:
    """A ``MigrationAddress`` as a vmkit transport URI.

    :raises ChannelError: a missing member or a transport vmkit lacks.
    """
    transport = addr.get("transport")

    def member(name: str, kinds: type | tuple[type, ...] = str) -> Any:
        value = addr.get(name)
        if value is None:
            raise ChannelError(f"Parameter 'addr.{name}' is missing")
        if not isinstance(value, kinds):
            raise ChannelError(f"Invalid parameter type for 'addr.{name}'")
        return value

    if transport == "socket":
        kind = member("type")
        if kind == "inet":
            host, port = member("host"), member("port", (str, int))
            return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"
        if kind == "unix":
            return f"unix:{member('path')}"
        if kind == "fd":
            return f"fd:{member('str')}"
        raise ChannelError(f"vmkit does not support migration over '{kind}' sockets")
    if transport == "exec":
        args = member("args", list)
        if not args or not all(isinstance(a, str) for a in args):
            raise ChannelError("Parameter 'addr.args' expects a non-empty list of strings")
        return "exec:" + shlex.join(args)
    if transport == "file":
        filename = member("filename")
        offset = addr.get("offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ChannelError("Parameter 'addr.offset' expects a size")
        return f"file:{filename},offset={offset}" if offset else f"file:{filename}"
    if isinstance(transport, str):
        raise ChannelError(f"vmkit does not support the '{transport}' migration transport")
    raise ChannelError("Parameter 'addr.transport' is missing")
