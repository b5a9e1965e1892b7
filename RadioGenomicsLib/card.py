"""A bundle's card: what a person needs to know about a model before using it.

Read from `metadata.json` and `genes.tsv` with the standard library only, so that the
Slicer module and the viewers show it without a subprocess and before torch or pandas
are installed. `bundle.py` reads the same two files through this module (one reader of
the bundle format); weights are not touched here.
"""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from RadioGenomicsLib.errors import InputError, read_json_object
from RadioGenomicsLib.genetable import MARKER_GENES, column_units

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
GENES_FILE = "genes.tsv"
GENE_COLUMNS = ("gene_id", "gene_name", "train_mean", "train_std", "validation_r",
                "validation_p_adj")
# the permutation test's family-wise p, where training ran it (`--permutations`): then it,
# not Holm-Sidak's p, says which genes are reliable
OPTIONAL_GENE_COLUMNS = ("validation_p_perm",)
REQUIRED_FIELDS = ("format_version", "channels", "preprocessing", "target", "model",
                   "training_cohort", "folds", "weights")
RESEARCH_NOTICE = "For research use only: not for diagnosis or treatment decisions."


def _number(text: str) -> float:
    return math.nan if text.strip() in ("", "nan", "NaN") else float(text)


def bundle_markers(metadata: dict[str, Any]) -> tuple[str, ...]:
    """The bundle's marker genes: its own list, else its recipe's, else the library's."""
    for holder in (metadata, metadata.get("training_cohort", {}).get("recipe", {})):
        markers = holder.get("markers") if isinstance(holder, dict) else None
        if isinstance(markers, list) and all(isinstance(m, str) for m in markers):
            return tuple(markers)
    return MARKER_GENES


def read_metadata(path: Path) -> dict[str, Any]:
    """`metadata.json` of a bundle folder, checked for its format version and fields."""
    meta_path = path / METADATA_FILE
    if not meta_path.is_file():
        raise InputError(path, f"not a model bundle: no {METADATA_FILE}")
    document = read_json_object(meta_path)
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(meta_path, "format_version missing or not an integer")
    if version > FORMAT_VERSION:
        from RadioGenomicsLib import __version__

        raise InputError(meta_path, f"bundle format version {version} is newer than this "
                                    f"RadioGenomics {__version__} reads (up to "
                                    f"{FORMAT_VERSION}): upgrade RadioGenomics")
    missing = [key for key in REQUIRED_FIELDS if key not in document]
    if missing:
        raise InputError(meta_path, f"missing field(s) {', '.join(missing)}")
    channels, target = document["channels"], document["target"]
    if not (isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels)):
        raise InputError(meta_path, "channels must be a non-empty list of names")
    if not isinstance(target, dict) or not {"transform", "units"} <= set(target):
        raise InputError(meta_path, "target must give 'transform' and 'units'")
    for key in ("preprocessing", "training_cohort", "model"):
        if not isinstance(document[key], dict):
            raise InputError(meta_path, f"{key} must be a JSON object")
    # what the card computes with (the full schema is checked by bundle.load_bundle)
    for key, value in (("folds", document["folds"]),
                       ("model.image_size", document["model"].get("image_size", 224))):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(meta_path, f"{key}: {value!r} is not a positive integer")
    return document


def read_gene_rows(path: Path) -> list[dict[str, Any]]:
    """`genes.tsv` as rows with the numeric columns as floats (NaN where empty)."""
    genes_path = path / GENES_FILE
    if not genes_path.is_file():
        raise InputError(path, f"not a complete bundle: no {GENES_FILE}")
    try:
        with open(genes_path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file, delimiter="\t")
            missing = [c for c in GENE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(genes_path, f"gene table lacks column(s) {', '.join(missing)}")
            numeric = GENE_COLUMNS[2:] + tuple(c for c in OPTIONAL_GENE_COLUMNS
                                               if c in (reader.fieldnames or []))
            rows = []
            for number, row in enumerate(reader, start=2):
                record: dict[str, Any] = {"gene_id": row["gene_id"] or "",
                                          "gene_name": row["gene_name"] or ""}
                for column in numeric:
                    try:
                        record[column] = _number(row[column] or "")
                    except ValueError:
                        raise InputError(genes_path, f"{column}: not a number on line {number}: "
                                                     f"{row[column]!r}") from None
                rows.append(record)
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(genes_path, f"not a readable TSV: {error}") from None
    if not rows:
        raise InputError(genes_path, "gene table has no genes")
    return rows


def is_reliable(row: dict[str, Any], alpha: float = 0.05) -> bool:
    """Significant in the bundle's validation, r > 0 and: the permutation test's p <= alpha
    where training ran it (a permutation p is exact at its own level), else Holm-Sidak's
    adjusted p < alpha."""
    r, p_perm = row["validation_r"], row.get("validation_p_perm", math.nan)
    if math.isnan(r) or r <= 0:
        return False
    if not math.isnan(p_perm):
        return p_perm <= alpha
    return row["validation_p_adj"] < alpha  # NaN compares False


@dataclass(frozen=True)
class BundleCard:
    path: Path
    name: str
    format_version: int
    library_version: str
    created: str
    channels: tuple[str, ...]
    target_transform: str
    target_units: str
    preprocessing: dict[str, Any]
    model: dict[str, Any]
    training_cohort: dict[str, Any]
    folds: int
    genes: int
    markers: tuple[str, ...]
    significant: dict[str, int]  # alpha ("0.05", "0.01") -> genes significant, r > 0
    median_validation_r: float | None
    marker_rows: tuple[dict[str, Any], ...] = field(default=())  # markers the bundle has
    significance_test: str = "Holm-Sidak"  # or "permutation test" (`is_reliable`)

    @property
    def validated(self) -> bool:
        return self.median_validation_r is not None

    @property
    def units(self) -> dict[str, str]:
        """Units of the gene table's numeric columns."""
        return column_units(self.target_transform, self.target_units)

    @property
    def permuted_control(self) -> bool:
        """Trained on expression shuffled across patients: a control, never for use."""
        recipe = self.training_cohort.get("recipe")
        training = recipe.get("training") if isinstance(recipe, dict) else None
        return isinstance(training, dict) and bool(training.get("permute_targets"))

    @property
    def synthetic(self) -> bool:
        cohort = self.training_cohort
        return bool(cohort.get("synthetic")) or cohort.get("name") == "untrained"

    def validation_text(self) -> str:
        if not self.validated:
            return "none (no validation statistics in genes.tsv)"
        return (f"{self.significant['0.05']} of {self.genes} genes significant at alpha 0.05, "
                f"{self.significant['0.01']} at 0.01 ({self.significance_test}, r > 0); "
                f"median r {self.median_validation_r:.3f}")

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "name": self.name,
                "format_version": self.format_version, "library_version": self.library_version,
                "created": self.created, "channels": list(self.channels),
                "target": {"transform": self.target_transform, "units": self.target_units},
                "preprocessing": self.preprocessing, "model": self.model,
                "training_cohort": self.training_cohort, "folds": self.folds,
                "genes": self.genes, "markers": list(self.markers),
                "validated": self.validated, "significant_genes": self.significant,
                "significance_test": self.significance_test,
                "median_validation_r": self.median_validation_r,
                "marker_genes": [dict(row) for row in self.marker_rows]}


def card_from(path: Path, metadata: dict[str, Any], rows: list[dict[str, Any]]) -> BundleCard:
    markers = bundle_markers(metadata)
    r_values = sorted(row["validation_r"] for row in rows if not math.isnan(row["validation_r"]))
    median = None
    if r_values:
        middle = len(r_values) // 2
        median = (r_values[middle] if len(r_values) % 2
                  else (r_values[middle - 1] + r_values[middle]) / 2)
    by_name = {row["gene_name"]: row for row in rows if row["gene_name"]}
    marker_rows = tuple({"gene_name": m, "gene_id": by_name[m]["gene_id"],
                         "validation_r": _or_none(by_name[m]["validation_r"]),
                         "validation_p_adj": _or_none(by_name[m]["validation_p_adj"]),
                         **{c: _or_none(by_name[m][c]) for c in OPTIONAL_GENE_COLUMNS
                            if c in by_name[m]},
                         "reliable": is_reliable(by_name[m])}
                        for m in markers if m in by_name)
    target = metadata["target"]
    return BundleCard(
        path=path, name=str(metadata.get("name") or path.name),
        format_version=metadata["format_version"],
        library_version=str(metadata.get("library_version", "unknown")),
        created=str(metadata.get("created", "unknown")), channels=tuple(metadata["channels"]),
        target_transform=str(target["transform"]), target_units=str(target["units"]),
        preprocessing=metadata["preprocessing"], model=metadata["model"],
        training_cohort=metadata["training_cohort"], folds=int(metadata["folds"]),
        genes=len(rows), markers=markers,
        significant={str(a): sum(is_reliable(row, a) for row in rows) for a in (0.05, 0.01)},
        median_validation_r=median, marker_rows=marker_rows,
        significance_test=("permutation test" if any(
            not math.isnan(row.get("validation_p_perm", math.nan)) for row in rows)
            else "Holm-Sidak"))


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def read_card(path: str | os.PathLike) -> BundleCard:
    """The card of a bundle folder (metadata and gene table checked; weights not read)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "no such bundle folder" if not path.exists() else
                         f"not a model bundle: expected a folder with {METADATA_FILE}, "
                         f"{GENES_FILE} and fold_<i>.safetensors")
    return card_from(path, read_metadata(path), read_gene_rows(path))


# ---------------------------------------------------------------- for people


def _pairs(mapping: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    items = [f"{k}={v if isinstance(v, (str, int, float)) else json.dumps(v)}"
             for k, v in mapping.items() if k not in skip and v not in (None, "", [], {})]
    return ", ".join(items) or "(none given)"


def _model_text(model: dict[str, Any], preprocessing: dict[str, Any] | None = None) -> str:
    size = model.get("image_size", 224)
    grid = size // 16
    return (f"{model.get('name', '?')}: R50 stages {model.get('resnet_layers')} "
            f"(width {model.get('resnet_width')}), {model.get('num_layers')} transformer "
            f"layers of {model.get('hidden_size')} ({model.get('num_heads')} heads), "
            f"{size}x{size} slices -> {grid}x{grid} tokens, "
            + ", ".join(_head_parts(model, preprocessing or {})))


# what the geometry settings add to the mask's 4 geometry values, in a few words
GEOMETRY_EXTRAS = (("shape_geometry", "the tumour's 3-D shape"),
                   ("intensity_geometry", "its intensity statistics"),
                   ("shell_mm", "those of a shell around it"),
                   ("region_geometry", "sub-region volumes and shares"))


def _head_parts(model: dict[str, Any], preprocessing: dict[str, Any]) -> list[str]:
    """What the gene head reads, in a few words each."""
    pooling = model.get("pooling", "topk")
    parts = [f"top-k {model.get('top_k')}" if pooling == "topk" else f"{pooling} pooling"]
    if model.get("geometry"):
        extras = [text for key, text in GEOMETRY_EXTRAS if preprocessing.get(key)]
        parts.append("the mask's geometry" + (f" (with {', '.join(extras)})" if extras else ""))
    if model.get("stem_texture"):
        parts.append("the stem's texture" + (" over the tumour and its core"
                                             if model.get("core_texture") else ""))
    return parts


def _marker_text(row: dict[str, Any]) -> str:
    if row["validation_r"] is None:
        return f"{row['gene_name']} (not validated)"
    flag = ", reliable" if row["reliable"] else ""
    permuted = (f", p_perm {row['validation_p_perm']:.2g}"
                if row.get("validation_p_perm") is not None else "")
    return (f"{row['gene_name']} (r {row['validation_r']:.2f}, "
            f"p_adj {row['validation_p_adj']:.2g}{permuted}{flag})")


def _cohort_text(cohort: dict[str, Any]) -> str:
    """The training cohort in a few words; its recipe and per-fold details are in --json."""
    return _pairs(cohort, skip=("recipe", "fold_training", "notes"))


def card_text(card: BundleCard, width: int = 80, weights_checked: bool = False) -> str:
    """The card as label/value lines wrapped to `width` columns (an 80-column terminal);
    `weights_checked` when the caller verified every weight file's sha256."""
    absent = [m for m in card.markers if m not in {r["gene_name"] for r in card.marker_rows}]
    markers = ", ".join(_marker_text(r) for r in card.marker_rows) or "none"
    if absent:
        markers += f"; not in the bundle: {', '.join(absent)}"
    lines = [
        ("Bundle", f"{card.path} (format {card.format_version}, RadioGenomics "
                   f"{card.library_version}, created {card.created})"),
        ("Channels", f"{', '.join(card.channels)} (give each: --image NAME=PATH)"),
        ("Preprocessing", _pairs(card.preprocessing)),
        ("Model", _model_text(card.model, card.preprocessing)),
        ("Target", f"{card.target_transform} of {card.target_units}"),
        ("Genes", str(card.genes)),
        ("Folds", f"{card.folds}" + (" (weight files present, sha256 checked)"
                                     if weights_checked else "")),
        ("Training cohort", _cohort_text(card.training_cohort)),
        ("Validation", card.validation_text()),
        ("Marker genes", markers),
        ("Use", RESEARCH_NOTICE),
    ]
    if card.permuted_control:
        lines.insert(1, ("CONTROL", "trained on expression permuted across patients: a "
                                    "negative control whose predictions mean nothing"))
    label_width = max(len(label) for label, _ in lines) + 2
    out = []
    for label, value in lines:
        wrapped = textwrap.wrap(value, width=max(20, width - label_width),
                                break_long_words=False, break_on_hyphens=False) or [""]
        out.append(f"{label:<{label_width}}{wrapped[0]}")
        out.extend(" " * label_width + rest for rest in wrapped[1:])
    return "\n".join(out)
