"""Jobs: the one home for long operations, run off the monitor's event loop.

Saving a machine, measuring a dirty rate or rendering a large ``info``
dump takes long enough to stall every QMP client if it ran on the server's
event loop. A :class:`JobManager` runs each such operation as a
:class:`Job` in a worker thread of its own; the loop awaits it
(:meth:`Job.wait`) and keeps serving other clients meanwhile. The Rust
core releases the GIL for its long calls (a save, a dirty-rate
measurement), so the loop really does run alongside them. ::

    jobs = JobManager()
    job = jobs.start("save", lambda job: machine.save("/tmp/vm.mig"))
    stats = await job.wait()          # in a QMP handler: answer when done
    # or: return at once and report job.status later (calc-dirty-rate)

A job has an id (given, or ``"<kind>-<n>"``), a :class:`JobStatus`
following QEMU's job states where they apply, and a result or an error
(the exception the work raised, unchanged: the QMP layer translates it
with :func:`vmkit.qmp.to_qmp_error`). :meth:`Job.cancel` only asks: a job
that has not started concludes with :class:`JobCancelledError`, and a
running one stops only if its work polls :attr:`Job.cancel_requested`.
Today one work does: the monitor's save hands it to
:meth:`vmkit.machine.Machine.save` as ``cancelled``, which the Rust core
calls while it waits for a FIFO's reader (the save then fails with
:class:`InterruptedError`); once the stream is being written it is no
longer polled. The dirty-rate measurement and HMP work run to their end.

Live migration's ``migrate`` will run on this layer too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from vmkit import errors

__all__ = ["Job", "JobCancelledError", "JobError", "JobManager", "JobStatus"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class JobError(errors.VmkitError):
    """A job request that cannot be met: a duplicate id, an unknown job."""


class JobCancelledError(JobError):
    """The job stopped because it was cancelled."""


class JobStatus(enum.Enum):
    """A job's state, named as QEMU's ``JobStatus`` names the same states."""

    CREATED = "created"
    """Registered, its worker not yet running."""
    RUNNING = "running"
    """The work is running."""
    ABORTING = "aborting"
    """Cancellation was requested; the work has not stopped yet."""
    CONCLUDED = "concluded"
    """Finished: a result, an error, or cancelled."""


class Job(Generic[T]):
    """One long operation: its id, status, and eventual result or error.

    Created by :meth:`JobManager.start`; safe to query from any thread.
    """

    def __init__(self, job_id: str, kind: str, work: Callable[[Job[T]], T]) -> None:
        self.id = job_id
        """Unique among the manager's jobs while it is registered."""
        self.kind = kind
        """What the job does (``"save"``, ``"dirty-rate"``, ``"hmp"``...)."""
        self._work = work
        self._status = JobStatus.CREATED
        # Guards the status, the cancellation and the changes not yet told
        # to listeners; never held while a listener or callback runs.
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._listeners: list[Callable[[Job[T], JobStatus], object]] = []
        self._untold: list[JobStatus] = []
        self._telling = False

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind} {self._status.value}>"

    @property
    def status(self) -> JobStatus:
        """Where the job is."""
        return self._status

    @property
    def cancel_requested(self) -> bool:
        """True once :meth:`cancel` was called; work that can stop early
        polls it (see the module's documentation for which does)."""
        return self._cancel.is_set()

    def done(self) -> bool:
        """True once the job has concluded."""
        return self._future.done()

    @property
    def error(self) -> BaseException | None:
        """The exception the work raised (``None`` while running or on success)."""
        if not self._future.done():
            return None
        return self._future.exception()

    def cancel(self) -> bool:
        """Asks the job to stop; False if it has already concluded."""
        with self._lock:
            if self._status is JobStatus.CONCLUDED:
                return False
            self._cancel.set()
            if self._status is JobStatus.RUNNING:
                self._change(JobStatus.ABORTING)
        self._tell_listeners()
        return True

    def join(self, timeout: float | None = None) -> bool:
        """Blocks until the job concludes, raising nothing; False on timeout."""
        _done, not_done = concurrent.futures.wait([self._future], timeout)
        return not not_done

    def result(self, timeout: float | None = None) -> T:
        """Blocks until the job concludes: its result, or raises its error."""
        return self._future.result(timeout)

    async def wait(self) -> T:
        """Awaits the job on the running event loop (which keeps serving
        meanwhile): its result, or raises its error. Cancelling the awaiting
        task does not stop the job; :meth:`cancel` does."""
        return await asyncio.shield(asyncio.wrap_future(self._future))

    def add_done_callback(self, callback: Callable[[Job[T]], object]) -> None:
        """Calls ``callback(job)`` once the job concludes (at once if it has),
        in the worker's thread, with no lock of the job held."""
        self._future.add_done_callback(lambda _f: callback(self))

    def add_status_listener(self, listener: Callable[[Job[T], JobStatus], object]) -> None:
        """Calls ``listener(job, status)`` for every status change, in the
        order of the changes and with no lock of the job held (so it may
        call back into the job, from any thread). It runs in the thread
        that made the change, or, if another thread is telling listeners
        of an earlier change at the time, in that thread once it is done."""
        self._listeners.append(listener)

    # --- the worker ----------------------------------------------------------

    def _change(self, status: JobStatus) -> None:
        """Call with ``_lock`` held; then :meth:`_tell_listeners` without it."""
        self._status = status
        self._untold.append(status)

    def _tell_listeners(self) -> None:
        """Tells the listeners of the changes not yet told, one thread at a
        time (so they hear them in order), never holding ``_lock``."""
        with self._lock:
            if self._telling:
                return  # that thread tells ours too
            self._telling = True
        while True:
            with self._lock:
                if not self._untold:
                    self._telling = False
                    return
                status = self._untold.pop(0)
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(self, status)
                except Exception:
                    log.exception("job %s: status listener failed", self.id)

    def _run(self) -> None:
        if not self._future.set_running_or_notify_cancel():
            return
        with self._lock:
            cancelled = self._cancel.is_set()
            if not cancelled:
                self._change(JobStatus.RUNNING)
        self._tell_listeners()
        if cancelled:
            self._conclude(None, JobCancelledError(f"job '{self.id}' was cancelled"))
            return
        try:
            result = self._work(self)
        except BaseException as exc:  # kept for whoever waits, as raised
            self._conclude(None, exc)
        else:
            self._conclude(result, None)

    def _conclude(self, result: T | None, error: BaseException | None) -> None:
        # The status is decided under the lock, so that a racing cancel()
        # sees either a running job or a concluded one; listeners and the
        # future's done callbacks run after it is released.
        with self._lock:
            self._work = _spent
            self._change(JobStatus.CONCLUDED)
        self._tell_listeners()
        if error is not None:
            log.debug("job %s (%s) failed: %s", self.id, self.kind, error)
            self._future.set_exception(error)
        else:
            self._future.set_result(result)  # type: ignore[arg-type]


def _spent(_job: Job[T]) -> T:
    raise AssertionError("a job's work runs once")


class JobManager:
    """Starts jobs in worker threads and keeps them by id until they are
    dismissed (by default as soon as they conclude, as QEMU's
    ``auto-dismiss``)."""

    def __init__(self, *, auto_dismiss: bool = True) -> None:
        self.auto_dismiss = auto_dismiss
        self._jobs: dict[str, Job[Any]] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    def start(self, kind: str, work: Callable[[Job[T]], T], *, job_id: str | None = None) -> Job[T]:
        """Runs ``work(job)`` in a new worker thread; returns the job at once.

        :raises JobError: ``job_id`` is already in use.
        """
        with self._lock:
            if job_id is None:
                job_id = f"{kind}-{next(self._numbers)}"
                while job_id in self._jobs:
                    job_id = f"{kind}-{next(self._numbers)}"
            elif job_id in self._jobs:
                raise JobError(f"Job ID '{job_id}' already in use")
            job: Job[T] = Job(job_id, kind, work)
            self._jobs[job_id] = job
        if self.auto_dismiss:
            job.add_done_callback(self._dismiss_concluded)
        worker = threading.Thread(target=job._run, name=f"vmkit-job-{job_id}", daemon=True)
        worker.start()
        return job

    def _dismiss_concluded(self, job: Job[T]) -> None:
        with self._lock:
            if self._jobs.get(job.id) is job:
                del self._jobs[job.id]

    def get(self, job_id: str) -> Job[Any]:
        """The registered job ``job_id``; :class:`JobError` if there is none."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobError(f"Job '{job_id}' not found")
        return job

    def jobs(self) -> list[Job[Any]]:
        """Every registered job, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def dismiss(self, job_id: str) -> None:
        """Forgets a concluded job; :class:`JobError` if it is still running."""
        job = self.get(job_id)
        if not job.done():
            raise JobError(f"Job '{job_id}' has not concluded")
        self._dismiss_concluded(job)

    def cancel_all(self) -> None:
        """Asks every registered job to stop."""
        for job in self.jobs():
            job.cancel()

    def wait_all(self, timeout: float | None = None) -> bool:
        """Waits for every registered job to conclude; False on timeout."""
        pending = [job._future for job in self.jobs()]
        _done, not_done = concurrent.futures.wait(pending, timeout)
        return not not_done
