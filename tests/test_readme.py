"""The README's Python example runs as written (docs that stay true)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3, "README lost its Python examples"
    # A fresh interpreter each: the examples create /machine and register types.
    outs = [
        subprocess.run(
            [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        for block in blocks
    ]
    assert "realized at /machine/peripheral/uart0" in outs[0]
    assert "pages dirty" in outs[1] and "Root memory region: system" in outs[1]
    assert "[('readme-timer', 1)]" in outs[2]


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text.split("\n## ")[0] and "make test" in text.split("\n## ")[0]
