"""A prediction run: one study through a bundle's fold models, kept as a folder.

Every face (the CLI's study and cohort paths, the Slicer module, the web viewer)
predicts through `predict_study` and reads its results from the run it writes:

    RUN/
      run.json            inputs (paths, sha256), bundle (path, fingerprint), units,
                          markers, settings, library version, timings
      genes.csv           the ranked gene table
      slices.npz          the model-ready tumour slices and where each pixel lies
      tumour.nrrd         the tumour mask on the study's own grid
      tokens.safetensors  each fold model's token embeddings, "fold_<i>": (S, T, hidden)
                          float16

Any gene's map is then the head's weights of that gene applied to the saved tokens and
averaged over the fold models (`run_maps`): nothing is read, preprocessed or encoded
again. torch is imported only by the torch fold runner.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Protocol, Sequence

import numpy as np
import SimpleITK as sitk

from RadioGenomicsLib import __version__
from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.outputs import mark_complete
from RadioGenomicsLib.errors import InputError, read_json_object
from RadioGenomicsLib.hashing import sha256_of_input
from RadioGenomicsLib.progress import progress

if TYPE_CHECKING:
    import pandas as pd

    from RadioGenomicsLib.bundle import Bundle
    from RadioGenomicsLib.preprocess import Slices

RUN_FORMAT = 1
RUN_FILE = "run.json"
TABLE_FILE = "genes.csv"
SLICES_FILE = "slices.npz"
TUMOUR_FILE = "tumour.nrrd"
TOKENS_FILE = "tokens.safetensors"
RUN_FILES = (RUN_FILE, TABLE_FILE, SLICES_FILE, TUMOUR_FILE, TOKENS_FILE)


@dataclass(frozen=True)
class StudyInputs:
    """The files of one study, as the command line names them."""

    images: Mapping[str, str | os.PathLike]  # channel -> file or DICOM folder
    segmentation: str | os.PathLike
    label: int | None = None
    segment: str | None = None
    brain_mask: str | os.PathLike | None = None
    series: Mapping[str, str] = field(default_factory=dict)  # channel -> DICOM series

    def load(self, channels: Sequence[str], keep_labels: bool = False):
        from RadioGenomicsLib.imaging import load_study

        return load_study(dict(self.images), self.segmentation, label=self.label,
                          segment=self.segment, brain_mask=self.brain_mask,
                          channels=tuple(channels), series=dict(self.series),
                          keep_labels=keep_labels)

    def describe(self) -> dict[str, Any]:
        """Absolute paths and content sha256 of every input, for run.json."""
        def entry(path: str | os.PathLike) -> dict[str, str]:
            return {"path": str(Path(path).resolve()), "sha256": sha256_of_input(Path(path))}

        return {"images": {name: {**entry(path), "series": self.series.get(name)}
                           for name, path in self.images.items()},
                "segmentation": entry(self.segmentation), "label": self.label,
                "segment": self.segment,
                "brain_mask": None if self.brain_mask is None else entry(self.brain_mask)}


class FoldRunner(Protocol):
    """One fold model: slices (S, C, H, W) -> tokens (S, T, hidden) float32 and gene
    values (genes,); a model with geometry also takes the tumour's geometry values.
    Another runtime plugs in by giving the same method."""

    def run(self, images: np.ndarray, geometry: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]: ...


class TorchFoldRunner:
    """One fold model on torch; `precision` bf16 (a CPU): see GenePredictor.set_precision."""

    def __init__(self, bundle: "Bundle", fold: int, device, precision: str = "float32"):
        import torch

        self.device = torch.device(device)
        self.model = bundle.model(fold, self.device).set_precision(precision)

    def _tokens(self, images: np.ndarray):
        """(S, C, H, W) -> tokens (1, S, T, hidden), the slice mask and (tumour pooling)
        each token's share of tumour, on the device."""
        import torch

        from RadioGenomicsLib.model.predictor import slices_per_pass

        x = torch.from_numpy(np.ascontiguousarray(images))[None].to(self.device)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=self.device)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                             enabled=self.device.type == "cuda"):
            return (self.model.encode(x, mask, slices_per_pass(self.device)), mask,
                    self.model.token_shares(x))

    def _values(self, tokens, mask, geometry, shares) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model.predict_genes(tokens, mask, geometry, token_shares=shares)[0] \
                .float().cpu().numpy()

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(S, C, H, W) -> tokens (S, T, hidden) float32, for the precision check."""
        return self._tokens(images)[0][0].float().cpu().numpy()

    def gene_values(self, tokens: np.ndarray, images: np.ndarray) -> np.ndarray:
        """The slices' tokens -> gene values without the geometry term (the same at every
        precision; tumour pooling reads the slices' mask)."""
        import torch

        x = torch.from_numpy(tokens)[None].to(self.device)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=self.device)
        # the geometry's training mean standardises to 0: no geometry term
        geometry = self.model.geometry_mean[None] if self.model.config.geometry else None
        shares = self.model.token_shares(torch.from_numpy(images)[None].to(self.device))
        return self._values(x, mask, geometry, shares)

    def run(self, images: np.ndarray, geometry: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        tokens, mask, shares = self._tokens(images)
        shape = None if geometry is None else torch.from_numpy(geometry)[None].to(self.device)
        return tokens[0].float().cpu().numpy(), self._values(tokens, mask, shape, shares)


def torch_runners(bundle: "Bundle", device, folds: str = "all",
                  precision: str = "float32") -> Iterator[TorchFoldRunner]:
    """The fold models loaded in turn: a paper model takes ~0.4 GB, five at once 2 GB."""
    for fold in bundle.fold_indices(folds):
        yield TorchFoldRunner(bundle, fold, device, precision)


def settled_runners(bundle: "Bundle", run: "PredictionRun", device: str = "auto") -> list:
    """All fold runners at once, on the runtime and precision that `run` settled: for the
    studies of a cohort after its first."""
    from RadioGenomicsLib.predict import choose_device
    from RadioGenomicsLib.runtime import fold_runners

    settings = run.info["settings"]
    if settings["runtime"] == "torch":
        precision = "bf16" if settings["precision"] == "bf16" else "float32"  # CPU bf16 only
        return list(torch_runners(bundle, choose_device(device), settings["folds"], precision))
    return list(fold_runners(bundle, settings["runtime"], settings["precision"], settings["folds"]))


# ---------------------------------------------------------------- a run on disk


@dataclass
class PredictionRun:
    """A run folder, checked; its parts are read when first used."""

    path: Path
    info: dict[str, Any]

    @property
    def folds(self) -> list[int]:
        return list(self.info["settings"]["fold_indices"])

    @property
    def units(self) -> dict[str, str]:
        return dict(self.info["units"])

    @property
    def markers(self) -> list[str]:
        return list(self.info["markers"])

    @cached_property
    def table(self) -> "pd.DataFrame":
        from RadioGenomicsLib.predict import read_table

        return read_table(self.path / TABLE_FILE)

    @cached_property
    def slices(self) -> "Slices":
        from RadioGenomicsLib.preprocess import Slices

        return Slices.load(self.path / SLICES_FILE)

    @cached_property
    def tumour(self) -> sitk.Image:
        return sitk.ReadImage(str(self.path / TUMOUR_FILE))

    def tokens(self, fold: int) -> np.ndarray:
        """(S, T, hidden) float16 token embeddings of one fold model."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(self.path / TOKENS_FILE), framework="numpy") as file:
                return file.get_tensor(f"fold_{fold}")
        except (SafetensorError, OSError) as error:
            raise InputError(self.path / TOKENS_FILE, f"unreadable tokens ({error})") from None


def _weights_stat(bundle: "Bundle") -> dict[str, list[int]]:
    """Size and modification time of each weight file, as verified when the run was made."""
    stats = {name: (bundle.path / name).stat() for name in bundle.checksums}
    return {name: [stat.st_size, stat.st_mtime_ns] for name, stat in stats.items()}


def _check_run_folder(path: Path) -> None:
    """A run folder is replaced only when it holds an earlier run (never anything else)."""
    if path.exists() and not path.is_dir():
        raise InputError(path, "exists and is not a folder: the prediction run is a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / RUN_FILE).is_file():
        raise InputError(path, "exists and is not a prediction run: refusing to replace it "
                               "(give --run a new or empty folder)")


def predict_study(bundle: "Bundle", inputs: StudyInputs, run_dir: str | os.PathLike,
                  device: str = "auto", folds: str = "all",
                  runners: Sequence[FoldRunner] | None = None, runtime: str = "auto",
                  precision: str = "auto") -> PredictionRun:
    """Read and preprocess the study, run every fold model once, write the run folder.

    `runtime` (torch, onnxruntime, openvino or auto) and `precision` (float32, bf16 or
    auto) as `runtime.pick_runtime` and `runtime.pick_precision` settle them (the study's
    slices serve the precision check when the bundle keeps no reference slices).
    `runners` (one per fold of `folds`, in order) lets a caller keep the fold models
    loaded across studies (a cohort), made for the runtime and precision it passes here
    (settled ones: see `settled_runners`); by default they are loaded one at a time.
    """
    from RadioGenomicsLib.runtime import fold_runners, pick_precision, pick_runtime

    from RadioGenomicsLib.predict import (check_bundle_fits, choose_device, gene_table,
                                          write_table)
    from RadioGenomicsLib.preprocess import PreprocessSettings, preprocess

    run_dir = Path(run_dir)
    _check_run_folder(run_dir)
    fold_indices = list(bundle.fold_indices(folds))
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    if runners is None:  # before the work: a runtime that cannot run fails at once
        runtime = pick_runtime(bundle, runtime, device, folds)
    elif runtime == "auto" or precision == "auto":
        raise ValueError("with runners, give the runtime and precision they were made for")
    settings = PreprocessSettings.from_dict(bundle.metadata.preprocessing)
    study = inputs.load(bundle.channels, keep_labels=bool(settings.region_labels))
    mark = lap("read_s", started)
    slices = preprocess(study, settings)
    check_bundle_fits(bundle, slices)
    mark = lap("preprocess_s", mark)
    torch_device = None
    if runners is None:
        if runtime == "torch":
            torch_device = choose_device(device)
            precision = ("bf16-autocast" if torch_device.type == "cuda"  # the runner's autocast
                         else pick_precision(bundle, runtime, precision, folds, slices.images))
            runners = torch_runners(bundle, torch_device, folds,
                                    "bf16" if precision == "bf16" else "float32")
        else:
            precision = pick_precision(bundle, runtime, precision, folds, slices.images)
            runners = fold_runners(bundle, runtime, precision, folds)
    chosen = runners
    tokens, values = {}, []
    for fold, runner in zip(fold_indices, progress(chosen, "fold models", total=len(fold_indices),
                                                   disable=len(fold_indices) == 1)):
        fold_tokens, fold_values = (runner.run(slices.images, slices.geometry())
                                    if bundle.config.geometry else runner.run(slices.images))
        tokens[f"fold_{fold}"] = fold_tokens.astype(np.float16)
        values.append(fold_values)
    if len(values) != len(fold_indices):
        raise ValueError(f"{len(values)} fold runners for {len(fold_indices)} folds")
    mark = lap("models_s", mark)
    table = gene_table(bundle, np.asarray(values))
    info = {
        "format_version": RUN_FORMAT, "library_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs.describe(),
        "bundle": {"path": str(bundle.path.resolve()), "name": bundle.card.name,
                   "fingerprint": bundle.fingerprint, "format_version": bundle.format_version,
                   "library_version": bundle.library_version, "weights": _weights_stat(bundle)},
        "channels": list(bundle.channels), "units": bundle.units, "markers": list(bundle.markers),
        "settings": {"device": str(torch_device or ("cpu" if runtime != "torch" else device)),
                     "runtime": runtime, "precision": precision, "folds": folds,
                     "fold_indices": fold_indices, "preprocessing": slices.settings,
                     "token_dtype": "float16"},
        "slices": int(len(slices.images)), "grid": int(bundle.config.grid_size),
        "geometry": [float(v) for v in slices.geometry()],
        "genes": int(len(table)), "timings": timings,
    }
    _write_run(run_dir, info, table, slices, study.tumour, tokens, write_table, lap, mark)
    return PredictionRun(run_dir, info)


def _write_run(run_dir: Path, info: dict, table, slices, tumour: sitk.Image,
               tokens: dict[str, np.ndarray], write_table, lap, mark: float) -> None:
    import json

    from safetensors.numpy import save_file

    with atomic_path(run_dir) as tmp:
        tmp.mkdir()
        write_table(table, tmp / TABLE_FILE)
        slices.save(tmp / SLICES_FILE)
        sitk.WriteImage(tumour, str(tmp / TUMOUR_FILE), useCompression=True)
        save_file(tokens, str(tmp / TOKENS_FILE))
        lap("write_s", mark)
        info["timings"]["total_s"] = round(sum(info["timings"].values()), 3)
        (tmp / RUN_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        mark_complete(tmp, "predict")  # last: outputs.py lets a later predict replace it


def open_run(path: str | os.PathLike, bundle: "Bundle | None" = None) -> tuple[PredictionRun, "Bundle"]:
    """A run folder and the bundle that made it (`bundle`, or the one run.json names),
    refused when the bundle's content changed since (its fingerprint differs)."""
    from RadioGenomicsLib.bundle import load_bundle

    path = Path(path)
    if not (path / RUN_FILE).is_file():
        raise InputError(path, f"not a prediction run: no {RUN_FILE} (made by "
                               "`radiogenomics predict --run DIR`)")
    info = read_json_object(path / RUN_FILE)
    if info.get("format_version") != RUN_FORMAT:
        raise InputError(path / RUN_FILE, f"run format {info.get('format_version')!r}: this "
                                          f"RadioGenomics {__version__} reads format {RUN_FORMAT}")
    missing = [name for name in RUN_FILES if not (path / name).is_file()]
    if missing:
        raise InputError(path, f"incomplete prediction run: no {', '.join(missing)}")
    recorded = info["bundle"]
    if bundle is None:
        bundle = load_bundle(recorded["path"], verify_checksums=False)
    if bundle.fingerprint != recorded["fingerprint"]:
        raise InputError(bundle.path, f"is not the bundle that made the run {path} (its "
                                      "metadata or gene table changed since): predict again")
    bundle.trust_unchanged(recorded.get("weights", {}))
    return PredictionRun(path, info), bundle


def head_rows(bundle: "Bundle", fold: int, genes: Sequence[int],
              geometry: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The gene layer's weights (n, hidden) and biases (n,) of `genes` in one fold model,
    read from its safetensors file without loading the rest; for a model with geometry
    the bias holds the share of the tumour's `geometry` too (the same on every token)."""
    from safetensors import safe_open

    bundle.verify(fold)
    with safe_open(str(bundle.weight_path(fold)), framework="numpy") as file:
        weight, bias = file.get_slice("head.conv.weight"), file.get_slice("head.conv.bias")
        rows = np.stack([weight[g:g + 1][0, :, 0] for g in genes]).astype(np.float32)
        biases = np.array([bias[g:g + 1][0] for g in genes], dtype=np.float32)
        if bundle.config.geometry:
            if geometry is None:
                raise ValueError("a model with geometry needs the tumour's geometry values")
            shares = file.get_slice("head.geometry.weight")
            standardised = ((np.asarray(geometry, np.float32) - file.get_tensor("geometry_mean"))
                            / file.get_tensor("geometry_std"))
            biases += np.stack([shares[g:g + 1][0] for g in genes]) @ standardised
        return rows, biases


def token_maps(run: PredictionRun, bundle: "Bundle", genes: Sequence[int]) -> np.ndarray:
    """(n_genes, S, grid, grid): each token's value of each gene, mean over the fold models."""
    from RadioGenomicsLib.runtime.head import PooledHead, map_tokens

    grid = int(run.info["grid"])
    total = None
    for fold in run.folds:
        weight, bias = head_rows(bundle, fold, genes, run.info.get("geometry"))
        tokens = run.tokens(fold).astype(np.float32)  # (S, T, channels)
        if bundle.config.stem_texture:
            head = PooledHead.from_safetensors(bundle.weight_path(fold), bundle.config)
            tokens = map_tokens(tokens, bundle.config, head.embedding(tokens, run.slices.images))
        values = tokens @ weight.T + bias  # (S, T, n)
        total = values if total is None else total + values
    mean = total / len(run.folds)
    return np.moveaxis(mean, -1, 0).reshape(len(genes), len(mean), grid, grid)


def _attention_weights(bundle: "Bundle", fold: int, tokens: np.ndarray) -> np.ndarray:
    """(S, T, hidden) tokens -> (S, T) gated-attention weights of one fold model (summing
    to 1 over the patient's tokens), from its safetensors file."""
    from RadioGenomicsLib.runtime.head import GatedAttention

    bundle.verify(fold)
    attention = GatedAttention.from_safetensors(bundle.weight_path(fold))
    flat = tokens.reshape(-1, tokens.shape[-1]).astype(np.float32)
    return attention.weights(flat).reshape(tokens.shape[:2])


def attention_map(run: PredictionRun, bundle: "Bundle", margin_mm: float = 0.0) -> sitk.Image:
    """Where an attention-pooling model looked: each token's attention weight (mean over
    the fold models), carried onto the study's grid."""
    if bundle.config.pooling != "attention":
        raise InputError(bundle.path, f"the model pools its tokens by {bundle.config.pooling}, "
                                      "not attention: it has no attention map")
    grid = int(run.info["grid"])
    weights = np.mean([_attention_weights(bundle, fold, run.tokens(fold)) for fold in run.folds],
                      axis=0)
    return tumour_map(weights.reshape(len(weights), grid, grid), run, margin_mm)


def tumour_map(values: np.ndarray, run: PredictionRun, margin_mm: float = 0.0,
               fill_gaps: bool = True) -> sitk.Image:
    """(S, grid, grid) token values of the run's slices as a map on the study's grid:
    interpolated between the tokens, in the tumour (+ margin) only, NaN elsewhere."""
    from RadioGenomicsLib.maps import restrict_to_tumour, values_to_volume

    volume = values_to_volume(values, run.slices, empty=np.nan)
    return restrict_to_tumour(volume, run.tumour, margin_mm, fill_gaps)


def run_maps(run: PredictionRun, bundle: "Bundle", genes: Sequence[str],
             margin_mm: float = 0.0, fill_gaps: bool = True) -> dict[str, sitk.Image]:
    """Gene (symbol or Ensembl id, as asked) -> its map on the study's grid: in the
    tumour (+ `margin_mm`), NaN outside; tumour slices the model did not see take the
    nearest encoded slice's values unless `fill_gaps` is False (then NaN)."""
    from RadioGenomicsLib.predict import map_gene_indices

    indices = map_gene_indices(bundle, list(genes))
    values = token_maps(run, bundle, indices)
    names = [bundle.genes["gene_name"].iat[i] or bundle.genes["gene_id"].iat[i] for i in indices]
    return {name: tumour_map(grid, run, margin_mm, fill_gaps) for name, grid in zip(names, values)}


def run_study_image(run: PredictionRun) -> sitk.Image | None:
    """The study's first channel as the run read it, or None when it is no longer there."""
    from RadioGenomicsLib.imaging import read_volume

    source = run.info["inputs"]["images"][run.info["channels"][0]]
    try:
        return read_volume(source["path"], source.get("series"))
    except InputError:
        return None


def save_run_picture(run: PredictionRun, maps: Mapping[str, sitk.Image],
                     path: str | os.PathLike) -> list[dict]:
    """The maps over the study on slices through the tumour, as a PNG (see
    `preview.map_figure`); without the study's image when it moved since the run."""
    from RadioGenomicsLib.preview import save_map_picture

    study = run_study_image(run)
    channel = run.info["channels"][0]
    title = (f"gene maps over {channel if study is not None else 'no image (the study moved)'}"
             f"; red: the tumour; position: mm along the slice normal; {run.info['bundle']['name']}")
    return save_map_picture(maps, run.tumour, study, run.units["predicted"], path, title)


def write_maps(maps: Mapping[str, sitk.Image], folder: str | os.PathLike,
               suffix: str = ".nrrd") -> list[Path]:
    from RadioGenomicsLib.maps import write_volume
    from RadioGenomicsLib.predict import ensure_writable_folder, map_file_name

    out = ensure_writable_folder(folder)
    written = []
    for name, volume in maps.items():
        written.append(out / map_file_name(name, suffix))
        write_volume(volume, written[-1])
    return written
