"""Run every benchmark in this folder in turn (`make bench`); results go in BENCHMARKS.md."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    folder = Path(__file__).parent
    for module in sorted(m.name for m in pkgutil.iter_modules([str(folder)])
                         if m.name.startswith("bench_")):
        print(f"\n=== benchmarks.{module}", flush=True)
        importlib.import_module(f"benchmarks.{module}").main()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
