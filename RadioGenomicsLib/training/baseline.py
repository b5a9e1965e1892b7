"""The radiomics baseline: PyRadiomics features of the tumour and ridge regression.

The classic approach a radiogenomics study would otherwise take, run on the deep
model's terms so that the two reports stand side by side: the same checked cohort and
targets (`crossval.check_inputs`), the same folds (`folds.assign_folds`), the same
per-fold median-zero gene filter (the report holds the genes every fold kept) and the
same out-of-fold evaluation (`report.write_report`).

Features: for each channel, PyRadiomics' first-order, GLCM (all but the slow MCC),
GLRLM, GLSZM, GLDM and NGTDM features of the original image inside the tumour,
resampled to 1 mm; shape features once. CT stays in Hounsfield units (bins of 25 HU); MRI, in arbitrary units,
is first z-scored in the same region as the deep model's preprocessing (bins of 0.05
SD). Each patient's features are cached, keyed by the bytes of its input files and
the settings.

Model, per fold: features constant on the training patients are dropped, the rest
standardised on them; a multi-output ridge regression whose penalty is chosen for each
gene among `alphas` by efficient leave-one-out cross-validation on the training
patients (scikit-learn's RidgeCV, generalised cross-validation); the held-out fold is
predicted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.cohort import CohortError
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.imaging import Study, load_study
from RadioGenomicsLib.preprocess import PreprocessSettings, normalisation_region, zscore
from RadioGenomicsLib.progress import progress
from RadioGenomicsLib.training.cache import content_key

if TYPE_CHECKING:
    from RadioGenomicsLib.training.recipe import Recipe

FEATURE_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
# GLCM's maximal correlation coefficient solves an eigenvalue problem per direction: half
# of the whole extraction's time for one feature
LEFT_OUT = {"glcm": ("MCC",)}
SPACING_MM = 1.0
BIN_WIDTH_HU = 25.0  # CT, raw Hounsfield units (PyRadiomics' own default)
BIN_WIDTH_SD = 0.05  # z-scored MRI: a tumour spanning 2-4 SD gets 40-80 grey levels
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))
FEATURES_FILE = "features.tsv"
FOLDS_FILE = "folds.tsv"
DETAILS_FILE = "baseline.json"
REPORT_FOLDER = "report"


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    return Path(root) / "radiogenomics" / "radiomics"


# ---------------------------------------------------------------- features of one study

def extractor_settings(modality: str) -> dict:
    """PyRadiomics settings for a CT (raw HU) or an MRI (z-scored) study."""
    bin_width = BIN_WIDTH_HU if modality == "ct" else BIN_WIDTH_SD
    return {"binWidth": bin_width, "resampledPixelSpacing": [SPACING_MM] * 3,
            "interpolator": "sitkBSpline", "preCrop": True, "label": 1, "additionalInfo": False}


def _extractor(modality: str, shape: bool):
    import radiomics
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    classes = radiomics.getFeatureClasses()
    radiomics.logger.setLevel(logging.ERROR)  # it warns on every study otherwise
    extractor = RadiomicsFeatureExtractor(**extractor_settings(modality))
    extractor.disableAllImageTypes()
    extractor.enableImageTypeByName("Original")
    extractor.disableAllFeatures()
    for feature_class in FEATURE_CLASSES + (("shape",) if shape else ()):
        extractor.enableFeatureClassByName(feature_class)
        if feature_class in LEFT_OUT:
            names = classes[feature_class].getFeatureNames()  # name -> deprecated
            extractor.enableFeaturesByName(**{feature_class: [
                name for name, deprecated in names.items()
                if not deprecated and name not in LEFT_OUT[feature_class]]})
    return extractor


def intensity_images(study: Study, settings: PreprocessSettings) -> dict[str, sitk.Image]:
    """The channels PyRadiomics sees: CT as it is, MRI z-scored as the deep model's input."""
    if study.modality == "ct":
        return dict(study.channels)
    region, _ = normalisation_region(study, study.channels, study.brain_mask, settings)
    return {name: zscore(image, region) for name, image in study.channels.items()}


def extract_features(study: Study, settings: PreprocessSettings) -> dict[str, float]:
    """`shape_<name>` once, `<channel>_<class>_<name>` for every channel."""
    features: dict[str, float] = {}
    intensities = intensity_images(study, settings)
    for index, (channel, image) in enumerate(intensities.items()):
        result = _extractor(study.modality, shape=index == 0).execute(image, study.tumour)
        for key, value in result.items():
            name = key.removeprefix("original_")
            if name.startswith("shape_"):
                features[name] = float(value)
            elif not key.startswith("diagnostics_"):
                features[f"{channel}_{name}"] = float(value)
    return features


def region_features(study: Study, intensities: dict[str, sitk.Image],
                    region_labels: Sequence[int]) -> dict[str, float]:
    """What the model's sub-region channels show, for the baseline: each listed label's
    volume (mL), its share of the tumour, and each channel's mean and SD inside it (0 where
    the label is absent, so that no patient's row is lost)."""
    labels = sitk.GetArrayViewFromImage(study.labels)
    voxel_ml = float(np.prod(study.reference.GetSpacing())) / 1000.0
    tumour_voxels = max(int((labels > 0).sum()), 1)
    features = {}
    for label in region_labels:
        inside = labels == label
        count = int(inside.sum())
        features[f"region{label}_volume_ml"] = count * voxel_ml
        features[f"region{label}_share"] = count / tumour_voxels
        for channel, image in intensities.items():
            values = sitk.GetArrayViewFromImage(image)[inside]
            features[f"region{label}_{channel}_mean"] = float(values.mean()) if count else 0.0
            features[f"region{label}_{channel}_sd"] = float(values.std()) if count else 0.0
    return features


def check_mask(study: Study) -> None:
    """PyRadiomics' own check of the tumour (present, more than one voxel, not a line)."""
    from radiomics import imageoperations

    try:
        imageoperations.checkMask(study.reference, study.tumour,
                                  **extractor_settings(study.modality))
    except ValueError as error:
        raise InputError(study.sources["segmentation"], f"unusable tumour mask ({error})") from None


# ---------------------------------------------------------------- the cohort, cached

@dataclass(frozen=True)
class PatientTask:
    """What one worker needs to read a patient's study."""

    patient: str
    images: dict[str, str]
    segmentation: str
    label: int | None
    settings: PreprocessSettings

    def load(self, keep_labels: bool = False) -> Study:
        return load_study(self.images, self.segmentation, label=self.label,
                          channels=tuple(self.images), keep_labels=keep_labels)


def _tasks(cohort: pd.DataFrame, channels: list[str],
           settings: PreprocessSettings) -> list[PatientTask]:
    tasks = []
    for patient, row in cohort.iterrows():
        label = row.get("label")
        tasks.append(PatientTask(str(patient), {c: row[c] for c in channels}, row["segmentation"],
                                 None if label is None or pd.isna(label) else int(label),
                                 settings))
    return tasks


def feature_key(task: PatientTask) -> str:
    """sha256 of the input files' bytes, the label and every setting that shapes the features."""
    from radiomics import __version__ as pyradiomics_version

    settings = {"pyradiomics": pyradiomics_version, "classes": FEATURE_CLASSES,
                "left_out": LEFT_OUT,
                "ct": extractor_settings("ct"), "mri": extractor_settings("mri"),
                "bin_width_sd": BIN_WIDTH_SD, "region": task.settings.region,
                "skull_strip": task.settings.skull_strip, "label": task.label}
    return content_key(settings, [*task.images.items(), ("segmentation", task.segmentation)])


def region_key(task: PatientTask) -> str:
    """The sub-region features' own key: adding them re-extracts no PyRadiomics feature."""
    settings = {"region_labels": list(task.settings.region_labels), "label": task.label,
                "region": task.settings.region, "skull_strip": task.settings.skull_strip}
    return "regions-" + content_key(settings, [*task.images.items(),
                                               ("segmentation", task.segmentation)])


@dataclass
class FeatureCache:
    folder: Path

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str) -> dict[str, float]:
        return json.loads(self.path(key).read_text())

    def store(self, key: str, features: dict[str, float]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(key)) as tmp:
            # NaN stays NaN: a feature PyRadiomics cannot compute for this patient
            tmp.write_text(json.dumps(features))


def _check_task(task: PatientTask) -> str | None:
    try:
        check_mask(task.load())
    except InputError as error:
        return f"unusable study: {task.patient} {error}"
    return None


def _extract_task(task: PatientTask) -> tuple[dict[str, float] | None, str | None]:
    try:
        return extract_features(task.load(), task.settings), None
    except (InputError, ValueError) as error:  # PyRadiomics raises ValueError on a bad mask
        return None, f"feature extraction failed: {task.patient} {error}"


def _region_task(task: PatientTask) -> tuple[dict[str, float] | None, str | None]:
    try:
        study = task.load(keep_labels=True)  # the PyRadiomics tasks need no labels
        return region_features(study, intensity_images(study, task.settings),
                               task.settings.region_labels), None
    except InputError as error:
        return None, f"{task.patient}: {error}"


def _single_threaded_itk() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # the processes share the cores


def _each(function, tasks: list[PatientTask], description: str, jobs: int) -> Iterator:
    """function(task) for every task, in order, as each finishes (so each can be cached)."""
    if jobs <= 1 or len(tasks) <= 1:
        yield from progress(map(function, tasks), description, total=len(tasks))
        return
    # spawn, not fork: a forked ITK thread pool can hang the children
    with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_single_threaded_itk) as pool:
        yield from progress(pool.map(function, tasks), description, total=len(tasks))


def cohort_features(cohort: pd.DataFrame, channels: list[str], settings: PreprocessSettings,
                    cache: FeatureCache, manifest: str | os.PathLike, jobs: int = 1
                    ) -> pd.DataFrame:
    """patients × features, extracting (and caching) every patient not cached yet.

    Every study still to extract is read and its tumour checked before the first
    extraction, and all problems are reported at once (CohortError naming the manifest).
    """
    tasks = _tasks(cohort, channels, settings)
    rows = _cached(tasks, feature_key, _extract_task, "radiomic features", cache, manifest, jobs,
                   check=True)
    if settings.region_labels:
        regions = _cached(tasks, region_key, _region_task, "sub-region features", cache,
                          manifest, jobs)
        for patient, features in regions.items():
            rows[patient].update(features)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "patient_id"
    return table


def _cached(tasks: list[PatientTask], key_of, extract, description: str, cache: FeatureCache,
            manifest: str | os.PathLike, jobs: int, check: bool = False
            ) -> dict[str, dict[str, float]]:
    """patient -> features: `extract(task)` for the patients not cached yet (stored as each
    finishes; with `check`, every study's tumour checked first), all problems at once."""
    keys = {task.patient: key_of(task) for task in tasks}
    todo = [task for task in tasks if not cache.path(keys[task.patient]).exists()]
    checked = _each(_check_task, todo, "checking studies", jobs) if check else ()
    problems = [problem for problem in checked if problem]
    if problems:
        raise CohortError(manifest, problems)
    for task, (features, problem) in zip(todo, _each(extract, todo, description, jobs)):
        if problem:
            problems.append(problem)
        else:
            cache.store(keys[task.patient], features)
    if problems:
        raise CohortError(manifest, problems)
    return {patient: cache.load(key) for patient, key in keys.items()}


# ---------------------------------------------------------------- ridge on the folds

@dataclass
class FoldFit:
    fold: int
    train_patients: int
    test_patients: int
    features_used: int
    alphas: np.ndarray  # the penalty chosen for each gene

    def to_dict(self, grid: Sequence[float]) -> dict:
        return {"fold": self.fold, "train_patients": self.train_patients,
                "test_patients": self.test_patients, "features_used": self.features_used,
                "alpha_median": float(np.median(self.alphas)),
                "genes_at_smallest_alpha": int((self.alphas == min(grid)).sum()),
                "genes_at_largest_alpha": int((self.alphas == max(grid)).sum())}


def fit_predict(train_x: pd.DataFrame, train_y: pd.DataFrame, test_x: pd.DataFrame,
                alphas: Sequence[float]) -> tuple[pd.DataFrame, int, np.ndarray]:
    """Ridge fitted on the training patients: (test predictions, features used, alpha per gene)."""
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(VarianceThreshold(0.0), StandardScaler(),
                          RidgeCV(alphas=np.asarray(alphas), alpha_per_target=True))
    model.fit(train_x.to_numpy(), train_y.to_numpy())
    predictions = pd.DataFrame(model.predict(test_x.to_numpy()), index=test_x.index,
                               columns=train_y.columns)
    chosen = np.broadcast_to(model[-1].alpha_, (train_y.shape[1],))
    return predictions, int(model[0].get_support().sum()), np.asarray(chosen)


def cross_validate(features: pd.DataFrame, targets: pd.DataFrame, folds: pd.Series,
                   alphas: Sequence[float], show_progress: bool = True
                   ) -> tuple[pd.DataFrame, list[FoldFit]]:
    """Out-of-fold predictions (patients in `targets`' order) and what each fold chose."""
    parts, fits = [], []
    for fold in progress(sorted(folds.unique()), "ridge per fold", disable=not show_progress):
        held_out = folds.index[folds == fold]
        train = folds.index[folds != fold]
        predicted, used, chosen = fit_predict(features.loc[train], targets.loc[train],
                                              features.loc[held_out], alphas)
        parts.append(predicted)
        fits.append(FoldFit(int(fold), len(train), len(held_out), used, chosen))
    oof = pd.concat(parts).loc[targets.index]
    oof.index.name = "patient_id"
    return oof, fits


def ridge_null(features: pd.DataFrame, targets: pd.DataFrame, folds: pd.Series,
               alphas: Sequence[float], recipe: Recipe, whose: str) -> np.ndarray:
    """The permutation test's null (the recipe's permutations x genes) of `cross_validate`
    on these features and folds: the baseline's, and the fusion's on its own features."""
    from RadioGenomicsLib.training.permutation import permutation_null

    def refit(shuffled: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(shuffled, index=targets.index)
        return cross_validate(features, frame, folds, alphas, show_progress=False)[0].to_numpy()

    return permutation_null(refit, targets.to_numpy(), recipe.training.permutations,
                            recipe.training.seed, f"permuted cross-validations ({whose} null)")


def usable_features(features: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The features finite for every patient, and the names of those dropped."""
    finite = np.isfinite(features.to_numpy(dtype=np.float64)).all(axis=0)
    return features.loc[:, finite], features.columns[~finite].tolist()


# ---------------------------------------------------------------- the whole baseline

def check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    alphas = tuple(float(a) for a in alphas)
    if not alphas or not all(np.isfinite(a) and a > 0 for a in alphas):
        raise InputError(None, f"--alphas {' '.join(map(str, alphas))}: give one or more "
                               "positive penalties")
    return tuple(sorted(set(alphas)))


def check_out(out: Path, inputs: Sequence[str | None] = ()) -> None:
    """A new or empty folder, or an earlier baseline's (replaced whole): never anything else."""
    from RadioGenomicsLib.outputs import Output, check_outputs

    check_outputs("baseline", [Output(out, "folder")], inputs)


def run_baseline(manifest: str, expression: str, sample_sheet: str | None, out: Path,
                 recipe: Recipe, alphas: Sequence[float] = DEFAULT_ALPHAS,
                 cache_dir: Path | None = None, jobs: int = 1) -> dict:
    """Features, ridge on the recipe's folds, and `out/` (features.tsv, folds.tsv,
    baseline.json, report/); returns the evaluation summary."""
    from radiomics import __version__ as pyradiomics_version

    from RadioGenomicsLib.outputs import mark_complete
    from RadioGenomicsLib.report import print_summary, write_report  # not in the workers
    from RadioGenomicsLib.training.crossval import check_inputs, common_genes

    alphas = check_alphas(alphas)
    check_out(out, [manifest, expression, sample_sheet])
    inputs = check_inputs(manifest, expression, sample_sheet, recipe)
    for note in inputs.notes:
        print(f"note: {note}", file=sys.stderr)
    features = cohort_features(inputs.cohort, inputs.channels, recipe.preprocessing,
                               FeatureCache(cache_dir or default_cache_dir()), manifest, jobs)
    features = features.loc[inputs.folds.index]
    usable, dropped = usable_features(features)
    if usable.shape[1] == 0:
        raise InputError(manifest, "no radiomic feature is finite for every patient")
    genes = common_genes(inputs)
    truth = inputs.targets[genes]
    oof, fits = cross_validate(usable, truth, inputs.folds, alphas)
    null = (ridge_null(usable, truth, inputs.folds, alphas, recipe, "the baseline's")
            if recipe.training.permutations else None)
    details = {
        "method": "PyRadiomics features + ridge regression (RidgeCV, penalty per gene by "
                  "efficient leave-one-out on the training fold)",
        "pyradiomics": pyradiomics_version, "feature_classes": ["shape", *FEATURE_CLASSES],
        "features_left_out": LEFT_OUT,
        "extractor": extractor_settings("ct" if inputs.channels == ["ct"] else "mri"),
        "mri_normalisation": {"region": recipe.preprocessing.region,
                              "skull_strip": recipe.preprocessing.skull_strip},
        "channels": inputs.channels, "features": features.shape[1],
        "features_dropped_not_finite": dropped, "alphas": list(alphas),
        "folds": recipe.training.folds, "seed": recipe.training.seed,
        "permutations": recipe.training.permutations, "genes": len(genes),
        "fold_fits": [fit.to_dict(alphas) for fit in fits],
        "notes": inputs.notes,
    }
    with atomic_path(out) as staging:
        staging.mkdir()
        features.reset_index().to_csv(staging / FEATURES_FILE, sep="\t", index=False,
                                      lineterminator="\n", float_format="%.9g")
        inputs.folds.rename("fold").reset_index().to_csv(staging / FOLDS_FILE, sep="\t",
                                                         index=False, lineterminator="\n")
        (staging / DETAILS_FILE).write_text(json.dumps(details, indent=2) + "\n")
        summary = write_report(staging / REPORT_FOLDER, oof, truth,
                               inputs.gene_names.reindex(genes).to_dict(),
                               folds=inputs.folds.loc[oof.index], markers=recipe.markers,
                               command=None, null_r=null)
        mark_complete(staging, "baseline")
    print_summary(summary)
    return summary


def baseline_recipe(config: str, folds: int | None, seed: int | None,
                    region: str | None, group_by: str | None = None,
                    permute_targets: bool | None = None,
                    permutations: int | None = None) -> Recipe:
    """The recipe whose targets, folds and MRI normalisation the baseline shares."""
    from RadioGenomicsLib.training.recipe import load_recipe

    recipe = load_recipe(config).with_training(folds=folds, seed=seed, group_by=group_by,
                                               permute_targets=permute_targets,
                                               permutations=permutations)
    if region is not None:
        recipe = dataclasses.replace(
            recipe, preprocessing=dataclasses.replace(recipe.preprocessing, region=region))
    return recipe
