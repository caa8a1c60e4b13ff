"""The README's Python example runs as written (docs that stay true)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


QMP_SOCKET = "/tmp/vm.qmp"


def run_block(block: str, tmp: Path) -> str:
    """Runs one example in a fresh interpreter (the examples create /machine
    and register types); one that talks to ``QMP_SOCKET`` gets a ``vmkit run``
    of its own, as the README's shell line starts."""
    if QMP_SOCKET not in block:
        return subprocess.run(
            [sys.executable, "-c", block], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    sock = str(tmp / "vm.qmp")
    vm = subprocess.Popen(
        [sys.executable, "-m", "vmkit.cli", "run", "-S", "--qmp", f"unix:{sock}", "-m", "64M"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert vm.stdout is not None and vm.stdout.readline().startswith("QMP: ")
        out = subprocess.run(
            [sys.executable, "-c", block.replace(QMP_SOCKET, sock)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert vm.wait(timeout=20) == 0, "the example's quit ends vmkit run"
        return out
    finally:
        if vm.poll() is None:
            vm.kill()
        vm.communicate()


def test_readme_python_examples_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 5, "README lost its Python examples"
    outs = [run_block(block, tmp_path) for block in blocks]
    joined = "\n".join(outs)
    assert "'status': 'prelaunch'" in joined and "'status': 'measured'" in joined
    assert "realized at /machine/peripheral/uart0" in joined
    assert "pages dirty" in joined and "Root memory region: system" in joined
    assert "[('readme-timer', 1), ('PCIHost', None), ('0000:00:00.0/mch', None)]" in joined
    assert "typed: prelaunch\nevent: RESUME\ndowntime-limit: 500" in joined


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text.split("\n## ")[0] and "make test" in text.split("\n## ")[0]
