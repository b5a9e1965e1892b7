"""From a study to a ranked gene table and gene maps, with a bundle's fold models.

The study is read and preprocessed once; each fold model encodes the slices once and
gives a value per gene (the top-k head) and, for the genes asked for, a map per slice.
The ensemble's mean is the prediction and the fold models' range its interval.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy.stats import norm

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.bundle import Bundle
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.genetable import TABLE_COLUMNS
from RadioGenomicsLib.maps import values_to_volume
from RadioGenomicsLib.preprocess import Slices
from RadioGenomicsLib.progress import progress

if TYPE_CHECKING:  # imported where the torch runtime runs: the ONNX runtimes need none
    import torch


def choose_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda: no CUDA device is available here")
    if name not in ("cpu", "cuda"):
        raise InputError(None, f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def map_gene_indices(bundle: Bundle, names: list[str]) -> list[int]:
    """Bundle rows of the genes asked for by symbol or Ensembl id (with or without version)."""
    genes = bundle.genes
    by_name = {n.upper(): i for i, n in enumerate(genes["gene_name"]) if n}
    by_id = {g.split(".")[0]: i for i, g in enumerate(genes["gene_id"])}
    indices = []
    for name in names:
        index = by_name.get(name.upper(), by_id.get(name.split(".")[0]))
        if index is None:
            raise InputError(bundle.path, f"gene {name!r} asked for a map is not in the bundle "
                                          f"({len(genes)} genes)")
        indices.append(index)
    return indices


@dataclass
class Prediction:
    fold_values: np.ndarray  # (folds, genes) patient-level predictions
    maps: dict[int, np.ndarray]  # gene row -> (S, grid, grid) mean of the fold models

    @property
    def values(self) -> np.ndarray:
        return self.fold_values.mean(axis=0)


def one_at_a_time(bundle: Bundle, device: torch.device, folds: str) -> Iterator[torch.nn.Module]:
    """The fold models loaded in turn: a paper model takes ~0.4 GB, five at once 2 GB."""
    for fold in bundle.fold_indices(folds):
        yield bundle.model(fold, device)


def run_models(models: Iterable[torch.nn.Module], slices: Slices, device: torch.device,
               map_genes: list[int] | None = None, count: int | None = None) -> Prediction:
    """Every fold model on the slices: patient values and the maps of `map_genes`."""
    import torch

    with torch.no_grad():
        return _run_models(models, slices, device, map_genes or [], count)


def _run_models(models, slices: Slices, device: torch.device, map_genes: list[int],
                count: int | None) -> Prediction:
    import torch

    from RadioGenomicsLib.model.predictor import slices_per_pass

    x = torch.from_numpy(slices.images)[None].to(device)
    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=device.type == "cuda")
    values, maps = [], []
    count = count or len(models)  # type: ignore[arg-type]
    for model in progress(models, "fold models", total=count, disable=count == 1):
        with autocast:
            tokens = model.encode(x, mask, slices_per_pass(device))
        values.append(model.predict_genes(tokens, mask).float().cpu().numpy()[0])
        if map_genes:
            maps.append(model.gene_maps(tokens, map_genes).float().cpu().numpy()[0])
    mean_maps = np.mean(maps, axis=0) if maps else None  # (S, n_sel, grid, grid)
    return Prediction(np.asarray(values), {gene: mean_maps[:, i] for i, gene in
                                           enumerate(map_genes)})


def gene_table(bundle: Bundle, prediction: Prediction) -> pd.DataFrame:
    """The ranked gene table: most over-expressed against the training cohort first."""
    genes = bundle.genes
    predicted = prediction.values
    std = genes["train_std"].to_numpy()
    z = np.divide(predicted - genes["train_mean"].to_numpy(), std,
                  out=np.zeros_like(predicted), where=std > 0)
    table = pd.DataFrame({
        "gene_id": genes["gene_id"], "gene_name": genes["gene_name"],
        "predicted": predicted,
        "lower": prediction.fold_values.min(axis=0), "upper": prediction.fold_values.max(axis=0),
        "cohort_z": z, "cohort_percentile": 100.0 * norm.cdf(z),
        "validation_r": genes["validation_r"], "validation_p_adj": genes["validation_p_adj"],
        "reliable": bundle.significant(0.05),
    })
    table = table.sort_values("cohort_z", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.loc[:, list(TABLE_COLUMNS)]


def table_separator(path: str | os.PathLike) -> str:
    name = os.fspath(path).lower()
    if name.endswith((".tsv", ".txt", ".tab")):
        return "\t"
    if name.endswith(".csv"):
        return ","
    raise InputError(path, "the gene table is written as CSV or TSV: name it .csv or .tsv")


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    separator = table_separator(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep=separator, index=False, float_format="%.6g")


def map_volumes(bundle: Bundle, prediction: Prediction, slices: Slices) -> dict[str, sitk.Image]:
    """Gene name (or id) -> its map on the study's grid, zero outside the tumour slices."""
    volumes = {}
    for gene, values in prediction.maps.items():
        name = bundle.genes["gene_name"].iat[gene] or bundle.genes["gene_id"].iat[gene]
        volumes[name] = values_to_volume(values, slices)
    return volumes


def map_file_name(gene_name: str, suffix: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gene_name)
    return f"{safe}{suffix}"


def check_bundle_fits(bundle: Bundle, slices: Slices) -> None:
    if list(slices.channels) != list(bundle.channels):
        raise InputError(bundle.path, f"the model needs channels {', '.join(bundle.channels)}; "
                                      f"the study has {', '.join(slices.channels)}")
    if slices.images.shape[-1] != bundle.config.image_size:
        raise InputError(bundle.path, f"the model takes {bundle.config.image_size}-pixel slices; "
                                      f"the study was preprocessed at {slices.images.shape[-1]}")


def ensure_writable_folder(path: str | os.PathLike) -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
