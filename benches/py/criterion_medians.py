"""Prints the median of each criterion benchmark from ``target/criterion``.

criterion's console line shows the mean's confidence interval; our targets are
stated as medians, which criterion records in ``estimates.json``. Run after
``cargo bench -p vmkit-benches``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
    files = sorted(root.glob("*/*/new/estimates.json"))
    if not files:
        print(f"no criterion results under {root}", file=sys.stderr)
        return 1
    for f in files:
        est = json.loads(f.read_text())
        group, bench = f.parts[-4], f.parts[-3]
        median = est["median"]["point_estimate"]
        name = f"{group}/{bench}"
        print(f"{name:<40} median {median:10.2f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
