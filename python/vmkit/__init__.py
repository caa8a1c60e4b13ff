"""vmkit: model the machine layer of a QEMU-class virtual machine monitor from Python.

The object model lives in :mod:`vmkit.qom`, its exceptions in :mod:`vmkit.errors`.
"""

from vmkit import errors, qom
from vmkit._core import __version__

__all__ = ["__version__", "errors", "qom"]
