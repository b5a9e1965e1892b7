"""Import TransUNet's ImageNet-21k weights (`R50+ViT-B_16.npz`, the ViT jax checkpoint).

Key names and layouts are those of the published file: convolution kernels HWIO,
dense kernels (in, out), attention kernels (hidden, heads, head_dim) and
(heads, head_dim, hidden). The model's 8 layers take the checkpoint's first 8 of 12;
the first convolution is adapted to the channel count (the RGB mean, repeated: weight
standardisation makes the scale irrelevant); position embeddings lose the class token
and are resized when the token grids differ.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from RadioGenomicsLib.bundle import refuse_pickle
from RadioGenomicsLib.errors import InputError
from RadioGenomicsLib.model import GenePredictor, HybridEncoder

Convert = Callable[[np.ndarray], torch.Tensor]
BLOCK = "Transformer/encoderblock_{}"


def _conv(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW


def _vector(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.reshape(-1).copy())


def _dense(kernel: np.ndarray) -> torch.Tensor:
    if kernel.ndim != 2:
        raise ValueError(f"expected a 2-D dense kernel, got shape {kernel.shape}")
    return torch.from_numpy(kernel.T.copy())  # (in, out) -> (out, in)


def _attention_in(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(kernel.reshape(kernel.shape[0], -1).T.copy())  # (hidden, heads, d)


def _attention_out(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(kernel.reshape(-1, kernel.shape[-1]).T.copy())  # (heads, d, hidden)


def _root_conv(in_channels: int) -> Convert:
    def convert(kernel: np.ndarray) -> torch.Tensor:
        weight = _conv(kernel)
        if weight.shape[1] == in_channels:
            return weight
        return weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
    return convert


def _position_embedding(grid: int) -> Convert:
    def convert(table: np.ndarray) -> torch.Tensor:
        tokens = torch.from_numpy(table.reshape(-1, table.shape[-1]).copy())
        if round(np.sqrt(len(tokens) - 1)) ** 2 == len(tokens) - 1:
            tokens = tokens[1:]  # the class token has no place in a token grid
        old = round(np.sqrt(len(tokens)))
        if old**2 != len(tokens):
            raise ValueError(f"{len(tokens)} position embeddings are not a square grid")
        if old != grid:
            image = tokens.T.reshape(1, -1, old, old)
            image = F.interpolate(image, size=(grid, grid), mode="bilinear", align_corners=False)
            tokens = image.reshape(-1, grid * grid).T
        return tokens[None]
    return convert


def _resnet_entries(encoder: HybridEncoder, in_channels: int) -> Iterator[tuple[str, str, Convert]]:
    yield "conv_root/kernel", "cnn.conv1.weight", _root_conv(in_channels)
    yield "gn_root/scale", "cnn.bn1.weight", _vector
    yield "gn_root/bias", "cnn.bn1.bias", _vector
    for stage, blocks in enumerate(encoder.config.resnet_layers, start=1):
        for unit in range(blocks):
            source, target = f"block{stage}/unit{unit + 1}", f"cnn.layer{stage}.{unit}"
            for i in (1, 2, 3):
                yield f"{source}/conv{i}/kernel", f"{target}.conv{i}.weight", _conv
                yield f"{source}/gn{i}/scale", f"{target}.bn{i}.weight", _vector
                yield f"{source}/gn{i}/bias", f"{target}.bn{i}.bias", _vector
            if unit == 0:
                yield f"{source}/conv_proj/kernel", f"{target}.downsample.0.weight", _conv
                yield f"{source}/gn_proj/scale", f"{target}.downsample.1.weight", _vector
                yield f"{source}/gn_proj/bias", f"{target}.downsample.1.bias", _vector


def _transformer_entries(encoder: HybridEncoder) -> Iterator[tuple[str, str, Convert]]:
    yield "embedding/kernel", "embedding.patch_embeddings.weight", _conv
    yield "embedding/bias", "embedding.patch_embeddings.bias", _vector
    yield ("Transformer/posembed_input/pos_embedding", "embedding.position_embeddings",
           _position_embedding(encoder.config.grid_size))
    yield "Transformer/encoder_norm/scale", "norm.weight", _vector
    yield "Transformer/encoder_norm/bias", "norm.bias", _vector
    for layer in range(encoder.config.num_layers):
        source, target = BLOCK.format(layer), f"blocks.{layer}"
        for norm, ours in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            yield f"{source}/{norm}/scale", f"{target}.{ours}.weight", _vector
            yield f"{source}/{norm}/bias", f"{target}.{ours}.bias", _vector
        for dense, ours in (("Dense_0", "linear1"), ("Dense_1", "linear2")):
            yield f"{source}/MlpBlock_3/{dense}/kernel", f"{target}.mlp.{ours}.weight", _dense
            yield f"{source}/MlpBlock_3/{dense}/bias", f"{target}.mlp.{ours}.bias", _vector
        attention = f"{source}/MultiHeadDotProductAttention_1"
        yield f"{attention}/out/kernel", f"{target}.attn.out_proj.weight", _attention_out
        yield f"{attention}/out/bias", f"{target}.attn.out_proj.bias", _vector


def _qkv_entries(encoder: HybridEncoder) -> Iterator[tuple[tuple[str, ...], str, Callable]]:
    """MONAI keeps query, key and value in one linear layer, stacked in that order."""
    for layer in range(encoder.config.num_layers):
        attention = f"{BLOCK.format(layer)}/MultiHeadDotProductAttention_1"
        for part, ours, convert in (("kernel", "weight", _attention_in), ("bias", "bias", _vector)):
            keys = tuple(f"{attention}/{name}/{part}" for name in ("query", "key", "value"))
            yield keys, f"blocks.{layer}.attn.qkv.{ours}", \
                lambda *arrays, convert=convert: torch.cat([convert(a) for a in arrays])


def _get(checkpoint: dict[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    if key not in checkpoint:
        raise InputError(path, f"not a TransUNet R50+ViT checkpoint for this model: no key {key!r}")
    return checkpoint[key]


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an .npz checkpoint (never unpickled)."""
    path = Path(path)
    refuse_pickle(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise InputError(path, f"not a readable .npz checkpoint ({error})") from None


def _entries(encoder: HybridEncoder) -> Iterator[tuple[tuple[str, ...], str, Callable]]:
    """(checkpoint keys, parameter name, arrays -> tensor) for every encoder parameter."""
    in_channels = encoder.cnn.conv1.in_channels
    for key, name, convert in [*_resnet_entries(encoder, in_channels), *_transformer_entries(encoder)]:
        yield (key,), name, convert
    yield from _qkv_entries(encoder)


def load_transunet_weights(model: GenePredictor | HybridEncoder, path: str | os.PathLike) -> list[str]:
    """Copy the checkpoint's weights into the encoder; returns the checkpoint keys left unused
    (class token, classifier, layers beyond the model's). Raises InputError when a key the
    model needs is missing or does not fit; the model is unchanged then."""
    path = Path(path)
    encoder = model.encoder if isinstance(model, GenePredictor) else model
    checkpoint = read_checkpoint(path)
    params = dict(encoder.named_parameters())
    updates: dict[str, torch.Tensor] = {}
    for keys, name, convert in _entries(encoder):
        try:
            value = convert(*(_get(checkpoint, key, path) for key in keys))
        except ValueError as error:
            raise InputError(path, f"{keys[0]}: {error}") from None
        if value.shape != params[name].shape:
            raise InputError(path, f"{keys[0]}: gives shape {tuple(value.shape)} but the model's "
                                   f"{name} is {tuple(params[name].shape)} (use the `paper` setting)")
        updates[name] = value
    missing = sorted(set(params) - set(updates))
    if missing:  # a bug here, not bad input: every parameter must have a source
        raise RuntimeError(f"no checkpoint key maps onto {missing}")
    with torch.no_grad():
        for name, value in updates.items():
            params[name].copy_(value)
    used = {key for keys, _, _ in _entries(encoder) for key in keys}
    return sorted(set(checkpoint) - used)
