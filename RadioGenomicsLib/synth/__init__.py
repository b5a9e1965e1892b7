"""A synthetic cohort in the real formats, with known image–gene links.

    DIR/images/<case>/<case>_<channel>.nii.gz, <case>_seg.nii.gz
    DIR/expression/<file id>/<uuid>.rna_seq.augmented_star_gene_counts.tsv
    DIR/gdc_sample_sheet.tsv
    DIR/manifest.csv        patient_id, channels..., segmentation, label
    DIR/truth.json          what was drawn (below)

truth.json: `factors` (name -> the traits it drives); `expression.linked` (gene_id,
gene_name, factor, effect_log2: log2 fold change of the expected count per SD of the
factor, baseline_count), `linked_genes`, `null_genes`; per patient `latent` (factor ->
standard-normal value), `traits` (tumour.Traits), `centre_lps_mm`, `label_ml`
(segmentation label -> volume) and `samples` (its TCGA sample barcodes).

Every patient draws latent factors (tumour.FACTORS); they set the tumour's traits
(anatomy + tumour -> images) and, for a known share of the genes, the expression
(expression). The rest of the genes is pure noise. Random streams are keyed by
(seed, purpose, patient), so the cohort is the same byte for byte whatever the number
of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from RadioGenomicsLib import cohort, gdc
from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.outputs import Output, check_outputs, mark_complete
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.gencode import gene_table
from RadioGenomicsLib.imaging import CT_CHANNELS, MRI_CHANNELS
from RadioGenomicsLib.progress import progress
from RadioGenomicsLib.synth import anatomy, expression, tumour

MODALITIES = {"mri": MRI_CHANNELS, "ct": CT_CHANNELS}
MAX_PATIENTS = 9999  # TCGA-S1-0001 .. TCGA-S1-9999
TRUTH_FORMAT = "radiogenomics-synth-truth"
TRUTH_VERSION = 1
FACTOR_TRAITS = {
    "proliferation": "tumour volume, enhancing-rim thickness and enhancement",
    "necrosis": "necrotic-core share",
    "infiltration": "oedema extent (MRI) or ground-glass halo (CT), shape irregularity",
    "heterogeneity": "texture inside the tumour",
    "location": "anterior-posterior position (MRI), cranio-caudal position (CT)",
}
# independent random streams: (seed, purpose[, patient])
_COHORT_STREAM, _EXPRESSION_STREAM, _PATIENT_STREAM = 0, 1, 2


def check_request(out: Path, patients: int, genes: int, modality: str) -> None:
    if modality not in MODALITIES:
        raise InputError(None, f"--modality {modality!r}: expected one of {', '.join(MODALITIES)}")
    if not 2 <= patients <= MAX_PATIENTS:
        raise InputError(None, f"--patients {patients}: expected 2 to {MAX_PATIENTS}")
    available = len(gene_table())
    if not 1 <= genes <= available:
        raise InputError(None, f"--genes {genes}: expected 1 to {available} (GENCODE v36)")
    check_outputs("synth", [Output(out, "folder")])


def synthesize_cohort(out: str | os.PathLike, patients: int, genes: int, modality: str = "mri",
                      seed: int = 0, jobs: int | None = None) -> Path:
    """Write a synthetic cohort into `out` (replaced whole when it holds an earlier one)."""
    out = Path(out)
    check_request(out, patients, genes, modality)
    latent = np.random.default_rng([seed, _COHORT_STREAM]).standard_normal(
        (patients, len(tumour.FACTORS)))
    with atomic_path(out) as tmp:
        tmp.mkdir()
        images = _write_images(tmp, latent, modality, seed, jobs)
        samples, model = _write_expression(tmp, latent, genes, seed)
        _write_manifest(tmp, images, modality)
        _write_truth(tmp, latent, images, samples, model, modality, seed)
        mark_complete(tmp, "synth")
    return out


# ---------------------------------------------------------------- images

def _patient_images(task: tuple[Path, int, np.ndarray, str, int]) -> dict[str, object]:
    """Draw and write one patient's channels and segmentation; returns what was drawn."""
    folder, index, latent, modality, seed = task
    rng = np.random.default_rng([seed, _PATIENT_STREAM, index])
    case = expression.case_barcode(index)
    traits = tumour.traits_from_factors(latent, modality, rng)
    body = anatomy.deformed(anatomy.load_template(modality), rng)
    drawn = tumour.draw(body, traits, rng)
    if modality == "ct":
        volumes = {"ct": anatomy.ct_acquisition(tumour.ct_attenuation(body, drawn, traits), rng)}
    else:
        tissue = sum(body.maps[t] for t in anatomy.MRI_TISSUES) > 0.1
        volumes = {c: anatomy.mr_acquisition(s, tissue, rng)
                   for c, s in tumour.mr_signals(body, drawn, traits).items()}
    segmentation = np.zeros(volumes[MODALITIES[modality][0]].shape, dtype=np.uint8)
    segmentation[drawn.box] = drawn.labels
    paths = {}
    patient_folder = folder / "images" / case
    patient_folder.mkdir(parents=True, exist_ok=True)
    for name, values in [*volumes.items(), ("segmentation", segmentation)]:
        image = sitk.GetImageFromArray(values)
        image.CopyInformation(body.reference)
        paths[name] = patient_folder / f"{case}_{'seg' if name == 'segmentation' else name}.nii.gz"
        sitk.WriteImage(image, str(paths[name]), useCompression=True)
    voxel_ml = float(np.prod(body.spacing)) / 1000
    labels, counts = np.unique(drawn.labels[drawn.labels > 0], return_counts=True)
    centre = body.reference.TransformContinuousIndexToPhysicalPoint(drawn.centre[::-1].tolist())
    return {"patient_id": case, "paths": paths, "traits": traits.as_dict(),
            "centre_lps_mm": [round(c, 3) for c in centre],
            "label_ml": {int(k): round(float(n) * voxel_ml, 3) for k, n in zip(labels, counts)}}


def _single_threaded_itk() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # the processes share the cores


def _write_images(folder: Path, latent: np.ndarray, modality: str, seed: int,
                  jobs: int | None) -> list[dict[str, object]]:
    tasks = [(folder, i, latent[i], modality, seed) for i in range(len(latent))]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    description = f"synthetic {modality.upper()} studies"
    if jobs == 1:
        return list(progress(map(_patient_images, tasks), description, total=len(tasks)))
    # spawn, not fork: a forked ITK thread pool can hang the children
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context,
                             initializer=_single_threaded_itk) as pool:
        return list(progress(pool.map(_patient_images, tasks), description, total=len(tasks)))


# ---------------------------------------------------------------- expression, manifest, truth

def _write_expression(folder: Path, latent: np.ndarray, genes: int, seed: int
                      ) -> tuple[list[expression.Sample], expression.ExpressionModel]:
    rng = np.random.default_rng([seed, _EXPRESSION_STREAM])
    model = expression.draw_model(genes, rng)
    samples = expression.plan_samples(len(latent), rng)
    for sample in progress(samples, "synthetic STAR - Counts files"):
        index = int(sample.case_id.rsplit("-", 1)[1]) - 1
        counts = expression.draw_counts(model, latent[index] if sample.tumour else None, rng)
        table, summary = expression.star_table(model, counts, rng)
        gdc.write_star_counts(folder / "expression" / sample.relative_path, table, summary)
    expression.write_sample_sheet(folder / expression.SHEET_NAME, samples)
    return samples, model


def _write_manifest(folder: Path, images: list[dict[str, object]], modality: str) -> None:
    channels = MODALITIES[modality]
    rows = [{"patient_id": image["patient_id"],
             **{c: str(image["paths"][c]) for c in channels},
             "segmentation": str(image["paths"]["segmentation"]),
             # MRI: the whole tumour is every BraTS label; CT: label 1
             "label": str(tumour.CT_TUMOUR) if modality == "ct" else ""}
            for image in images]
    cohort.write_manifest(folder / "manifest.csv", pd.DataFrame(rows))


def _write_truth(folder: Path, latent: np.ndarray, images: list[dict[str, object]],
                 samples: list[expression.Sample], model: expression.ExpressionModel,
                 modality: str, seed: int) -> None:
    linked = model.linked()
    truth = {
        "format": TRUTH_FORMAT, "version": TRUTH_VERSION, "seed": seed, "modality": modality,
        "channels": list(MODALITIES[modality]),
        "segmentation_labels": ({str(tumour.CT_TUMOUR): "tumour"} if modality == "ct" else
                                {"1": "necrosis / non-enhancing core", "2": "oedema",
                                 "4": "enhancing"}),
        "factors": FACTOR_TRAITS,
        "expression": {
            "gene_model": "GENCODE v36",
            "genes": len(model.genes),
            "linked_genes": len(linked),
            "null_genes": len(model.genes) - len(linked),
            "model": "negative binomial: log2 E[count] = log2 baseline + log2 depth "
                     "+ effect_log2 * factor (tumour samples; normal samples have no factor "
                     "effect and a gene-wise shift)",
            "effect_unit": "log2 fold change of the expected count per SD of the factor",
            "linked": linked,
        },
        "patients": [{
            "patient_id": image["patient_id"],
            "latent": {f: round(float(v), 6) for f, v in zip(tumour.FACTORS, latent[i])},
            "traits": image["traits"],
            "centre_lps_mm": image["centre_lps_mm"],
            "label_ml": {str(k): v for k, v in image["label_ml"].items()},
            "samples": [s.sample_id for s in samples if s.case_id == image["patient_id"]],
        } for i, image in enumerate(images)],
    }
    (folder / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")


def score_against_truth(truth_json: str | os.PathLike, report: str | os.PathLike) -> dict:
    """An evaluation report (`gene_stats.tsv` in `report`) scored against the links a
    synthetic cohort's truth.json knows: the significant genes, how many of them are
    truly linked, the null genes called significant, the mean r of either kind, and per
    latent factor the linked genes and how many of them were found; with a permutation
    test, the linked and null genes it passed."""
    truth = json.loads(Path(truth_json).read_text())
    factor_of = {gene["gene_id"]: gene["factor"] for gene in truth["expression"]["linked"]}
    stats = pd.read_csv(Path(report) / "gene_stats.tsv", sep="\t")
    is_linked = stats["gene_id"].isin(set(factor_of))
    significant = stats["significant"].astype(bool)
    factors = stats["gene_id"].map(factor_of)
    per_factor = {str(name): {"linked": int((factors == name).sum()),
                              "found": int(((factors == name) & significant).sum())}
                  for name in sorted(set(factor_of.values()))}
    return {"genes": len(stats), "linked": int(is_linked.sum()), "null": int((~is_linked).sum()),
            "significant": int(significant.sum()),
            "significant_linked": int((significant & is_linked).sum()),
            "null_significant": int((significant & ~is_linked).sum()),
            "r_linked": float(stats.loc[is_linked, "pearson_r"].mean()),
            "r_null": float(stats.loc[~is_linked, "pearson_r"].mean()),
            "per_factor": per_factor, **_permutation_scores(stats, is_linked, factors,
                                                            list(per_factor))}


def _permutation_scores(stats: pd.DataFrame, is_linked: pd.Series, factors: pd.Series,
                        names: list[str]) -> dict:
    """The permutation test's linked and null genes, and per factor the linked genes it
    passed, where the report has one."""
    if "p_perm" not in stats or stats["p_perm"].isna().all():
        return {}
    passed = (stats["p_perm"] <= 0.05) & (stats["pearson_r"] > 0)
    return {"permutation_linked": int((passed & is_linked).sum()),
            "permutation_null": int((passed & ~is_linked).sum()),
            "permutation_per_factor": {name: int(((factors == name) & passed).sum())
                                       for name in names}}