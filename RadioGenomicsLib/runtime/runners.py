"""Fold models on ONNX Runtime or OpenVINO (CPU): encode slices -> tokens, tokens -> genes.

Each fold's encoder is its exported `fold_<i>.onnx` (slices (N, C, H, W) -> tokens (N, T,
hidden), float32); the gene head (top-k, mean or attention pooling, and the geometry
shift) is read from `fold_<i>.safetensors` (`head.read_head`). At `bf16` (OpenVINO, a CPU
with AVX-512 BF16 or AMX) the encoder is split at the tensor the export names
`cnn_features`: the CNN stays float32 (whether it tolerates bf16 needs a trained bundle to
judge), the transformer runs in bf16, and so does the top-k head's matrix product (the
pooled heads stay float32: a matrix-vector product).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from RadioGenomicsLib.runtime.head import GeometryShift, Head, TopValues, numpy_top_values

CNN_FEATURES = "cnn_features"  # the tensor between the CNN and the transformer (see export)
SLICES_PER_PASS = 8  # as the torch path on a CPU: bounds the encoder's activation memory

Encoder = Callable[[np.ndarray], np.ndarray]


def thread_limit() -> int | None:
    """RADIOGENOMICS_THREADS: the threads a runtime may use (set for each worker of a
    cohort so that the workers share the cores); None: the runtime's default."""
    value = os.environ.get("RADIOGENOMICS_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class FoldRunner:
    """One fold model (`run.FoldRunner`): `run` (S, C, H, W) slices -> tokens (S, T,
    hidden) float32 and gene values (genes,), with the tumour's `geometry` for a model
    that has it; also `encode` and `gene_values` (the head without geometry) apart."""

    def __init__(self, encoder: Encoder, head: Head, geometry: GeometryShift | None = None):
        self.encoder, self.head, self.geometry = encoder, head, geometry

    def encode(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        return np.concatenate([self.encoder(images[i:i + SLICES_PER_PASS])
                               for i in range(0, len(images), SLICES_PER_PASS)])

    def gene_values(self, tokens: np.ndarray, images: np.ndarray) -> np.ndarray:
        """The head on the slices' tokens (tumour pooling reads the slices' mask)."""
        return self.head.gene_values(tokens, images)

    def run(self, images: np.ndarray, geometry: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        if (geometry is None) != (self.geometry is None):
            raise ValueError("geometry values go with a model with geometry, and only with it")
        tokens = self.encode(images)
        values = self.gene_values(tokens, images)
        if self.geometry is not None:
            values = values + self.geometry(geometry)
        return tokens, values


def onnxruntime_encoder(path: Path) -> Encoder:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if thread_limit():
        options.intra_op_num_threads = thread_limit()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"slices": images})[0]


def _openvino_core(cache_dir: Path | None):
    import openvino

    core = openvino.Core()
    if thread_limit():
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": thread_limit()})
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(cache_dir)})
    return core


def _split_at_features(core, path: Path):
    """(CNN model slices -> features, transformer model features -> tokens) from one ONNX."""
    import openvino

    def features_of(model):
        for op in model.get_ordered_ops():
            for output in op.outputs():
                if CNN_FEATURES in output.get_names():
                    return output
        raise ValueError(f"{path}: no tensor named {CNN_FEATURES!r}; re-export the bundle")

    whole = core.read_model(str(path))
    cnn = openvino.Model([features_of(whole)], whole.get_parameters(), "cnn")
    rest = core.read_model(str(path))
    features = features_of(rest)
    shape = features.get_partial_shape()
    shape[0] = openvino.Dimension.dynamic()
    parameter = openvino.opset13.parameter(shape, openvino.Type.f32, name=CNN_FEATURES)
    for target in list(features.get_target_inputs()):
        target.replace_source_output(parameter.output(0))
    return cnn, openvino.Model(rest.outputs, [parameter], "transformer")


def openvino_encoder(path: Path, precision: str, cache_dir: Path | None) -> Encoder:
    core = _openvino_core(cache_dir)
    if precision == "float32":
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda images: compiled(images)[0]
    cnn, transformer = _split_at_features(core, path)
    cnn = core.compile_model(cnn, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    transformer = core.compile_model(transformer, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    return lambda images: transformer(cnn(images)[0])[0]


def openvino_top_values(precision: str, cache_dir: Path | None) -> TopValues:
    """The head's matrix product and top-k as one OpenVINO graph at `precision`."""
    if precision == "float32":
        return numpy_top_values  # numpy's float32 product was as fast as OpenVINO's here
    import openvino
    from openvino import opset13 as ops

    core = _openvino_core(cache_dir)
    compiled: dict[int, object] = {}

    def top_values(weight: np.ndarray, tokens: np.ndarray, k: int) -> np.ndarray:
        if k not in compiled:
            weight_in = ops.parameter([-1, weight.shape[1]], openvino.Type.f32, name="weight")
            tokens_in = ops.parameter([-1, weight.shape[1]], openvino.Type.f32, name="tokens")
            products = ops.matmul(weight_in, tokens_in, False, True)
            top = ops.topk(products, ops.constant(np.int64(k)), axis=1, mode="max", sort="value")
            model = openvino.Model([top.output(0)], [weight_in, tokens_in], "gene_head")
            compiled[k] = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        return compiled[k]([weight, tokens])[0].astype(np.float32, copy=True)

    return top_values
