"""Python-level object-model benchmarks: property get/set and object create+drop.

Run: ``.venv/bin/python benches/py/bench_qom.py`` (after ``make build``).
Prints the median of several timed rounds for each operation, in operations
per second, and ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from vmkit import qom
from vmkit.qom import Property

ROUNDS = 7


def _median_rate(body: Callable[[int], None], n: int) -> float:
    rates = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        body(n)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-n", type=int, default=200_000)
    args = parser.parse_args()

    qom.register_type(
        "bench-leaf",
        "device",
        class_properties=[
            Property("irq", "uint8", default=5),
            Property("name", "str", default="x"),
            Property("on", "bool"),
            Property("mem", "size", default="4K"),
        ],
    )
    obj = qom.new("bench-leaf")
    get = obj.get
    set_ = obj.set

    def prop_get(n: int) -> None:
        for _ in range(n):
            get("irq")

    def prop_set(n: int) -> None:
        for _ in range(n):
            set_("irq", 7)

    def create_drop(n: int) -> None:
        new = qom._core.new
        for _ in range(n):
            new("bench-leaf")

    def create_realize_drop(n: int) -> None:
        new = qom._core.new
        for _ in range(n):
            o = new("bench-leaf")
            o.realize()
            o.unrealize()

    results = {
        "property_get_per_s": _median_rate(prop_get, args.n),
        "property_set_per_s": _median_rate(prop_set, args.n),
        "object_create_drop_per_s": _median_rate(create_drop, args.n // 4),
        "object_create_realize_unrealize_drop_per_s": _median_rate(
            create_realize_drop, args.n // 4
        ),
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, rate in results.items():
            print(f"{name:<45} {rate:>14,.0f}")


if __name__ == "__main__":
    main()
