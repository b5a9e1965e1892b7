"""Model bundles: the shipped model, a folder anyone can check before using it.

    BUNDLE/
      metadata.json          format version, channels, preprocessing, target, model
                             settings, training cohort, fold count, sha256 per weight file
      genes.tsv              gene_id, gene_name, train_mean, train_std, validation_r,
                             validation_p_adj (Holm-Sidak) [, validation_p_perm (the
                             permutation test, where training ran it)], one row per head
                             output
      fold_0.safetensors     one GenePredictor state dict per fold model (never pickle)
      fold_1.safetensors ...
      fold_0.onnx ...        optional files added later (`register_files`), such as the
                             fold models exported for the ONNX runtimes; their sha256 in
                             metadata.json "files"

A PyTorch pickle (`.pt`/`.pth`) can run code when loaded, so it is refused; convert it
explicitly once with `convert_torch_weights` (which loads tensors only).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from RadioGenomicsLib import __version__
from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.card import (FORMAT_VERSION, GENE_COLUMNS, GENES_FILE, METADATA_FILE,
                                   OPTIONAL_GENE_COLUMNS,
                                   BundleCard, card_from, is_reliable, read_metadata)
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.hashing import remembered_sha256, sha256_of
from RadioGenomicsLib.integrity import Integrity, verify_bundle, write_manifest
from RadioGenomicsLib.model.config import ModelConfig

if TYPE_CHECKING:  # torch is imported where weights are read: the ONNX runtimes need none
    import torch

    from RadioGenomicsLib.model import GenePredictor

NUMERIC_GENE_COLUMNS = GENE_COLUMNS[2:]
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt")


def fold_file(fold: int) -> str:
    return f"fold_{fold}.safetensors"


def refuse_pickle(path: str | os.PathLike) -> None:
    """Refuse a PyTorch pickle with the way out in the message."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise InputError(path, "is a PyTorch pickle, which can run code when loaded; convert it "
                               "once with RadioGenomicsLib.bundle.convert_torch_weights(path, "
                               "'weights.safetensors')")


def convert_torch_weights(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Explicit, one-off conversion of a `.pt`/`.pth` state dict to safetensors.

    Loads with `torch.load(weights_only=True)` (tensors and plain containers only, no
    code); accepts a state dict or a dict holding one under "state_dict" or "model".
    """
    import torch
    from safetensors.torch import save

    source, destination = Path(source), Path(destination)
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(source, "holds objects other than tensors and plain containers: "
                                 "refused, loading them could run code") from None
    except Exception as error:  # torch raises many types for unreadable files
        raise InputError(source, f"cannot read as PyTorch weights ({type(error).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise InputError(source, "holds no state dict (a mapping of names to tensors)")
    with atomic_path(destination) as tmp:
        tmp.write_bytes(save({k: v.detach().contiguous() for k, v in loaded.items()}))
    return destination


@dataclass
class BundleMetadata:
    """What the training side knows about a model; `write_bundle` adds the file-level facts."""

    channels: list[str]
    preprocessing: dict[str, Any]  # PreprocessSettings.to_dict(), opaque here
    model: ModelConfig
    target_transform: str = "log10(1+x)"
    target_units: str = "FPKM-UQ"
    training_cohort: dict[str, Any] = field(default_factory=dict)
    markers: tuple[str, ...] | None = None  # None: the recipe's, else the library's list

    def to_dict(self) -> dict[str, Any]:
        document = {
            "channels": list(self.channels),
            "preprocessing": self.preprocessing,
            "target": {"transform": self.target_transform, "units": self.target_units},
            "model": self.model.to_dict(),
            "training_cohort": self.training_cohort,
        }
        if self.markers is not None:
            document["markers"] = list(self.markers)
        return document

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> "BundleMetadata":
        """From a document that `card.read_metadata` has checked."""
        markers = data.get("markers")
        return cls(channels=data["channels"], preprocessing=data["preprocessing"],
                   model=ModelConfig.from_dict(data["model"], source=source),
                   target_transform=data["target"]["transform"],
                   target_units=data["target"]["units"],
                   training_cohort=data["training_cohort"],
                   markers=tuple(markers) if isinstance(markers, list) else None)


def _check_genes(genes: pd.DataFrame, source: Path | None) -> pd.DataFrame:
    missing = [c for c in GENE_COLUMNS if c not in genes.columns]
    if missing:
        raise InputError(source, f"gene table lacks column(s) {', '.join(missing)}")
    if genes.empty:
        raise InputError(source, "gene table has no genes")
    optional = [c for c in OPTIONAL_GENE_COLUMNS if c in genes.columns]
    genes = genes.loc[:, list(GENE_COLUMNS) + optional].reset_index(drop=True)
    for column in (*NUMERIC_GENE_COLUMNS, *optional):
        numbers = pd.to_numeric(genes[column].replace("", np.nan), errors="coerce")
        bad = numbers.isna() & genes[column].notna() & (genes[column].astype(str) != "")
        if bad.any():
            raise InputError(source, f"{column}: not a number in row {int(bad.idxmax()) + 1}: "
                                     f"{genes[column][bad.idxmax()]!r}")
        genes[column] = numbers.astype(float)
    genes["gene_id"] = genes["gene_id"].astype(str)
    genes["gene_name"] = genes["gene_name"].astype(str)
    if genes["gene_id"].duplicated().any():
        raise InputError(source, f"gene id {genes['gene_id'][genes['gene_id'].duplicated()].iloc[0]!r} twice")
    return genes


def write_bundle(path: str | os.PathLike, fold_state_dicts: Sequence[Mapping[str, torch.Tensor]],
                 metadata: BundleMetadata, genes: pd.DataFrame) -> Path:
    """Write a bundle folder atomically (all of it or nothing); an existing bundle is replaced."""
    path = Path(path)
    if path.exists() and not (path / METADATA_FILE).is_file():
        raise InputError(path, "exists and is not a bundle; refusing to replace it")
    if not fold_state_dicts:
        raise ValueError("a bundle needs at least one fold model")
    genes = _check_genes(genes, None)
    for fold, state in enumerate(fold_state_dicts):
        n_outputs = state["head.conv.bias"].shape[0]
        if n_outputs != len(genes):
            raise ValueError(f"fold {fold} predicts {n_outputs} genes, the gene table has {len(genes)}")
    from safetensors.torch import save

    with atomic_path(path) as tmp:
        tmp.mkdir()
        checksums = {}
        for fold, state in enumerate(fold_state_dicts):
            name = fold_file(fold)
            # via bytes: safetensors' own file writer leaves owner-only permissions
            data = save({k: v.detach().to("cpu").contiguous() for k, v in state.items()},
                        metadata={"format": "pt"})
            (tmp / name).write_bytes(data)
            checksums[name] = hashlib.sha256(data).hexdigest()
        document = {
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **metadata.to_dict(),
            "folds": len(fold_state_dicts),
            "weights": checksums,
        }
        (tmp / METADATA_FILE).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n",
                                         encoding="utf-8")
        genes.to_csv(tmp / GENES_FILE, sep="\t", index=False, na_rep="")
        write_manifest(tmp, checksums)  # last: every file above, checked on load
    return path


@dataclass
class Bundle:
    """A checked bundle folder. Weights are read only by `state_dict`/`models`."""

    path: Path
    metadata: BundleMetadata
    genes: pd.DataFrame
    checksums: dict[str, str]  # weight file name -> sha256, in fold order
    format_version: int
    library_version: str
    created: str
    card: BundleCard
    files: dict[str, str] = field(default_factory=dict)  # registered extra file -> sha256
    _verified: set[str] = field(default_factory=set, repr=False)
    _fingerprint: str = field(default="", repr=False)
    integrity: Integrity | None = None  # manifest and signature checks (integrity.py)

    @property
    def fingerprint(self) -> str:
        """sha256 of metadata.json and genes.tsv: names this bundle's exact content (the
        metadata holds the sha256 of every weight file)."""
        if not self._fingerprint:
            digest = hashlib.sha256()
            for name in (METADATA_FILE, GENES_FILE):
                digest.update(sha256_of(self.path / name).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    @property
    def markers(self) -> tuple[str, ...]:
        return self.card.markers

    @property
    def units(self) -> dict[str, str]:
        return self.card.units

    @property
    def channels(self) -> list[str]:
        return self.metadata.channels

    @property
    def config(self) -> ModelConfig:
        return self.metadata.model

    @property
    def folds(self) -> int:
        return len(self.checksums)

    def significant(self, alpha: float = 0.05) -> np.ndarray:
        """Genes significant in the bundle's validation, by the card's rule
        (`card.is_reliable`: the permutation test where training ran it, else Holm-Sidak)."""
        return np.array([is_reliable(row, alpha) for row in _card_rows(self.genes)], dtype=bool)

    def verify(self, fold: int | None = None) -> None:
        """Check the sha256 of one fold's weights, or of all; each file is hashed once."""
        for index, (name, expected) in enumerate(self.checksums.items()):
            if (fold is None or fold == index) and name not in self._verified:
                if weight_sha256(self.path / name) != expected:
                    raise InputError(self.path / name, "checksum mismatch: the weight file was "
                                                       "changed or damaged after the bundle was written")
                self._verified.add(name)

    def trust_unchanged(self, stats: Mapping[str, Sequence[int]]) -> None:
        """Count as verified the weight files whose size and modification time equal
        `stats` (recorded right after a full check, e.g. in a prediction run), so that a
        map from a run does not hash gigabytes again."""
        for name in self.checksums:
            stat = (self.path / name).stat()
            if list(stats.get(name, ())) == [stat.st_size, stat.st_mtime_ns]:
                self._verified.add(name)

    def weight_path(self, fold: int) -> Path:
        return self.path / fold_file(fold)

    def checked_file(self, name: str) -> Path:
        """A registered extra file (see `register_files`), its sha256 checked once."""
        if name not in self.files:
            raise InputError(self.path / name, "is not registered in the bundle's metadata.json")
        file = self.path / name
        if name not in self._verified:
            if not file.is_file():
                raise InputError(file, "missing (listed in the bundle's metadata.json)")
            if weight_sha256(file) != self.files[name]:
                raise InputError(file, "checksum mismatch: the file was changed or damaged "
                                       "after it was added to the bundle")
            self._verified.add(name)
        return file

    def state_dict(self, fold: int) -> dict[str, torch.Tensor]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self.verify(fold)
        file = self.weight_path(fold)
        try:
            return load_file(file)
        except SafetensorError as error:
            raise InputError(file, f"unreadable safetensors file ({error})") from None

    def build_model(self) -> GenePredictor:
        """An untrained model of the bundle's shape."""
        return untrained_model(self.config, self.channels, self.metadata.preprocessing,
                               len(self.genes))

    def model(self, fold: int, device: str | torch.device = "cpu") -> GenePredictor:
        """One fold model in eval mode on `device`."""
        model = self.build_model()
        try:
            model.load_state_dict(self.state_dict(fold))
        except RuntimeError as error:
            problem = str(error).splitlines()[0]
            raise InputError(self.path / fold_file(fold), f"weights do not fit the model "
                                                          f"described in metadata.json: {problem}") from None
        return model.to(device).eval()

    def fold_indices(self, folds: Literal["all", "first"] = "all") -> range:
        if folds not in ("all", "first"):
            raise ValueError(f"folds must be 'all' or 'first', not {folds!r}")
        return range(self.folds if folds == "all" else 1)

    def models(self, device: str | torch.device = "cpu",
               folds: Literal["all", "first"] = "all") -> list[GenePredictor]:
        """The fold models in eval mode on `device` (all folds, or the first only)."""
        return [self.model(fold, device) for fold in self.fold_indices(folds)]

    def summary(self) -> dict[str, Any]:
        """What a user needs before using the bundle (as `radiogenomics info` shows it)."""
        return self.card.to_dict()


def _weight_checksums(path: Path, document: dict[str, Any]) -> dict[str, str]:
    meta_path = path / METADATA_FILE
    folds, weights = document["folds"], document["weights"]
    if not isinstance(folds, int) or folds < 1 or not isinstance(weights, dict):
        raise InputError(meta_path, "folds must be a positive integer and weights an object")
    expected = [fold_file(i) for i in range(folds)]
    if sorted(weights) != sorted(expected):
        raise InputError(meta_path, f"weights list {sorted(weights)} but {folds} fold(s) need {expected}")
    for name in expected:
        refuse_pickle(path / name)
        if not (path / name).is_file():
            raise InputError(path / name, "missing weight file (listed in metadata.json)")
    return {name: str(weights[name]) for name in expected}


def _extra_files(path: Path, document: dict[str, Any]) -> dict[str, str]:
    files = document.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise InputError(path / METADATA_FILE, "files must map file names to sha256 strings")
    for name in files:
        if Path(name).name != name or name in (METADATA_FILE, GENES_FILE):
            raise InputError(path / METADATA_FILE, f"files: {name!r} is not a plain file name")
    return dict(files)


def register_files(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Add files already written into a bundle folder to its metadata.json (sha256 each),
    so that a later change to them is refused; the weight files' entries are unchanged.
    The manifest, where there is one, is written again; a signed bundle is refused (the
    signature covers the manifest: add the files before signing)."""
    from RadioGenomicsLib.integrity import MANIFEST_FILE, SIGNATURE_FILE

    path = Path(path)
    if (path / SIGNATURE_FILE).exists():
        raise InputError(path, "is signed: files can be added only before signing (add them "
                               "to an unsigned copy, then `radiogenomics sign` it)")
    document = read_metadata(path)
    files = dict(_extra_files(path, document))
    for name in names:
        if Path(name).name != name or not (path / name).is_file():
            raise InputError(path / name, "is not a file in the bundle folder")
        files[name] = sha256_of(path / name)
    document["files"] = dict(sorted(files.items()))
    with atomic_path(path / METADATA_FILE) as tmp:
        tmp.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if (path / MANIFEST_FILE).exists():
        write_manifest(path, {**document["weights"], **files})


def _read_genes(path: Path) -> pd.DataFrame:
    genes_path = path / GENES_FILE
    if not genes_path.is_file():
        raise InputError(path, f"not a complete bundle: no {GENES_FILE}")
    try:
        # as text first: gene names such as "NA" must stay names
        genes = pd.read_csv(genes_path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(genes_path, f"not a readable TSV: {error}") from None
    return _check_genes(genes, genes_path)


def _card_rows(genes: pd.DataFrame) -> list[dict[str, Any]]:
    """The gene rows `card_from` reads, as plain dicts (pandas' to_dict boxed every value of
    every column: 0.2 s of each prediction with 31,793 genes)."""
    columns = ("gene_id", "gene_name", "validation_r", "validation_p_adj",
               *(c for c in OPTIONAL_GENE_COLUMNS if c in genes.columns))
    return [dict(zip(columns, values)) for values in zip(*(genes[c].tolist() for c in columns))]


def weight_sha256(path: Path) -> str:
    """sha256 of a weight or exported model file, remembered per file version in the
    user's cache (`hashing.remembered_sha256`): checked on every use, hashed once."""
    from RadioGenomicsLib.runtime import cache_folder

    return remembered_sha256(path, cache_folder() / "hashes")


def load_bundle(path: str | os.PathLike, verify_checksums: bool = True,
                check_signature: bool = True) -> Bundle:
    """Read and check a bundle folder: format version, required fields (schemas.py), gene
    table, every file against manifest.json and the signature (integrity.py), weight files
    present and (unless `verify_checksums=False`, which defers each check to the moment a
    fold's weights are read) their sha256."""
    path = Path(path)
    refuse_pickle(path)
    if not path.exists():
        raise InputError(path, "no such bundle folder")
    if not path.is_dir():
        raise InputError(path, f"not a model bundle: expected a folder with {METADATA_FILE}, "
                               f"{GENES_FILE} and fold_<i>.safetensors")
    document = read_metadata(path)
    from RadioGenomicsLib.schemas import BUNDLE_METADATA, validate

    # types, ranges: one line, never a TypeError
    validate(document, BUNDLE_METADATA, path / METADATA_FILE)
    genes = _read_genes(path)
    bundle = Bundle(
        path=path,
        metadata=BundleMetadata.from_dict(document, path / METADATA_FILE),
        genes=genes,
        checksums=_weight_checksums(path, document),
        format_version=document["format_version"],
        library_version=str(document.get("library_version", "unknown")),
        created=str(document.get("created", "unknown")),
        card=card_from(path, document, _card_rows(genes)),
        files=_extra_files(path, document),
    )
    # the registered files, as the weights, are hashed when read (`checked_file`)
    bundle.integrity = verify_bundle(path, [METADATA_FILE, GENES_FILE, *bundle.checksums],
                                     {**bundle.checksums, **bundle.files}, check_signature)
    if verify_checksums:
        bundle.verify()
    return bundle


def untrained_model(config: ModelConfig, channels: Sequence[str], preprocessing: dict[str, Any],
                    genes: int) -> GenePredictor:
    """A GenePredictor of the shape these settings make: image and mask channels, geometry."""
    from RadioGenomicsLib.model import GenePredictor
    from RadioGenomicsLib.preprocess import geometry_names, model_channels, tumour_channel_index

    in_channels = model_channels(channels, preprocessing)
    return GenePredictor(config, in_channels, genes, len(geometry_names(preprocessing)),
                         tumour_channel_index(in_channels, preprocessing))


def make_untrained_bundle(path: str | os.PathLike, config: ModelConfig, channels: Sequence[str],
                          genes: pd.DataFrame, preprocessing: dict[str, Any], seed: int = 0,
                          folds: int = 1) -> Bundle:
    """A bundle of randomly initialised fold models, for tests and demos until training lands.

    `genes` needs gene_id and gene_name; missing statistics default to mean 0, std 1 and
    no validation (NaN). The head bias is set to train_mean, as training does.
    """
    genes = genes.copy()
    for column, default in (("train_mean", 0.0), ("train_std", 1.0),
                            ("validation_r", math.nan), ("validation_p_adj", math.nan)):
        if column not in genes.columns:
            genes[column] = default
    import torch

    genes = _check_genes(genes, None)
    states = []
    for fold in range(folds):
        torch.manual_seed(seed + fold)
        model = untrained_model(config, channels, preprocessing, len(genes))
        model.set_output_bias(genes["train_mean"].to_numpy())
        states.append(model.state_dict())
    metadata = BundleMetadata(
        channels=list(channels), preprocessing=preprocessing, model=config,
        training_cohort={"name": "untrained", "patients": 0,
                         "note": "random weights: for tests and demos only, not for use"})
    return load_bundle(write_bundle(path, states, metadata, genes))
