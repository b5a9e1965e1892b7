"""Preprocess each patient once: tumour slices cached by input content and settings.

The key is the sha256 of the preprocessing settings, the channel names and the bytes
of every input file (a DICOM folder: all its files), so a changed image or setting is
preprocessed again and nothing else is. Slices are stored as float16 `.npy` files that
training reads memory-mapped, a few patients at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.hashing import hash_path
from RadioGenomicsLib.imaging import load_study
from RadioGenomicsLib.preprocess import GEOMETRY_FEATURES, PreprocessSettings, preprocess
from RadioGenomicsLib.progress import progress


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    return Path(root) / "radiogenomics" / "slices"


def content_key(settings: dict, inputs: list[tuple[str, str | os.PathLike]], tail: str = "") -> str:
    """A cache key: sha256 of the settings (as sorted JSON), each named input's bytes and
    `tail`, cut to 32 hex digits."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name, path in inputs:
        digest.update(name.encode())
        hash_path(digest, Path(path))
    digest.update(tail.encode())
    return digest.hexdigest()[:32]


def patient_key(row: pd.Series, channels: list[str], settings: PreprocessSettings) -> str:
    label = row.get("label")
    # region_geometry adds geometry values, not image pixels: one key either way, so that
    # turning it on preprocesses again for the volumes but keeps the encoded tokens
    images = {k: v for k, v in settings.to_dict().items() if k != "region_geometry"}
    return content_key(images, [(c, row[c]) for c in [*channels, "segmentation"]],
                       str(None if label is None or pd.isna(label) else int(label)))


@dataclass
class SliceCache:
    folder: Path
    # len(geometry_names(settings)) of the readers: a stored geometry starts with the same
    # values whatever its length, and one shorter than this is preprocessed again
    geometry_count: int = len(GEOMETRY_FEATURES)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def geometry_path(self, key: str) -> Path:
        return self.folder / f"{key}.geometry.npy"

    def load(self, key: str) -> np.ndarray:
        """(S, C, H, W) float16, memory-mapped."""
        return np.load(self.path(key), mmap_mode="r")

    def geometry(self, key: str) -> np.ndarray:
        """The tumour's values of preprocess.geometry_names(settings) (float32)."""
        return np.load(self.geometry_path(key))[:self.geometry_count]

    def holds(self, key: str) -> bool:
        return (self.path(key).exists() and self.geometry_path(key).exists()
                and len(np.load(self.geometry_path(key), mmap_mode="r")) >= self.geometry_count)

    def store(self, key: str, images: np.ndarray, geometry: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for path, array in ((self.geometry_path(key), geometry.astype(np.float32)),
                            (self.path(key), images.astype(np.float16))):  # images last
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, array)


def preprocess_cohort(cohort: pd.DataFrame, channels: list[str], settings: PreprocessSettings,
                      cache: SliceCache) -> dict[str, str]:
    """patient -> cache key, preprocessing every patient not yet cached.

    Every patient is tried before anything fails, and all problems are reported at once
    (an empty segmentation must stop a run at its start, not in its fifth fold).
    """
    keys, problems = {}, []
    for patient, row in progress(list(cohort.iterrows()), "preprocessing (cached)"):
        key = patient_key(row, channels, settings)
        if not cache.holds(key):
            label = row.get("label")
            try:
                study = load_study({c: row[c] for c in channels}, row["segmentation"],
                                   label=None if label is None or pd.isna(label) else int(label),
                                   channels=tuple(channels),
                                   keep_labels=bool(settings.region_labels))
                slices = preprocess(study, settings)
                cache.store(key, slices.images, slices.geometry())
            except InputError as error:
                problems.append(f"{patient}: {error}")
                continue
        keys[str(patient)] = key
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        error = InputError(None, f"cannot preprocess {problems[0]}{more}")
        error.problems = problems
        raise error
    return keys
