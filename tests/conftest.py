"""Shared pytest configuration: Hypothesis profiles.

Select a profile with HYPOTHESIS_PROFILE; without it, "ci" is used when the CI
environment variable is set and "dev" otherwise.
"""

from __future__ import annotations

import os
import shutil

from hypothesis import settings

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=50, deadline=None)


def _default_profile() -> str:
    return "ci" if os.environ.get("CI") else "dev"


settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default_profile()))

# Every QMP answer and event of the suite is checked against vmkit's QAPI
# schema, in this process and in every `vmkit run` it starts
# (vmkit.qmp.commands.CHECK_OUTPUT_ENV): a reply that departs from its
# declared type is answered as an error, an event raises.
os.environ["VMKIT_QMP_CHECK_OUTPUT"] = "1"


# --- object-model fixtures -------------------------------------------------

import gc  # noqa: E402
import itertools  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import pytest  # noqa: E402

from vmkit import qom  # noqa: E402

_counter = itertools.count()


@pytest.fixture
def uniq(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique type names: the registry is process-wide and types cannot be unregistered."""
    test = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40]

    def make(base: str) -> str:
        return f"t{next(_counter)}-{test}-{base}"

    return make


@pytest.fixture
def machine() -> Iterator[qom.Object]:
    """A fresh ``none-machine`` at /machine, removed afterwards."""
    if qom.machine() is not None:
        qom.destroy_machine()
    m = qom.create_machine("none-machine")
    yield m
    qom.destroy_machine()
    for oid in [c.name for _, c in qom.resolve_path("/objects").children()]:
        if oid is not None:
            qom.object_del(oid)


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Asserts that the test leaves no live object or storage behind."""
    gc.collect()
    before = qom.stats()
    yield
    gc.collect()
    after = qom.stats()
    assert after.live_objects == before.live_objects, (before, after)
    assert after.live_storages == before.live_storages, (before, after)


@pytest.fixture
def no_machine() -> Iterator[None]:
    """No /machine before the test (a :class:`vmkit.machine.Machine` makes
    its own) and none left after it."""
    if qom.machine() is not None:
        qom.destroy_machine()
    yield
    if qom.machine() is not None:
        qom.destroy_machine()


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    """The path of ``qemu-system-x86_64``; a test needing it is skipped
    without it, except under CI (``CI`` set), where it fails."""
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        msg = "qemu-system-x86_64 not found (make system-deps installs qemu-system-x86)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path
