"""Live migration across hosts: two network namespaces joined by a veth
pair stand for two hosts on one link (IPv6 ULA addresses, no duplicate
address detection), one ``vmkit run`` in each, migrating over TCP.

Creating namespaces needs root. Without it the test is skipped, except
under CI (``CI`` set), where a skip would hide that it never ran: there it
fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from test_vmkit_run import start_vmkit, wait_status
from vmkit.qmp import QMPSocket

SOURCE_ADDR = "fd00:766d::1"
DEST_ADDR = "fd00:766d::2"
PORT = 4446


@dataclass
class Hosts:
    """The two namespaces (``ip netns exec NAME`` runs a command there)."""

    source: str
    dest: str

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]


def tx_bytes(ns: str, dev: str) -> int:
    """Bytes ``dev`` in namespace ``ns`` sent."""
    (link,) = json.loads(_ip("-n", ns, "-j", "-s", "link", "show", dev))
    return int(link["stats64"]["tx"]["bytes"])


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        message = "needs root and iproute2 to create network namespaces"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run it")
        pytest.skip(message)
    tag = f"vmkit{os.getpid()}"
    pair = Hosts(f"{tag}-src", f"{tag}-dst")
    _ip("netns", "add", pair.source)
    try:
        _ip("netns", "add", pair.dest)
        try:
            _ip(
                "link", "add", "veth-src", "netns", pair.source,
                "type", "veth", "peer", "name", "veth-dst", "netns", pair.dest,
            )  # fmt: skip
            for ns, dev, addr in (
                (pair.source, "veth-src", SOURCE_ADDR),
                (pair.dest, "veth-dst", DEST_ADDR),
            ):
                _ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            yield pair
        finally:
            _ip("netns", "del", pair.dest)
    finally:
        _ip("netns", "del", pair.source)


def test_live_migration_between_two_hosts_over_tcp(hosts: Hosts, tmp_path: Path) -> None:
    """A running source in one namespace migrates over TCP/IPv6 across the
    veth link into ``vmkit run --incoming tcp:[fd00:766d::2]:4446`` in the
    other; the stream crossed the link, both end as QEMU's do and their
    memory is the same byte for byte."""
    size = 32 << 20
    dest_uri = f"tcp:[{DEST_ADDR}]:{PORT}"
    dst = start_vmkit(
        "-m", "32M", "--qmp", f"unix:{tmp_path / 'd.qmp'}", "-S",
        "--incoming", dest_uri, "--migration-allow-remote",
        prefix=hosts.exec_prefix(hosts.dest),
    )  # fmt: skip
    src = start_vmkit(
        "-m", "32M", "--qmp", f"unix:{tmp_path / 's.qmp'}", "--workload-rate", "4M",
        "--migration-allow-remote",
        prefix=hosts.exec_prefix(hosts.source),
    )  # fmt: skip
    try:
        with QMPSocket(src.socket, negotiate=True) as s, QMPSocket(dst.socket, negotiate=True) as d:
            sent_before = tx_bytes(hosts.source, "veth-src")
            s.execute("migrate", uri=dest_uri)
            info = wait_status(s, "query-migrate", {"completed", "failed", "cancelled"})
            assert info["status"] == "completed", info
            assert wait_status(d, "query-migrate", {"completed", "failed"})["status"] == "completed"
            assert tx_bytes(hosts.source, "veth-src") - sent_before >= info["ram"]["transferred"]
            assert s.execute("query-status")["status"] == "postmigrate"
            assert d.execute("query-status")["status"] == "paused"
            for qmp, name in ((s, "src.mem"), (d, "dst.mem")):
                qmp.execute("pmemsave", val=0, size=size, filename=str(tmp_path / name))
            assert (tmp_path / "src.mem").read_bytes() == (tmp_path / "dst.mem").read_bytes()
    finally:
        assert src.stop() == 0 and dst.stop() == 0


def test_a_remote_address_needs_migration_allow_remote(hosts: Hosts, tmp_path: Path) -> None:
    """Without ``--migration-allow-remote`` a non-loopback address is
    refused (migration streams are not encrypted), and the source runs on."""
    src = start_vmkit(
        "-m", "16M", "--qmp", f"unix:{tmp_path / 's.qmp'}",
        prefix=hosts.exec_prefix(hosts.source),
    )  # fmt: skip
    try:
        with QMPSocket(src.socket, negotiate=True) as s:
            s.execute("migrate", uri=f"tcp:[{DEST_ADDR}]:{PORT}")
            info = wait_status(s, "query-migrate", {"completed", "failed", "cancelled"})
            assert info["status"] == "failed"
            assert "loopback" in info["error-desc"], info
            assert s.execute("query-status")["status"] == "running"
    finally:
        assert src.stop() == 0
