"""A live migration as its two monitors report it, put together: the pause
the guest felt, the progress, and the summary ``vmkit migrate`` prints.

Pure functions over ``query-migrate`` answers (QEMU's ``MigrationInfo``,
with vmkit's ``x-vmkit-`` members where the monitor is vmkit's); no I/O.

The guest-felt pause. QEMU's ``downtime`` is the source's view: from its
stop to the end of the stream. The guest is paused longer: from the moment
the source stops its vCPUs (vmkit's workload) until the destination runs
them again, after it loaded the stream. Neither side knows both ends, so
each stamps its own steps on the host's wall clock (``CLOCK_REALTIME``;
integers, microseconds since the Unix epoch) in ``query-migrate``'s
``x-vmkit-guest-pause``:

* source: ``stop`` (the guest is asked to pause), ``stopped`` (it is
  paused, after any ``pause-before-switchover`` wait), ``synced`` (the final
  dirty sync is done), ``ram-sent`` (the last RAM is sent),
  ``devices-sent`` (device state and EOF are sent);
* destination: ``loaded`` (the stream ended and the devices are loaded),
  ``resumed`` (the machine runs again: its workload resumed).

:func:`guest_pause` puts the two together. The segments between
consecutive stamps — stop, final sync, final RAM, device state,
destination load, handover — add up to the total exactly. Across two hosts
the figure is only as good as the synchronization of their clocks; stamps
out of order (a clock behind the other) are refused rather than shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENDED",
    "GUEST_PAUSE_KEY",
    "SEGMENTS",
    "GuestPause",
    "PassPoint",
    "Progress",
    "Summary",
    "guest_pause",
    "pass_points",
    "progress_of",
    "summarize",
]

#: The ``query-migrate`` member holding a vmkit monitor's stamps.
GUEST_PAUSE_KEY = "x-vmkit-guest-pause"

#: The stamps each side reports, in the order they happen.
SOURCE_STAMPS = ("stop", "stopped", "synced", "ram-sent", "devices-sent")
DESTINATION_STAMPS = ("loaded", "resumed")

#: The segments of the guest's pause: name, first stamp, last stamp.
SEGMENTS: tuple[tuple[str, str, str], ...] = (
    ("stop", "stop", "stopped"),
    ("final sync", "stopped", "synced"),
    ("final RAM", "synced", "ram-sent"),
    ("device state", "ram-sent", "devices-sent"),
    ("destination load", "devices-sent", "loaded"),
    ("handover", "loaded", "resumed"),
)

#: The statuses a migration ends in.
ENDED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class GuestPause:
    """How long the guest was paused, and where the time went.

    ``segments`` are ``(name, microseconds)`` in :data:`SEGMENTS` order;
    they add up to ``total_us``.
    """

    total_us: int
    segments: tuple[tuple[str, int], ...]

    @property
    def total_ms(self) -> float:
        """The total in milliseconds."""
        return self.total_us / 1000

    def as_dict(self) -> dict[str, Any]:
        """``{"total-ms": float, "segments-ms": {name: float}}``."""
        return {
            "total-ms": self.total_ms,
            "segments-ms": {name: us / 1000 for name, us in self.segments},
        }


def _stamps(info: Mapping[str, Any], names: Sequence[str]) -> dict[str, int] | None:
    block = info.get(GUEST_PAUSE_KEY)
    if not isinstance(block, Mapping):
        return None
    out: dict[str, int] = {}
    for name in names:
        value = block.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        out[name] = value
    return out


def guest_pause(source_info: Mapping[str, Any], dest_info: Mapping[str, Any]) -> GuestPause | None:
    """The pause the guest felt, from the source's and the destination's
    ``query-migrate`` answers after the migration; ``None`` while either
    lacks its stamps (a QEMU monitor, a migration that did not complete, a
    destination that has not run since).

    :raises ValueError: the stamps are out of order — on two hosts, their
        clocks are not synchronized.
    """
    source = _stamps(source_info, SOURCE_STAMPS)
    dest = _stamps(dest_info, DESTINATION_STAMPS)
    if source is None or dest is None:
        return None
    stamps = {**source, **dest}
    segments = []
    for name, first, last in SEGMENTS:
        took = stamps[last] - stamps[first]
        if took < 0:
            raise ValueError(
                f"the guest-pause stamps are out of order ('{last}' is {-took} us before"
                f" '{first}'): are the two hosts' clocks synchronized?"
            )
        segments.append((name, took))
    return GuestPause(stamps["resumed"] - stamps["stop"], tuple(segments))


@dataclass(frozen=True)
class Progress:
    """One look at a running migration, from the source's ``query-migrate``."""

    status: str
    #: The pass being sent: QEMU's dirty-sync count (``MIGRATION_PASS``).
    dirty_sync_count: int
    transferred: int
    remaining: int
    total: int
    #: Stream bytes per second of the last pass (``mbps``); ``None`` before one.
    throughput: float | None
    #: Bytes per second the guest dirtied at the last sync; ``None`` before one.
    dirty_rate: float | None
    expected_downtime_ms: int | None


def progress_of(info: Mapping[str, Any]) -> Progress:
    """The progress in a source's ``query-migrate`` answer."""
    ram: Mapping[str, Any] = info.get("ram") or {}
    mbps = float(ram.get("mbps") or 0)
    page_size = int(ram.get("page-size") or 4096)
    dirty_pages_rate = float(ram.get("dirty-pages-rate") or 0)
    expected = info.get("expected-downtime")
    return Progress(
        status=str(info.get("status", "none")),
        dirty_sync_count=int(ram.get("dirty-sync-count") or 0),
        transferred=int(ram.get("transferred") or 0),
        remaining=int(ram.get("remaining") or 0),
        total=int(ram.get("total") or 0),
        throughput=mbps * 1e6 / 8 if mbps > 0 else None,
        dirty_rate=dirty_pages_rate * page_size if dirty_pages_rate > 0 else None,
        expected_downtime_ms=int(expected) if isinstance(expected, int | float) else None,
    )


@dataclass(frozen=True)
class PassPoint:
    """One pass for the plot: what it had to send and how fast it went."""

    number: int
    #: Bytes dirty when the pass began (all of RAM for the first).
    remaining: int
    #: Bytes the pass sent on the stream.
    bytes_sent: int
    #: Stream bytes per second; ``None`` if not measured.
    throughput: float | None
    #: Whether the source was stopped (the final pass).
    final: bool


def pass_points(
    source_info: Mapping[str, Any], samples: Sequence[Progress] = ()
) -> list[PassPoint]:
    """Per pass: from vmkit's ``x-vmkit-passes``; for a QEMU source, from
    the progress ``samples`` taken while it ran (the first sample of each
    dirty sync, a coarser view)."""
    passes = source_info.get("x-vmkit-passes")
    page_size = int((source_info.get("ram") or {}).get("page-size") or 4096)
    if isinstance(passes, list) and passes:
        return [
            PassPoint(
                number=int(p["pass"]),
                remaining=int(p["dirty-pages"]) * page_size,
                bytes_sent=int(p["bytes-sent"]),
                throughput=p["bytes-per-second"],
                final=bool(p["final"]),
            )
            for p in passes
        ]
    points: list[PassPoint] = []
    seen: set[int] = set()
    for s in samples:
        if s.dirty_sync_count and s.dirty_sync_count not in seen and s.status == "active":
            seen.add(s.dirty_sync_count)
            points.append(PassPoint(s.dirty_sync_count, s.remaining, 0, s.throughput, False))
    return points


@dataclass(frozen=True)
class Summary:
    """What ``vmkit migrate`` reports once a migration ended."""

    status: str
    total_time_ms: int | None
    setup_time_ms: int | None
    #: QEMU's ``downtime``: the source's stop to the end of its stream.
    downtime_ms: int | None
    #: The guest-felt pause, where both monitors are vmkit's.
    guest_pause: GuestPause | None
    #: Why there is no guest-felt pause, when there is none.
    guest_pause_note: str | None
    transferred: int | None
    ram_total: int | None
    dirty_sync_count: int | None
    passes: tuple[PassPoint, ...]
    error: str | None

    @property
    def pass_count(self) -> int | None:
        """Passes sent, the final one included: from vmkit's history, else
        QEMU's dirty-sync count (which also counts the setup's sync)."""
        return len(self.passes) if self.passes else self.dirty_sync_count

    def as_dict(self) -> dict[str, Any]:
        """The summary as one JSON object (``vmkit migrate --json``)."""
        return {
            "status": self.status,
            "total-time-ms": self.total_time_ms,
            "setup-time-ms": self.setup_time_ms,
            "downtime-ms": self.downtime_ms,
            "guest-pause": None if self.guest_pause is None else self.guest_pause.as_dict(),
            "guest-pause-note": self.guest_pause_note,
            "transferred": self.transferred,
            "ram-total": self.ram_total,
            "dirty-sync-count": self.dirty_sync_count,
            "pass-count": self.pass_count,
            "passes": [
                {
                    "pass": p.number,
                    "remaining": p.remaining,
                    "bytes-sent": p.bytes_sent,
                    "bytes-per-second": p.throughput,
                    "final": p.final,
                }
                for p in self.passes
            ],
            "error-desc": self.error,
        }


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def summarize(
    source_info: Mapping[str, Any],
    dest_info: Mapping[str, Any],
    samples: Sequence[Progress] = (),
) -> Summary:
    """The summary of a migration from the final ``query-migrate`` of both
    sides (and the progress samples, for a QEMU source's passes)."""
    pause: GuestPause | None = None
    note: str | None = None
    try:
        pause = guest_pause(source_info, dest_info)
    except ValueError as e:
        note = str(e)
    if pause is None and note is None:
        if GUEST_PAUSE_KEY not in source_info or GUEST_PAUSE_KEY not in dest_info:
            note = "needs vmkit on both sides"
        else:
            note = "the destination has not run since the migration"
    ram: Mapping[str, Any] = source_info.get("ram") or {}
    error = source_info.get("error-desc") or dest_info.get("error-desc")
    return Summary(
        status=str(source_info.get("status", "none")),
        total_time_ms=_int(source_info.get("total-time")),
        setup_time_ms=_int(source_info.get("setup-time")),
        downtime_ms=_int(source_info.get("downtime")),
        guest_pause=pause,
        guest_pause_note=note,
        transferred=_int(ram.get("transferred")),
        ram_total=_int(ram.get("total")),
        dirty_sync_count=_int(ram.get("dirty-sync-count")),
        passes=tuple(pass_points(source_info, samples)),
        error=None if error is None else str(error),
    )
