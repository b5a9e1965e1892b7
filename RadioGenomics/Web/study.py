"""What a study folder holds, as the page offers it: image files, DICOM series folders,
which file is which channel, and which is the tumour segmentation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from RadioGenomicsLib.cohort import SEGMENTATION_SUFFIXES, channel_from_name
from RadioGenomicsLib.errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
SEGMENTATION_WORDS = ("seg", "label", "mask", "tumor", "tumour")


@dataclass
class StudyFolder:
    """The candidate inputs of one study: files, DICOM folders and a guess for each role."""

    folder: Path
    sources: list[Path] = field(default_factory=list)  # files and DICOM series folders

    @classmethod
    def scan(cls, path: Path) -> "StudyFolder":
        if path.is_file():
            return cls(path.parent, [path])
        if not path.is_dir():
            raise InputError(path, "is neither a study folder nor an image file")
        sources = sorted(p for p in path.iterdir() if _is_image(p) or _is_dicom_folder(p))
        # a DICOM zip often holds its series one folder down
        sources += sorted(q for p in path.iterdir() if p.is_dir() and not _is_dicom_folder(p)
                          for q in p.iterdir() if _is_dicom_folder(q))
        if not sources:
            raise InputError(path, "holds no image (NIfTI, NRRD, MHA) nor DICOM series folder")
        return cls(path, sources)

    def is_segmentation(self, path: Path) -> bool:
        name = path.name.lower()
        return name.endswith(".seg.nrrd") or any(word in name for word in SEGMENTATION_WORDS)

    def images(self) -> list[Path]:
        return [p for p in self.sources if not self.is_segmentation(p)]

    def segmentations(self) -> list[Path]:
        return [p for p in self.sources if self.is_segmentation(p)]

    def assign(self, channels: list[str]) -> dict[str, str]:
        """channel -> path for the channels whose file the names make obvious ("" otherwise)."""
        found: dict[str, list[Path]] = {c: [] for c in channels}
        for path in self.images():
            channel = channel_from_name(path.name, channels)
            if channel:
                found[channel].append(path)
        if len(channels) == 1 and len(self.images()) == 1:
            found[channels[0]] = self.images()  # one image, one channel: nothing to guess
        return {c: str(paths[0]) if len(paths) == 1 else "" for c, paths in found.items()}


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and name.endswith(
        IMAGE_SUFFIXES + SEGMENTATION_SUFFIXES)


def _is_dicom_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    files = [p for p in path.iterdir() if p.is_file()][:5]
    return any(_has_dicom_preamble(p) for p in files)


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(132)[128:132] == b"DICM"
    except OSError:
        return False
