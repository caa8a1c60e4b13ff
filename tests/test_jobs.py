"""Tests for vmkit.jobs: long operations in worker threads, awaited from a loop.

Every wait is on an event the test controls (with a timeout guard), never
on the clock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from vmkit import errors
from vmkit.jobs import Job, JobCancelledError, JobError, JobManager, JobStatus

GUARD = 10.0  # seconds: only so that a broken test fails instead of hanging


def test_a_job_runs_in_a_worker_and_returns_its_result() -> None:
    jobs = JobManager(auto_dismiss=False)
    started, release = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []

    def work(job: Job[int]) -> int:
        threads.append(threading.current_thread())
        started.set()
        assert release.wait(GUARD)
        return 42

    job = jobs.start("answer", work)
    assert started.wait(GUARD)
    assert job.status is JobStatus.RUNNING and not job.done()
    assert job.id == "answer-1" and job.kind == "answer"
    assert jobs.jobs() == [job] and jobs.get("answer-1") is job
    release.set()
    assert job.result(GUARD) == 42
    assert job.status is JobStatus.CONCLUDED and job.error is None
    assert threads[0] is not threading.current_thread()
    jobs.dismiss(job.id)
    assert jobs.jobs() == []


def test_errors_come_back_unchanged() -> None:
    jobs = JobManager()
    failure = errors.PathError("no object at '/x'")

    def work(job: Job[None]) -> None:
        raise failure

    job = jobs.start("fail", work)
    with pytest.raises(errors.PathError) as info:
        job.result(GUARD)
    assert info.value is failure and job.error is failure
    assert job.status is JobStatus.CONCLUDED


def test_auto_dismiss_forgets_concluded_jobs() -> None:
    jobs = JobManager()
    job = jobs.start("quick", lambda job: "done")
    assert job.result(GUARD) == "done"
    assert jobs.wait_all(GUARD)
    assert jobs.jobs() == []
    with pytest.raises(JobError, match="not found"):
        jobs.get(job.id)


def test_ids_are_unique_and_refused_when_taken() -> None:
    jobs = JobManager(auto_dismiss=False)
    release = threading.Event()
    first = jobs.start("x", lambda job: release.wait(GUARD), job_id="mine")
    with pytest.raises(JobError, match="Job ID 'mine' already in use"):
        jobs.start("x", lambda job: None, job_id="mine")
    with pytest.raises(JobError, match="has not concluded"):
        jobs.dismiss("mine")
    assert isinstance(JobError("x"), errors.VmkitError)
    release.set()
    assert first.result(GUARD) is True
    second = jobs.start("x", lambda job: None)
    assert second.id != first.id


def test_cancel_is_a_request_the_work_polls() -> None:
    jobs = JobManager()
    started = threading.Event()
    statuses: list[JobStatus] = []

    def work(job: Job[None]) -> None:
        started.set()
        while not job.cancel_requested:
            threading.Event().wait(0.001)  # a slice of work
        raise JobCancelledError(f"job '{job.id}' was cancelled")

    job = jobs.start("long", work)
    job.add_status_listener(lambda _job, status: statuses.append(status))
    assert started.wait(GUARD)
    assert job.cancel()
    with pytest.raises(JobCancelledError):
        job.result(GUARD)
    # RUNNING too, if the worker got there after the listener was added.
    assert statuses[-2:] == [JobStatus.ABORTING, JobStatus.CONCLUDED]
    assert not job.cancel()  # concluded: nothing to cancel


def test_the_loop_keeps_running_while_it_awaits_a_job() -> None:
    jobs = JobManager()
    release = threading.Event()
    ticks: list[int] = []

    async def main() -> str:
        job = jobs.start("held", lambda job: "released" if release.wait(GUARD) else "guard")
        waiter = asyncio.ensure_future(job.wait())
        for tick in range(5):  # the loop serves other work meanwhile
            await asyncio.sleep(0)
            ticks.append(tick)
        assert not waiter.done()
        release.set()
        return await waiter

    assert asyncio.run(main()) == "released"
    assert ticks == [0, 1, 2, 3, 4]


def test_cancelling_the_waiter_leaves_the_job_running() -> None:
    jobs = JobManager(auto_dismiss=False)
    release = threading.Event()

    async def main() -> Job[bool]:
        job = jobs.start("held", lambda job: release.wait(GUARD))
        waiter = asyncio.ensure_future(job.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not job.done() and job.status is JobStatus.RUNNING
        return job

    job = asyncio.run(main())
    release.set()
    assert job.result(GUARD) is True


def _from_another_thread(call: Callable[[], object]) -> bool:
    """Runs ``call`` in a new thread and waits for it; False if it did not
    return (it is blocked, e.g. on a lock the caller holds)."""
    worker = threading.Thread(target=call)
    worker.start()
    worker.join(GUARD)
    return not worker.is_alive()


def test_listeners_and_done_callbacks_may_call_into_the_job_from_another_thread() -> None:
    """Status listeners and done callbacks run with no lock of the job held:
    one that waits for another thread calling ``cancel()`` does not
    deadlock."""
    jobs = JobManager(auto_dismiss=False)
    started = threading.Event()
    returned: dict[str, bool] = {}
    answers: dict[str, bool] = {}
    recorded = {"listener": threading.Event(), "done callback": threading.Event()}

    def work(job: Job[None]) -> None:
        started.set()
        while not job.cancel_requested:
            threading.Event().wait(0.001)  # a slice of work
        raise JobCancelledError(f"job '{job.id}' was cancelled")

    def cancel_from_another_thread(job: Job[None], who: str) -> None:
        def call() -> None:
            answers[who] = job.cancel()

        returned[who] = _from_another_thread(call)
        recorded[who].set()

    def listener(job: Job[None], status: JobStatus) -> None:
        if status is JobStatus.ABORTING:
            cancel_from_another_thread(job, "listener")

    job = jobs.start("long", work)
    job.add_status_listener(listener)
    job.add_done_callback(lambda job: cancel_from_another_thread(job, "done callback"))
    assert started.wait(GUARD)
    assert job.cancel()
    with pytest.raises(JobCancelledError):
        job.result(GUARD)
    # The done callback may still run after result() returned.
    assert all(event.wait(GUARD) for event in recorded.values())
    assert returned == {"listener": True, "done callback": True}
    assert answers["done callback"] is False  # concluded: nothing to cancel
