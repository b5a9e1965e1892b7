"""A bundle's integrity and provenance: a checksum manifest of every file, optional signing.

    BUNDLE/manifest.json    {"algorithm": "sha256", "files": {"metadata.json": HEX, ...}}:
                            every file of the bundle (metadata, genes.tsv, weights, report/)
    BUNDLE/signature.json   an ed25519 signature of manifest.json's bytes, the signer's
                            public key and name (`radiogenomics sign BUNDLE --key KEY`)

Any edit of any listed file (channels changed in metadata.json, gene names swapped in
genes.tsv) is refused on load. A signature is checked against the trusted public keys
(files NAME.pub, PEM or OpenSSH, in RADIOGENOMICS_TRUSTED_KEYS, default
~/.config/radiogenomics/trusted_keys): "signed by NAME"; a signature that does not verify
is always refused; with RADIOGENOMICS_REQUIRE_SIGNATURE=1 an unsigned bundle, or one
signed by a key not trusted, is refused too. Bundles written before manifests (format 1
without manifest.json) stay readable: only their weights are checksummed, as then.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.errors import InputError, read_json_object
from RadioGenomicsLib.hashing import sha256_of

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "signature.json"
TRUSTED_KEYS_ENV = "RADIOGENOMICS_TRUSTED_KEYS"
REQUIRE_SIGNATURE_ENV = "RADIOGENOMICS_REQUIRE_SIGNATURE"
DEFAULT_TRUSTED_KEYS = Path("~/.config/radiogenomics/trusted_keys")
_NOT_LISTED = {MANIFEST_FILE, SIGNATURE_FILE}


def bundle_files(folder: Path) -> list[str]:
    """The files a manifest lists: all but itself, the signature and hidden files
    (the completion marker, partial files), as POSIX paths relative to `folder`."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and relative.as_posix() not in _NOT_LISTED \
                and not any(part.startswith(".") for part in relative.parts):
            found.append(relative.as_posix())
    return found


def write_manifest(folder: str | os.PathLike, known: dict[str, str] | None = None) -> Path:
    """Checksum every file of the bundle into manifest.json (call it after the last file);
    `known`: sha256 already computed (the weights), not hashed again."""
    folder = Path(folder)
    known = known or {}
    files = {name: known.get(name) or sha256_of(folder / name) for name in bundle_files(folder)}
    with atomic_path(folder / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n",
                       encoding="utf-8")
    return folder / MANIFEST_FILE


@dataclass
class Integrity:
    """What was checked of a bundle, and who signed it."""

    manifest: bool  # False: an older bundle without manifest.json
    files: list[str] = field(default_factory=list)  # listed and checked
    signer: str | None = None  # the trusted key's name
    signed_by_unknown: str | None = None  # fingerprint of a valid but untrusted key

    @property
    def provenance(self) -> str:
        if self.signer:
            return f"signed by {self.signer}"
        if self.signed_by_unknown:
            return f"signed by a key not in the trusted keys ({self.signed_by_unknown})"
        return "unsigned"

    @property
    def note(self) -> str:
        if not self.manifest:
            return ("written before checksum manifests: only the weights are checksummed "
                    "(metadata.json and genes.tsv are not)")
        return f"{len(self.files)} files checked against {MANIFEST_FILE}"

    def to_dict(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "files_checked": len(self.files),
                "signer": self.signer, "provenance": self.provenance}


def read_manifest(folder: Path) -> dict[str, str] | None:
    path = folder / MANIFEST_FILE
    if not path.exists():
        return None
    document = read_json_object(path)
    files = document.get("files")
    if document.get("algorithm") != "sha256" or not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items()):
        raise InputError(path, "damaged: expected {\"algorithm\": \"sha256\", \"files\": "
                               "{name: sha256, ...}}")
    for name in files:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(path, f"lists {name!r}, outside the bundle")
    return files


def verify_bundle(folder: str | os.PathLike, required: list[str],
                  weights: dict[str, str], check_signature_too: bool = True) -> Integrity:
    """Check every file the manifest lists (the weights by their sha256 in metadata.json,
    which the manifest must agree with: hashed when they are read) and the signature.

    required: the files the bundle reads (all must be listed); weights: name -> sha256
    from metadata.json."""
    folder = Path(folder)
    files = read_manifest(folder)
    if files is None:
        integrity = Integrity(manifest=False)
    else:
        check_listed_files(folder, files, required, weights)
        integrity = Integrity(manifest=True, files=sorted(files))
    if check_signature_too:
        check_signature(folder, integrity)
    return integrity


def check_listed_files(folder: Path, files: dict[str, str], required: list[str],
                       weights: dict[str, str]) -> None:
    """Every listed file present with its sha256 (`weights`: known sha256, not hashed)."""
    missing = [name for name in required if name not in files]
    if missing:
        raise InputError(folder / missing[0], f"not listed in {MANIFEST_FILE}: added or "
                                              "replaced after the bundle was written")
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise InputError(path, f"missing (listed in {MANIFEST_FILE})")
        if (weights.get(name) or sha256_of(path)) != expected:
            raise InputError(path, "checksum mismatch: the file was changed or damaged "
                                   "after the bundle was written")


# ---------------------------------------------------------------- signing

def trusted_keys_folder() -> Path:
    return Path(os.environ.get(TRUSTED_KEYS_ENV) or DEFAULT_TRUSTED_KEYS).expanduser()


def signatures_required() -> bool:
    return os.environ.get(REQUIRE_SIGNATURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _raw_public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_fingerprint(raw_public: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw_public).digest()).decode().rstrip("=")


def load_public_key(path: Path):
    """An ed25519 public key from a PEM or OpenSSH (`ssh-ed25519 ...`) file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = path.read_bytes()
    try:
        key = (serialization.load_ssh_public_key(data) if data.lstrip().startswith(b"ssh-")
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as error:
        raise InputError(path, f"not a public key ({str(error)[:100]})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(path, "not an ed25519 public key")
    return key


def trusted_keys() -> dict[bytes, str]:
    """Raw public key -> name (file stem) of every key in the trusted-keys folder."""
    folder = trusted_keys_folder()
    if not folder.is_dir():
        return {}
    return {_raw_public(load_public_key(path)): path.stem
            for path in sorted(folder.glob("*.pub"))}


def check_signature(folder: Path, integrity: Integrity) -> None:
    """Fill in the signer; refuse a signature that does not verify, and (when required) an
    unsigned bundle or an untrusted signer."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = folder / SIGNATURE_FILE
    if not path.exists():
        if signatures_required():
            raise InputError(folder, f"unsigned, and this site requires signed bundles "
                                     f"({REQUIRE_SIGNATURE_ENV})")
        return
    if not integrity.manifest:
        raise InputError(path, f"a signature without {MANIFEST_FILE}: the signed list of files "
                               "is missing")
    document = read_json_object(path)
    try:
        raw = base64.b64decode(document["public_key"], validate=True)
        signature = base64.b64decode(document["signature"], validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except (KeyError, TypeError, ValueError):
        raise InputError(path, "damaged: expected base64 public_key and signature") from None
    try:
        key.verify(signature, (folder / MANIFEST_FILE).read_bytes())
    except InvalidSignature:
        raise InputError(path, "bad signature: the bundle was changed after it was signed, "
                               "or the signature is forged; refused") from None
    name = trusted_keys().get(raw)
    if name is None:
        fingerprint = key_fingerprint(raw)
        if signatures_required():
            raise InputError(path, f"signed by a key not in the trusted keys "
                                   f"({trusted_keys_folder()}): {fingerprint}")
        integrity.signed_by_unknown = fingerprint
    else:
        integrity.signer = name


def load_private_key(path: str | os.PathLike):
    """An ed25519 private key from an unencrypted PEM (PKCS#8) or OpenSSH key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such key file")
    data = path.read_bytes()
    try:
        key = (serialization.load_ssh_private_key(data, None)
               if b"OPENSSH PRIVATE KEY" in data else serialization.load_pem_private_key(data, None))
    except (ValueError, TypeError) as error:
        raise InputError(path, f"not an unencrypted private key ({str(error)[:100]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(path, "not an ed25519 private key")
    return key


def generate_key(path: str | os.PathLike) -> tuple[Path, Path]:
    """A new ed25519 key pair: PATH (private, PEM, owner-only) and PATH.pub (to share)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise InputError(existing, "exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    with atomic_path(path) as tmp:
        tmp.touch(mode=0o600)
        tmp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    with atomic_path(public_path) as tmp:
        tmp.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, public_path


def check_weight_shapes(bundle) -> None:
    """Every fold's tensors (names and shapes, from the safetensors headers: no weight is
    read) are those of the model metadata.json describes (built on the meta device: no
    memory)."""
    import torch
    from safetensors import safe_open

    from RadioGenomicsLib.bundle import fold_file

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in bundle.build_model().state_dict().items()}
    for fold in range(bundle.folds):
        path = bundle.path / fold_file(fold)
        try:
            with safe_open(str(path), framework="pt") as weights:
                shapes = {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()}
        except Exception as error:  # safetensors raises its own types for damaged headers
            raise InputError(path, f"unreadable safetensors header ({str(error)[:100]})") from None
        problem = _shape_problem(expected, shapes)
        if problem:
            raise InputError(path, f"weights do not fit the model described in metadata.json: "
                                   f"{problem}")


def _shape_problem(expected: dict[str, tuple], shapes: dict[str, tuple]) -> str | None:
    missing = sorted(set(expected) - set(shapes))
    if missing:
        return f"{len(missing)} tensor(s) missing, first {missing[0]}"
    extra = sorted(set(shapes) - set(expected))
    if extra:
        return f"{len(extra)} unexpected tensor(s), first {extra[0]}"
    wrong = [k for k in expected if expected[k] != shapes[k]]
    if wrong:
        return (f"{wrong[0]} is {list(shapes[wrong[0]])}, the model needs "
                f"{list(expected[wrong[0]])} ({len(wrong)} tensor(s) differ)")
    return None


def sign_bundle(folder: str | os.PathLike, key_path: str | os.PathLike,
                name: str | None = None) -> dict[str, str]:
    """Sign the bundle's manifest.json with an ed25519 private key (the bundle is checked
    first); returns what signature.json records."""
    from RadioGenomicsLib.bundle import GENES_FILE, METADATA_FILE, load_bundle

    folder = Path(folder)
    key = load_private_key(key_path)
    bundle = load_bundle(folder, verify_checksums=False, check_signature=False)
    files = read_manifest(folder)
    if files is None:
        raise InputError(folder, f"has no {MANIFEST_FILE} (written by an older RadioGenomics); "
                                 "write one with RadioGenomicsLib.integrity.write_manifest after "
                                 "checking the bundle yourself")
    # every byte hashed, the weights too, before vouching for the files
    check_listed_files(folder, files, [METADATA_FILE, GENES_FILE, *bundle.checksums], {})
    raw = _raw_public(key.public_key())
    document = {"algorithm": "ed25519", "signer": name or Path(key_path).stem,
                "public_key": base64.b64encode(raw).decode(),
                "key_fingerprint": key_fingerprint(raw),
                "signature": base64.b64encode(key.sign((folder / MANIFEST_FILE).read_bytes())).decode()}
    with atomic_path(folder / SIGNATURE_FILE) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return document
