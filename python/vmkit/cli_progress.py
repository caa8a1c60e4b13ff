"""Progress of the CLI's long operations on a terminal (``rich``, on
stderr): a spinner while a save or restore works, a bar while ``save
--run-for`` runs the workload or ``run --run-for`` runs the machine. Off
when stderr is not a terminal or with ``--quiet``, so scripts and pipes see
only the result."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

__all__ = ["Countdown", "activity", "enabled", "run_for"]


def enabled(quiet: bool) -> bool:
    """Whether to show progress: stderr is a terminal and not ``--quiet``."""
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def activity(text: str, *, show: bool) -> Iterator[None]:
    """A spinner with ``text`` while the block runs (nothing unless ``show``)."""
    if not show:
        yield
        return
    with Console(stderr=True).status(text):
        yield


def run_for(seconds: float, *, show: bool, step: float = 0.1) -> None:
    """Waits ``seconds`` (the workload runs meanwhile), with a bar if ``show``."""
    if not show:
        time.sleep(seconds)
        return
    columns = (TextColumn("running the workload"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("run", total=seconds)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(step, left))
            bar.update(task, completed=seconds - max(left - step, 0.0))


class Countdown:
    """A bar over ``seconds`` that the caller moves with :meth:`update`
    (``run --run-for``: the machine's loop knows how long it ran). Shows
    nothing unless ``show``; ``console`` defaults to stderr's."""

    def __init__(
        self, text: str, seconds: float, *, show: bool, console: Console | None = None
    ) -> None:
        self.seconds = seconds
        self._progress: Progress | None = None
        if show:
            columns = (TextColumn(text), BarColumn(), TimeRemainingColumn())
            self._progress = Progress(
                *columns, console=console or Console(stderr=True), transient=True
            )
            self._task = self._progress.add_task(text, total=seconds)

    def __enter__(self) -> Countdown:
        if self._progress is not None:
            self._progress.start()
        return self

    def update(self, elapsed: float) -> None:
        """Moves the bar to ``elapsed`` seconds (at most ``seconds``)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=min(elapsed, self.seconds))
            self._progress.refresh()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
