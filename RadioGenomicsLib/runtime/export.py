"""Export a bundle's fold models for the ONNX runtimes (needs torch, onnx and onnxscript).

Each fold's encoder (slices (N, C, H, W) -> tokens (N, T, hidden), N free) is written as
`fold_<i>.onnx` by torch's ONNX exporter, checked against torch on random slices with
ONNX Runtime (relative error of the tokens <= 1e-4), and registered with its sha256 in the
bundle's metadata.json. The weight-standardised convolutions are exported with their
standardised weights (what they compute in eval), and the tensor between the CNN and the
transformer is named `cnn_features` so that a runner can run the two at different
precisions. Folds sharing one encoder (a frozen encoder: the `frozen-ridge` recipe) share
one export, copied. The head stays in the safetensors file (`head.py` runs it).
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from pathlib import Path
from typing import Literal

import numpy as np

from RadioGenomicsLib.atomic import atomic_path
from RadioGenomicsLib.runtime import exported_file
from RadioGenomicsLib.runtime.runners import CNN_FEATURES

MAX_RELATIVE_ERROR = 1e-4
CHECK_SLICES = 3
EMBEDDING_WEIGHT = "embedding.patch_embeddings.weight"  # the first op after the CNN


def plain_encoder(encoder):
    """A copy of the encoder whose weight-standardised convolutions are plain ones holding
    the standardised weights: the same outputs, and a simpler graph to export."""
    import torch
    from torch import nn

    from RadioGenomicsLib.model import WeightStandardizedConv2d

    encoder = copy.deepcopy(encoder).eval()
    for module in list(encoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, WeightStandardizedConv2d):
                conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                                 stride=child.stride, padding=child.padding,
                                 bias=child.bias is not None)
                with torch.no_grad():
                    conv.weight.copy_(child.standardized_weight())
                    if child.bias is not None:
                        conv.bias.copy_(child.bias)
                setattr(module, name, conv)
    return encoder


def _name_cnn_features(model) -> None:
    """Rename the CNN's output tensor (the input of the patch embedding) to CNN_FEATURES."""
    graph = model.graph
    embedding = [n for n in graph.node if n.op_type == "Conv" and n.input[1] == EMBEDDING_WEIGHT]
    if len(embedding) != 1:
        raise RuntimeError(f"found {len(embedding)} patch-embedding convolutions in the export")
    old = embedding[0].input[0]
    for node in graph.node:
        node.input[:] = [CNN_FEATURES if name == old else name for name in node.input]
        node.output[:] = [CNN_FEATURES if name == old else name for name in node.output]
    for info in graph.value_info:
        if info.name == old:
            info.name = CNN_FEATURES


def export_encoder(model, path: str | os.PathLike, seed: int = 0) -> float:
    """Write `model.encoder` (a GenePredictor's) as ONNX at `path`; -> the relative error
    of its tokens against torch's on random slices (refused above MAX_RELATIVE_ERROR)."""
    import onnx
    import torch

    encoder = plain_encoder(model.encoder)
    size = model.config.image_size
    example = torch.zeros(2, model.in_channels, size, size)
    slices = torch.export.Dim("slices", min=1, max=4096)
    path = Path(path)
    with atomic_path(path) as tmp:
        program = torch.onnx.export(encoder, (example,), input_names=["slices"],
                                    output_names=["tokens"], dynamic_shapes={"images": {0: slices}},
                                    dynamo=True, optimize=True, verbose=False)
        proto = program.model_proto
        _name_cnn_features(proto)
        onnx.save_model(proto, str(tmp))
        error = _relative_error(model, tmp, seed)
        if not error <= MAX_RELATIVE_ERROR:
            raise RuntimeError(f"{path}: exported tokens differ from torch's (relative error "
                               f"{error:.2e} > {MAX_RELATIVE_ERROR})")
    return error


def _relative_error(model, path: Path, seed: int) -> float:
    import onnxruntime
    import torch

    size = model.config.image_size
    images = np.random.default_rng(seed).standard_normal(
        (CHECK_SLICES, model.in_channels, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = model.encoder(torch.from_numpy(images)).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokens = session.run(None, {"slices": images})[0]
    return float(np.linalg.norm(tokens - expected) / np.linalg.norm(expected))


def export_bundle(bundle_path: str | os.PathLike,
                  folds: Literal["all", "first"] = "all") -> dict[str, float]:
    """Export the bundle's fold models next to their weights; -> file name: relative error."""
    from RadioGenomicsLib.bundle import load_bundle, register_files
    from RadioGenomicsLib.progress import progress

    bundle = load_bundle(bundle_path)
    errors, done = {}, {}  # encoder weights' digest -> the file exported for them
    for fold in progress(bundle.fold_indices(folds), "exporting fold models"):
        name = exported_file(fold)
        model = bundle.model(fold)
        digest = encoder_digest(model)
        if digest in done:  # a frozen encoder shared by the folds: the same graph
            with atomic_path(bundle.path / name) as tmp:
                shutil.copyfile(bundle.path / done[digest], tmp)
            errors[name] = errors[done[digest]]
        else:
            errors[name] = export_encoder(model, bundle.path / name, seed=fold)
            done[digest] = name
    register_files(bundle.path, list(errors))
    return errors


def encoder_digest(model) -> str:
    """sha256 over the encoder's parameters and buffers (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.encoder.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
