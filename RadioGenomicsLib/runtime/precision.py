"""The check before a reduced precision is used: predictions at that precision against
float32 on reference studies, on this machine.

Passed when, for every reference study, the ensemble's gene values correlate at
r >= 0.999 with float32's and the top-50 genes of the ranked table (by cohort z) are the
same set. The values compared are the heads' without the geometry shift (the same at
every precision, and not kept with the reference slices). The references are the bundle's stored slices (`reference_slices.npz`, see
`store_reference_slices`) or, without them, the first study predicted. The verdict is kept
per bundle, fold set, runtime, precision and CPU in the user's cache folder, so the check
runs once.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.progress import progress

MIN_R = 0.999
TOP_GENES = 50
REFERENCE_FILE = "reference_slices.npz"


def cohort_z(values: np.ndarray, genes) -> np.ndarray:
    mean, std = genes["train_mean"].to_numpy(), genes["train_std"].to_numpy()
    return np.divide(values - mean, std, out=np.zeros_like(values, dtype=float), where=std > 0)


def precision_problem(full: np.ndarray, reduced: np.ndarray, genes) -> str | None:
    """(studies, genes) float32 and reduced-precision values -> the first failure, or None."""
    for study, (a, b) in enumerate(zip(np.atleast_2d(full), np.atleast_2d(reduced))):
        r = float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 and np.std(b) > 0 else float(np.array_equal(a, b))
        if not r >= MIN_R:  # also NaN
            return f"reference study {study + 1}: gene values at r = {r:.6f} with float32 (need >= {MIN_R})"
        top = min(TOP_GENES, len(a))
        top_a = set(np.argsort(-cohort_z(a, genes), kind="stable")[:top])
        top_b = set(np.argsort(-cohort_z(b, genes), kind="stable")[:top])
        if top_a != top_b:
            return (f"reference study {study + 1}: {len(top_a - top_b)} of the top-{top} genes "
                    f"differ from float32's")
    return None


def store_reference_slices(bundle_path: str | os.PathLike, studies: Sequence[np.ndarray]) -> Path:
    """Keep model-ready slices (S, C, H, W) of reference studies in the bundle (checksummed)."""
    from RadioGenomicsLib.bundle import register_files
    from RadioGenomicsLib.errors import InputError
    from RadioGenomicsLib.integrity import SIGNATURE_FILE

    if (Path(bundle_path) / SIGNATURE_FILE).exists():  # before writing: an unlisted file breaks it
        raise InputError(bundle_path, "is signed: reference studies can be added only before "
                                      "signing (add them to an unsigned copy, then sign it)")
    path = Path(bundle_path) / REFERENCE_FILE
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as file:
            np.savez_compressed(file, **{f"study_{i}": np.asarray(s, dtype=np.float32)
                                         for i, s in enumerate(studies)})
    register_files(bundle_path, [REFERENCE_FILE])
    return path


def manifest_reference_slices(bundle_path: str | os.PathLike, manifest: str | os.PathLike
                              ) -> list[tuple[str, np.ndarray]]:
    """(patient, model-ready slices) of every study of a cohort manifest, preprocessed as
    the bundle says; a study that cannot be read or does not fit the model is refused."""
    from RadioGenomicsLib.bundle import load_bundle
    from RadioGenomicsLib.cohort import validate_cohort
    from RadioGenomicsLib.cohort_workers import cohort_studies
    from RadioGenomicsLib.predict import check_bundle_fits
    from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess

    bundle = load_bundle(bundle_path, verify_checksums=False)  # its channels and settings
    settings = PreprocessSettings.from_dict(bundle.metadata.preprocessing)
    studies = []
    for patient, inputs in progress(cohort_studies(validate_cohort(manifest)), "reference studies"):
        slices = preprocess(inputs.load(bundle.channels), settings)
        check_bundle_fits(bundle, slices)
        studies.append((patient, slices.images))
    return studies


def reference_studies(bundle, study_images: np.ndarray | None) -> tuple[list[np.ndarray], str]:
    if REFERENCE_FILE in bundle.files:
        file = bundle.checked_file(REFERENCE_FILE)
        with np.load(file) as stored:
            return [stored[name] for name in sorted(stored.files)], f"{REFERENCE_FILE} {bundle.files[REFERENCE_FILE][:12]}"
    if study_images is None:
        raise ValueError("no reference slices in the bundle and no study given")
    return [study_images], "the first study predicted"


def ensemble_values(bundle, runtime: str, precision: str, folds: str,
                    studies: list[np.ndarray]) -> np.ndarray:
    """(studies, genes): the mean over fold models, as the gene table shows it."""
    from RadioGenomicsLib.runtime import fold_runners

    if runtime == "torch":  # on the CPU: the CUDA path's autocast is not checked here
        from RadioGenomicsLib.run import torch_runners

        runners = torch_runners(bundle, "cpu", folds, precision)
    else:
        runners = fold_runners(bundle, runtime, precision, folds)
    totals = np.zeros((len(studies), len(bundle.genes)))
    count = len(bundle.fold_indices(folds))
    for runner in progress(runners,
                           f"precision check: {precision} fold models", total=count):
        for i, images in enumerate(studies):
            totals[i] += runner.gene_values(runner.encode(images), images)
    return totals / count


def _verdict_path(bundle, runtime: str, precision: str, folds: str, source: str) -> Path:
    from RadioGenomicsLib import __version__
    from RadioGenomicsLib.runtime import bundle_key, cache_folder, machine_key

    text = json.dumps([bundle_key(bundle), list(bundle.fold_indices(folds)), runtime, precision,
                       source, MIN_R, TOP_GENES, __version__])
    key = hashlib.sha256(text.encode()).hexdigest()[:24]
    return cache_folder() / "precision" / machine_key() / f"{key}.json"


def precision_verdict(bundle, runtime: str, precision: str, folds: str = "all",
                      study_images: np.ndarray | None = None) -> str | None:
    """None when `precision` passed the check here (run now, or kept from before); else why not."""
    studies, source = reference_studies(bundle, study_images)
    path = _verdict_path(bundle, runtime, precision, folds,
                         source if REFERENCE_FILE in bundle.files else "first study")
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))["problem"]
        except (ValueError, KeyError):
            pass  # a damaged verdict is recomputed
    full, reduced = (ensemble_values(bundle, runtime, p, folds, studies) for p in ("float32", precision))
    problem = precision_problem(full, reduced, bundle.genes)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({
            "problem": problem, "runtime": runtime, "precision": precision, "reference": source,
            "bundle": str(bundle.path), "checked": datetime.datetime.now(
                datetime.timezone.utc).isoformat(timespec="seconds")}, indent=2), encoding="utf-8")
    return problem
