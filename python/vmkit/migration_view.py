"""How ``vmkit migrate`` shows a migration: a live ``rich`` display while
it runs, the summary tables after, and the per-pass plot (matplotlib, Agg
backend: no display needed). Rendering only; the numbers come from
:mod:`vmkit.migration_report`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from vmkit.migration_report import PassPoint, Progress, Summary

__all__ = ["LiveProgress", "print_summary", "summary_tables", "write_plot"]

_MIB = 1 << 20


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / _MIB:,.1f} MiB"


def _rate(n: float | None) -> str:
    return "-" if n is None else f"{n / _MIB:,.1f} MiB/s"


def _ms(n: float | None) -> str:
    return "-" if n is None else f"{n:,.1f} ms"


def render_progress(p: Progress) -> Table:
    """One look at the migration as a renderable."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("migration", Text.assemble((p.status, "cyan"), f", pass {p.dirty_sync_count}"))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(p.total, 1), completed=max(0, p.total - p.remaining), width=30),
        f"{_mib(p.remaining)} of {_mib(p.total)} still to send",
    )
    grid.add_row("remaining", bar)
    grid.add_row("sent", _mib(p.transferred))
    grid.add_row("throughput", _rate(p.throughput))
    grid.add_row("dirty rate", _rate(p.dirty_rate))
    grid.add_row("expected downtime", _ms(p.expected_downtime_ms))
    return grid


class LiveProgress:
    """A live display of the migration's progress on ``console``; shows
    nothing when ``enabled`` is false (not a terminal, ``--quiet``)."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self._live = (
            Live(console=console, refresh_per_second=8, transient=True) if enabled else None
        )

    def update(self, progress: Progress) -> None:
        """Shows ``progress``."""
        if self._live is not None:
            self._live.update(render_progress(progress))

    def __enter__(self) -> LiveProgress:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()


def summary_tables(summary: Summary) -> list[Table]:
    """The summary, then the passes (when known), as tables."""
    t = Table(title="migration summary", show_header=False, title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("status", summary.status)
    t.add_row("total time", _ms(summary.total_time_ms))
    t.add_row("setup time", _ms(summary.setup_time_ms))
    t.add_row("downtime (QEMU: source stop to end of stream)", _ms(summary.downtime_ms))
    pause = summary.guest_pause
    if pause is None:
        t.add_row("guest pause (source stop to destination running)", summary.guest_pause_note)
    else:
        t.add_row("guest pause (source stop to destination running)", _ms(pause.total_ms))
        for name, us in pause.segments:
            t.add_row(f"  {name}", _ms(us / 1000))
    t.add_row("transferred", _mib(summary.transferred))
    t.add_row("guest RAM", _mib(summary.ram_total))
    t.add_row("passes", "-" if summary.pass_count is None else str(summary.pass_count))
    t.add_row(
        "dirty syncs", "-" if summary.dirty_sync_count is None else str(summary.dirty_sync_count)
    )
    tables = [t]
    if summary.passes:
        p = Table(title="passes", title_justify="left")
        for name in ("pass", "dirty at start", "sent", "throughput", ""):
            p.add_column(name, justify="right")
        for point in summary.passes:
            p.add_row(
                str(point.number),
                _mib(point.remaining),
                _mib(point.bytes_sent) if point.bytes_sent else "-",
                _rate(point.throughput),
                "source stopped" if point.final else "",
            )
        tables.append(p)
    return tables


def print_summary(console: Console, summary: Summary) -> None:
    """Prints the summary tables."""
    for table in summary_tables(summary):
        console.print(table)


def write_plot(points: Sequence[PassPoint], path: str | os.PathLike[str]) -> Path:
    """Draws the bytes still dirty at the start of each pass (bars) and
    each pass's throughput (line) into the PNG ``path``; returns it.

    :raises OSError: the file cannot be written.
    """
    # No pyplot: a Figure of its own with the Agg canvas needs no display
    # and leaves no global state behind.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    numbers = [p.number for p in points]
    colors = ["tab:red" if p.final else "tab:blue" for p in points]
    ax.bar(numbers, [p.remaining / _MIB for p in points], color=colors, alpha=0.7)
    ax.set_xlabel("pass (red: after the source stopped)")
    ax.set_ylabel("dirty at the start of the pass (MiB)", color="tab:blue")
    ax.set_xticks(numbers)
    rate = ax.twinx()
    rate.plot(
        numbers,
        [float("nan") if p.throughput is None else p.throughput / _MIB for p in points],
        color="tab:green",
        marker="o",
    )
    rate.set_ylabel("throughput (MiB/s)", color="tab:green")
    rate.set_ylim(bottom=0)
    fig.suptitle("live migration: remaining bytes and throughput per pass")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out
