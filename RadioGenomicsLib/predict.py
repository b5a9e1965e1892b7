"""The pieces of a prediction that every face shares: the device, the genes asked for,
the ranked gene table and its files. The pipeline itself is `run.predict_study`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.special import ndtr  # the normal CDF (scipy.stats takes 0.5 s to import)

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.genetable import TABLE_COLUMNS, TEXT_COLUMNS

if TYPE_CHECKING:
    from RadioGenomicsLib.bundle import Bundle
    from RadioGenomicsLib.preprocess import Slices


def choose_device(name: str = "auto"):
    """The torch device for `--device auto|cpu|cuda`."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda: no CUDA device is available here")
    if name not in ("cpu", "cuda"):
        raise InputError(None, f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def map_gene_indices(bundle: "Bundle", names: list[str]) -> list[int]:
    """Bundle rows of the genes asked for by symbol or Ensembl id (with or without version)."""
    genes = bundle.genes
    by_name = {n.upper(): i for i, n in enumerate(genes["gene_name"]) if n}
    by_id = {g.split(".")[0]: i for i, g in enumerate(genes["gene_id"])}
    indices = []
    for name in names:
        index = by_name.get(name.upper(), by_id.get(name.split(".")[0]))
        if index is None:
            raise InputError(bundle.path, f"gene {name!r} is not among the bundle's "
                                          f"{len(genes)} genes: {_why_absent(name)}")
        indices.append(index)
    return indices


def _why_absent(name: str) -> str:
    from RadioGenomicsLib.gencode import gene_table as gencode_table, unversioned

    known = gencode_table()
    if (known["gene_name"].str.upper() == name.upper()).any() or \
            (known["gene_id"].map(unversioned) == unversioned(name)).any():
        return ("a GENCODE v36 gene that the model was not trained on (median zero in the "
                "training cohort, so dropped by the median-zero filter, or not in its "
                "expression files)")
    return "not a GENCODE v36 gene symbol or Ensembl id either (check the spelling)"


def gene_table(bundle: "Bundle", fold_values: np.ndarray) -> pd.DataFrame:
    """The ranked gene table from (folds, genes) patient values: the fold models' mean,
    their range as the interval; most over-expressed against the training cohort first."""
    genes = bundle.genes
    predicted = fold_values.mean(axis=0)
    std = genes["train_std"].to_numpy()
    z = np.divide(predicted - genes["train_mean"].to_numpy(), std,
                  out=np.zeros_like(predicted), where=std > 0)
    table = pd.DataFrame({
        "gene_id": genes["gene_id"], "gene_name": genes["gene_name"],
        "predicted": predicted,
        "lower": fold_values.min(axis=0), "upper": fold_values.max(axis=0),
        "cohort_z": z, "cohort_percentile": 100.0 * ndtr(z),
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


def write_table(table: pd.DataFrame, path: str | os.PathLike,
                written: str | os.PathLike | None = None) -> None:
    """`written`: a file `write_table` already wrote this table to (a run's), copied when
    its separator is the same: formatting 31,793 rows again took ~0.4 s."""
    separator = table_separator(path)
    with atomic_path(path) as tmp:
        if written is not None and table_separator(written) == separator:
            shutil.copyfile(written, tmp)
        else:
            table.to_csv(tmp, sep=separator, index=False, float_format="%.6g")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A gene table that `write_table` wrote (gene names such as "NA" stay names)."""
    table = pd.read_csv(path, sep=table_separator(path), keep_default_na=False,
                        na_values={c: ["", "nan", "NaN"] for c in TABLE_COLUMNS
                                   if c not in TEXT_COLUMNS})
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(path, f"not a gene table: no column(s) {', '.join(missing)}")
    table["reliable"] = table["reliable"].astype(str).str.lower() == "true"
    return table.loc[:, list(TABLE_COLUMNS)]


def map_file_name(gene_name: str, suffix: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gene_name)
    return f"{safe}{suffix}"


def check_bundle_fits(bundle: "Bundle", slices: "Slices") -> None:
    if list(slices.channels) != list(bundle.channels):
        raise InputError(bundle.path, f"the model needs channels {', '.join(bundle.channels)}; "
                                      f"the study has {', '.join(slices.channels)}")
    if slices.images.shape[-1] != bundle.config.image_size:
        raise InputError(bundle.path, f"the model takes {bundle.config.image_size}-pixel slices; "
                                      f"the study was preprocessed at {slices.images.shape[-1]}")


def ensure_writable_folder(path: str | os.PathLike) -> Path:
    """A folder `predict` fills file by file (each file atomic); its marker says it is
    predict's own, so that a later predict may write into it again."""
    from RadioGenomicsLib.outputs import mark_complete

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    mark_complete(folder, "predict")
    return folder
