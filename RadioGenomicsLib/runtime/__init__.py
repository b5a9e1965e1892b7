"""Runtimes for prediction: torch, or the exported fold models on ONNX Runtime / OpenVINO.

Nothing here imports torch: a bundle exported with `radiogenomics export` (fold_<i>.onnx,
checksummed in its metadata.json) predicts with `onnxruntime` or `openvino` alone.

Every head of the model runs here (`head.py`): top-k, mean and gated-attention pooling,
with or without the tumour's geometry; the encoder is the exported ONNX either way.

Precision: `float32` everywhere; `bf16` (OpenVINO, or torch when asked for, on a CPU with
AVX-512 BF16 or AMX) for the transformer and the top-k head's matrix product, the CNN kept
in float32 (and the mean and attention heads too: a matrix-vector product). A reduced
precision is used only once it passed the check in `precision.py` on this machine.
`auto` picks, of what is installed and exported here, the fastest measured in
BENCHMARKS.md: openvino bf16, openvino float32, onnxruntime float32, then torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from RadioGenomicsLib.errors import InputError

RUNTIMES = ("torch", "onnxruntime", "openvino")
LIGHT_RUNTIMES = ("openvino", "onnxruntime")  # fastest first
PRECISIONS = ("float32", "bf16")
REDUCED = {"openvino": ("bf16",), "onnxruntime": (), "torch": ("bf16",)}  # torch: on a CPU
# what `auto` tries: torch keeps float32 unless bf16 is asked for (its values stay exact)
REDUCED_BY_AUTO = {"openvino": ("bf16",)}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def exported_file(fold: int) -> str:
    return f"fold_{fold}.onnx"


def is_installed(runtime: str) -> bool:
    module = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}[runtime]
    return importlib.util.find_spec(module) is not None


def has_exports(bundle, folds: str = "all") -> bool:
    return all(exported_file(f) in bundle.files for f in bundle.fold_indices(folds))


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """Compiled models and precision verdicts hold for this CPU only."""
    text = json.dumps([platform.machine(), cpu_name(), sorted(cpu_flags())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_folder() -> Path:
    """RADIOGENOMICS_CACHE, else the user's cache folder (XDG_CACHE_HOME or ~/.cache)."""
    if os.environ.get("RADIOGENOMICS_CACHE"):
        return Path(os.environ["RADIOGENOMICS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "radiogenomics"


def bundle_key(bundle) -> str:
    text = json.dumps([bundle.checksums, {k: v for k, v in sorted(bundle.files.items())}])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compiled_cache(bundle) -> Path:
    """Where OpenVINO keeps the compiled fold models of this bundle on this machine."""
    return cache_folder() / "openvino" / machine_key() / bundle_key(bundle)


def cuda_driver_present() -> bool:
    """A cheap look for an NVIDIA driver, without importing torch."""
    return Path("/proc/driver/nvidia/version").exists()


def light_problem(bundle) -> str | None:
    """Why the ONNX runtimes cannot run this bundle's head, or None (`head.POOLINGS`, with
    or without geometry: every head the model has today)."""
    from RadioGenomicsLib.runtime.head import POOLINGS

    if bundle.config.pooling not in POOLINGS:
        return (f"its head ({bundle.config.pooling} pooling) runs on torch only; the ONNX "
                f"runtimes run {', '.join(POOLINGS)} pooling")
    return None


def pick_runtime(bundle, requested: str = "auto", device: str = "auto", folds: str = "all") -> str:
    """The runtime to use: as asked (checked), or under `auto` a light one where the bundle
    is exported and one is installed, torch on a CUDA device or otherwise."""
    if requested not in ("auto", *RUNTIMES):
        raise InputError(None, f"--runtime {requested!r}: choose auto, {', '.join(RUNTIMES)}")
    if requested == "auto":
        if device == "cuda" or (device == "auto" and cuda_driver_present() and is_installed("torch")):
            return "torch"
        for runtime in LIGHT_RUNTIMES if has_exports(bundle, folds) and not light_problem(bundle) else ():
            if is_installed(runtime):
                return _checked(bundle, runtime, folds)
        return "torch"
    if not is_installed(requested):
        raise InputError(None, f"--runtime {requested}: the {requested} package is not installed "
                               f"(pip install 'radiogenomics[runtime]')")
    if requested != "torch":
        if device == "cuda":
            raise InputError(None, f"--runtime {requested} runs on the CPU here; use --runtime "
                                   f"torch for --device cuda")
        if light_problem(bundle):
            raise InputError(bundle.path, f"--runtime {requested}: {light_problem(bundle)}")
        missing = [exported_file(f) for f in bundle.fold_indices(folds)
                   if exported_file(f) not in bundle.files]
        if missing:
            raise InputError(bundle.path, f"has no exported fold models ({', '.join(missing)}) "
                                          f"for --runtime {requested}: run `radiogenomics "
                                          f"export {bundle.path}` once")
        return _checked(bundle, requested, folds)
    return requested


def _checked(bundle, runtime: str, folds: str) -> str:
    """Hash the exported files before any work: a changed one is refused up front."""
    for fold in bundle.fold_indices(folds):
        bundle.checked_file(exported_file(fold))
    return runtime


def fold_runners(bundle, runtime: str, precision: str = "float32",
                 folds: str = "all") -> Iterator:
    """The fold models as `runners.FoldRunner`s, built one at a time (memory)."""
    from RadioGenomicsLib.runtime.head import numpy_top_values, read_head
    from RadioGenomicsLib.runtime.runners import (FoldRunner, onnxruntime_encoder,
                                                  openvino_encoder, openvino_top_values)

    if runtime not in LIGHT_RUNTIMES:
        raise ValueError(f"fold_runners runs {', '.join(LIGHT_RUNTIMES)}, not {runtime!r}")
    if precision != "float32" and precision not in REDUCED[runtime]:
        raise InputError(None, f"--precision {precision}: {runtime} runs float32 only here")
    cache = compiled_cache(bundle)
    top_values = (openvino_top_values(precision, cache) if runtime == "openvino"
                  else numpy_top_values)
    for fold in bundle.fold_indices(folds):
        path = bundle.checked_file(exported_file(fold))
        bundle.verify(fold)  # the head's weights
        encoder = (openvino_encoder(path, precision, cache) if runtime == "openvino"
                   else onnxruntime_encoder(path))
        yield FoldRunner(encoder, *read_head(bundle.weight_path(fold), bundle.config, top_values))


def pick_precision(bundle, runtime: str, requested: str = "auto", folds: str = "all",
                   study_images: np.ndarray | None = None) -> str:
    """`float32`, or a reduced precision that passed the check (`precision.py`) here.
    Asked for explicitly and failing, it is refused with one line; under `auto` the
    fastest passing one is used."""
    from RadioGenomicsLib.runtime.precision import precision_verdict

    if requested not in ("auto", *PRECISIONS):
        raise InputError(None, f"--precision {requested!r}: choose auto, {', '.join(PRECISIONS)}")
    if requested == "float32":
        return "float32"
    candidates = (list(REDUCED_BY_AUTO.get(runtime, ())) if requested == "auto"
                  else [p for p in REDUCED.get(runtime, ()) if p == requested])
    if requested != "auto" and not candidates:
        raise InputError(None, f"--precision {requested}: {runtime} runs float32 only here")
    for precision in candidates:
        if precision == "bf16" and not cpu_has_bf16():
            if requested != "auto":
                raise InputError(None, f"--precision bf16: this CPU ({cpu_name()}) has no "
                                       f"AVX-512 BF16 or AMX")
            continue
        problem = precision_verdict(bundle, runtime, precision, folds, study_images)
        if problem is None:
            return precision
        if requested != "auto":
            raise InputError(bundle.path, f"--precision {precision} refused: {problem}")
    return "float32"
