"""The README's Python example runs as written (docs that stay true)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no Python example"
    # A fresh interpreter: the example creates /machine and registers a type.
    out = subprocess.run(
        [sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=60, check=True
    )
    assert "realized at /machine/peripheral/uart0" in out.stdout


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text.split("\n## ")[0] and "make test" in text.split("\n## ")[0]
