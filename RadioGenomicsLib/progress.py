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
