"""Progress for long work: a tqdm bar for people, or plain lines for a parent process.

With RADIOGENOMICS_PROGRESS=lines (set by the Slicer module, which runs the CLI in a
background process) each step prints `PROGRESS <done>/<total> <description>` on stderr
instead of drawing a bar, so the parent can parse it line by line.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _line_mode() -> bool:
    return os.environ.get("RADIOGENOMICS_PROGRESS", "").lower() == "lines"


def progress(items: Iterable[T], description: str, total: int | None = None,
             disable: bool = False) -> Iterator[T]:
    """Iterate over `items`, showing progress on stderr."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if disable:
        yield from items
    elif _line_mode():
        for done, item in enumerate(items):
            print(f"PROGRESS {done}/{total or '?'} {description}", file=sys.stderr, flush=True)
            yield item
        print(f"PROGRESS {total or '?'}/{total or '?'} {description}", file=sys.stderr, flush=True)
    else:
        yield from tqdm(items, desc=description, total=total, file=sys.stderr,
                        dynamic_ncols=True, leave=False)


class ProgressBar:
    """A bar for loops that report numbers as they go (loss, validation r)."""

    def __init__(self, total: int, description: str, initial: int = 0):
        self.total, self.description, self.done = total, description, initial
        self._bar = None if _line_mode() else tqdm(
            total=total, initial=initial, desc=description, file=sys.stderr,
            dynamic_ncols=True, leave=True)

    def update(self, steps: int = 1, **numbers: float) -> None:
        self.done += steps
        text = ", ".join(f"{k} {v:.4g}" for k, v in numbers.items())
        if self._bar is None:
            print(f"PROGRESS {self.done}/{self.total} {self.description}" +
                  (f" ({text})" if text else ""), file=sys.stderr, flush=True)
        else:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
