"""Who may connect, and which files the page may read or write.

- A server listening on anything but a loopback address requires an access token: the
  browser's websocket is refused without it (wslink's authentication), as Jupyter does.
- A path typed in the page must lie inside the folders the server was started with.
- Uploads are size-limited and written only under the session's own folder; a zip's
  members must stay inside the folder they are extracted to.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import zipfile
from pathlib import Path
from typing import Iterable

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.errors import InputError

UPLOAD_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".seg.nrrd", ".mha", ".zip", ".dcm")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


def access_token(host: str, token: str | None) -> str | None:
    """The token a client must present: None on loopback unless one was given; generated
    for any other address; refused when explicitly empty there."""
    if is_loopback(host):
        return token or None
    if token is None:
        return secrets.token_urlsafe(24)
    if len(token) < 16:
        raise InputError(None, f"--host {host} is reachable from other machines: the viewer "
                               "needs an access token of 16 characters or more (omit --token "
                               "to have one generated)")
    return token


def confine(text: str | os.PathLike, roots: Iterable[Path]) -> Path:
    """`text` as a resolved path, if it lies inside one of `roots` (symbolic links followed)."""
    path = Path(text).expanduser().resolve()
    roots = [Path(root).resolve() for root in roots]
    if any(path == root or root in path.parents for root in roots):
        return path
    raise InputError(text, "is outside the folders this viewer was started with")


def _upload_name(name: str) -> str:
    base = Path(str(name).replace("\\", "/")).name
    if base in ("", ".", "..") or base.startswith("."):
        raise InputError(name, "is not a file name the viewer accepts")
    if not base.lower().endswith(UPLOAD_SUFFIXES):
        raise InputError(base, f"is not one of {', '.join(UPLOAD_SUFFIXES)}")
    return base


def save_upload(name: str, content: bytes, folder: Path, limit_bytes: int) -> Path:
    """Write one uploaded file under `folder` (a zip is extracted into a folder of its name)."""
    base = _upload_name(name)
    if len(content) > limit_bytes:
        raise InputError(base, f"is {len(content) / 2**20:.0f} MB, over the upload limit of "
                               f"{limit_bytes / 2**20:.0f} MB")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / base
    with atomic_path(path) as partial:
        partial.write_bytes(content)
    if base.lower().endswith(".zip"):
        return extract_zip(path, folder / base[:-4], limit_bytes)
    return path


def extract_zip(path: Path, target: Path, limit_bytes: int) -> Path:
    """Extract a zip (a DICOM series, say) whose members all stay inside `target`."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > limit_bytes:
                raise InputError(path.name, "unpacks to more than the upload limit")
            root = target.resolve()
            for member in members:
                destination = (root / member.filename).resolve()
                if root not in destination.parents or (member.external_attr >> 28) == 0xA:
                    raise InputError(path.name, f"member {member.filename!r} would land "
                                                "outside its folder")
            archive.extractall(root)
    except zipfile.BadZipFile:
        raise InputError(path.name, "is not a readable zip file") from None
    finally:
        path.unlink(missing_ok=True)
    return target
