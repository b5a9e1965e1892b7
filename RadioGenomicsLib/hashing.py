"""Content hashes of files and folders (caches, bundles, prediction runs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from RadioGenomicsLib.atomic import atomic_path


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


def file_identity(path: Path) -> list[int]:
    """What changes whenever a file's bytes may have: device, inode, size, and modification
    and status-change times in ns (a write, a rename over it or `touch -m` all move the
    change time, which no user can set back)."""
    stat = path.stat()
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def remembered_sha256(path: Path, stamps: Path) -> str:
    """sha256 of a file, hashed once per version of it: the digest is kept in the folder
    `stamps` against the file's identity (`file_identity`, taken before hashing, so a
    file changed while it is hashed is hashed again next time). A bundle's weights are
    gigabytes: hashing them on every prediction cost seconds. A stamp that cannot be read
    or written only means hashing again."""
    path = Path(path).resolve()
    stamp = stamps / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
    identity = file_identity(path)
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        if recorded.get("identity") == identity and isinstance(recorded.get("sha256"), str):
            return recorded["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_of(path)
    try:
        stamps.mkdir(parents=True, exist_ok=True)
        with atomic_path(stamp) as tmp:
            tmp.write_text(json.dumps({"path": str(path), "identity": identity,
                                       "sha256": digest}), encoding="utf-8")
    except OSError:
        pass
    return digest
