"""Content hashes of files and folders (caches, bundles, prediction runs)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def hash_path(digest: "hashlib._Hash", path: Path) -> None:
    """Add a file's bytes (a folder: every file in it, by name) to `digest`."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)


def sha256_of(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_input(path: Path) -> str:
    """sha256 of an input: a file's bytes, or a folder's files (names and bytes)."""
    if Path(path).is_file():
        return sha256_of(Path(path))
    digest = hashlib.sha256()
    hash_path(digest, Path(path))
    return digest.hexdigest()
