"""Write outputs under a temporary name and rename them when complete.

A crash, a Ctrl-C or a bad input half-way never leaves a half-written file or
folder under the name the user asked for.
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


# `.NAME.partial-PID.SUFFIXES`: what `_partial_name` makes, recognised by `partial_owner`
_PARTIAL = re.compile(r"^\.[^.]*\.partial-(\d{1,10})(\..*)?$", re.S)


def partial_owner(path: str | os.PathLike) -> int | None:
    """The process id that was writing `path` when it is a partial output, else None."""
    match = _PARTIAL.match(Path(path).name)
    return int(match.group(1)) if match else None


def _partial_name(path: Path) -> Path:
    # keep the suffixes (".nii.gz", ".csv"): writers pick the format from them
    stem, dot, suffixes = path.name.partition(".")
    return path.with_name(f".{stem}.partial-{os.getpid()}{dot}{suffixes}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to `path`.

    Works for files and for folders (a folder that exists is replaced whole).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(final)
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{final}: nothing was written")
        if final.is_dir() and tmp.is_dir():
            _remove(final)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
