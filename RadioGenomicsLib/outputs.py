"""Checking every output path before any work, so that no run destroys what it did not make.

Each subcommand calls `check_outputs` first. An output is refused (InputError, exit 2)
when it is one of the inputs or holds one, when two outputs collide, when it is a folder
where a file is expected (or the reverse), when its folder cannot be written, and when it
is an existing folder that is not empty and not a complete earlier output of the same
command. A complete output folder holds `COMPLETE_MARKER`, written last
(`mark_complete`).

Leftovers of killed runs (`atomic.partial_owner` recognises them) in the folders written
to are removed, once the process that wrote them is gone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

from RadioGenomicsLib import __version__
from RadioGenomicsLib.atomic import _remove, atomic_path, partial_owner
from RadioGenomicsLib.errors import InputError

COMPLETE_MARKER = ".radiogenomics-complete"


@dataclass(frozen=True)
class Output:
    """One path a command writes: a file or a folder, and the option that named it."""

    path: str | os.PathLike
    kind: Literal["file", "folder"]
    option: str = "--out"


def mark_complete(folder: str | os.PathLike, command: str) -> None:
    """Write the marker that says `folder` is a complete output of `command` (call it last)."""
    # no time stamp: the same run gives the same bytes (synth promises it)
    document = {"command": command, "library_version": __version__}
    with atomic_path(Path(folder) / COMPLETE_MARKER) as tmp:
        tmp.write_text(json.dumps(document) + "\n", encoding="utf-8")


def completed_by(folder: str | os.PathLike) -> str | None:
    """The command whose complete output `folder` is, or None."""
    try:
        document = json.loads((Path(folder) / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document.get("command") if isinstance(document, dict) else None


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_parent(path: Path, option: str) -> None:
    """The nearest existing ancestor must be a folder this process can write into."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(path, f"{option}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(path, f"{option}: the folder {ancestor} is not writable")


def _check_one(command: str, output: Output, path: Path) -> None:
    _check_parent(path, output.option)
    if output.kind == "file":
        if path.is_dir():
            raise InputError(path, f"{output.option}: is a folder; a file is expected here")
        return
    if path.exists() and not path.is_dir():
        raise InputError(path, f"{output.option}: is a file; a folder is expected here")
    owner = completed_by(path) if path.is_dir() and any(path.iterdir()) else command
    if owner != command:
        what = f"an output of `{owner}`" if owner else "no complete earlier output of this command"
        raise InputError(path, f"{output.option}: the folder is not empty and holds {what}; "
                               "refusing to replace it: give a new or empty folder")


def clean_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove the partial files and folders of killed runs in `folder`; returns them."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid = partial_owner(entry)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            _remove(entry)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's live process, or a pid we cannot ask about: keep
    return True


def check_outputs(command: str, outputs: Sequence[Output],
                  inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Clean the leftovers of killed runs where the outputs go (a folder holding only
    those is empty), then refuse, before any work, every output that would destroy data
    or fail at the end."""
    given = [(output, _resolved(output.path)) for output in outputs if output.path is not None]
    sources = [(_resolved(p), os.fspath(p)) for p in inputs if p is not None]
    for output, path in given:
        clean_partials(path.parent)
        if output.kind == "folder" and path.is_dir():
            clean_partials(path)
    for index, (output, path) in enumerate(given):
        for source, name in sources:
            if source == path:
                raise InputError(path, f"{output.option}: is also an input; writing it would "
                                       "destroy the input")
            if output.kind == "folder" and _inside(source, path):
                raise InputError(path, f"{output.option}: holds the input {name}; replacing "
                                       "the folder would destroy it")
        for other, other_path in given[:index]:
            if path == other_path:
                raise InputError(path, f"{output.option} and {other.option} name the same "
                                       "place (one would overwrite the other)")
        _check_one(command, output, path)
