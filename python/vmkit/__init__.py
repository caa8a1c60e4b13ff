"""vmkit: model the machine layer of a QEMU-class virtual machine monitor from Python.

The object model lives in :mod:`vmkit.qom`, guest memory in :mod:`vmkit.memory`,
and their exceptions in :mod:`vmkit.errors`.
"""

from vmkit import errors, memory, qom
from vmkit._core import __version__

__all__ = ["__version__", "errors", "memory", "qom"]
