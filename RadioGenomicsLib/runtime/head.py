"""The gene heads without torch, for one patient (no padding), as `model.head` and
`model.predictor` compute them:

- top-k (HE2RNA): a 1x1 convolution is a matrix product, then the mean of the top-k token
  values per gene. Genes are taken in chunks so that genes x tokens values stay within the
  model's memory budget. The product and the top-k selection are a pluggable `top_values`
  (numpy here; the OpenVINO runner brings a bf16 one).
- mean, gated-attention or tumour pooling: the tokens' (weighted) mean is the patient
  embedding, the gene layer W e + b gives the values (float32: one matrix-vector
  product, nothing worth a reduced precision).
- geometry: a linear function of the tumour's standardised geometry, added per gene.

The weights come from the fold's safetensors file (read as numpy arrays).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from RadioGenomicsLib.model.config import CORE_TRACE

BYTES_PER_VALUE = 4
# (weight chunk (g, hidden), tokens (n, hidden), k) -> (g, k) the k largest of weight @ tokens.T,
# in descending order
TopValues = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def numpy_top_values(weight: np.ndarray, tokens: np.ndarray, k: int) -> np.ndarray:
    products = weight @ tokens.T
    # introselect then a sort of the k kept: several times faster than a full sort
    products.partition(products.shape[1] - k, axis=1)
    return -np.sort(-products[:, -k:], axis=1)


def top_k_means(top: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """(g, k_max) values in descending order -> (g,) mean over `ks` of the top-k means
    (k capped at k_max, the patient's token count when it has fewer)."""
    running_sum = np.cumsum(top, axis=1, dtype=np.float64)
    k_max = top.shape[1]
    return sum(running_sum[:, min(k, k_max) - 1] / min(k, k_max) for k in ks) / len(ks)


class NumpyHead:
    """tokens (S, T, hidden) of one patient -> a value per gene (maps: `run.token_maps`)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, ks: Sequence[int], memory_mb: float,
                 top_values: TopValues = numpy_top_values):
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)  # (genes, hidden)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.ks, self.memory_mb = list(ks), memory_mb
        self.top_values = top_values

    @classmethod
    def from_safetensors(cls, path: Path, config, top_values: TopValues = numpy_top_values) -> "NumpyHead":
        weight, bias = _gene_layer(path)
        return cls(weight, bias, config.top_k, config.head_memory_mb, top_values)

    @property
    def n_genes(self) -> int:
        return len(self.weight)

    def gene_values(self, tokens: np.ndarray, images: np.ndarray | None = None) -> np.ndarray:
        """`images`: unused (top-k reads the tokens alone)."""
        flat = np.ascontiguousarray(tokens.reshape(-1, tokens.shape[-1]), dtype=np.float32)
        k_max = min(max(self.ks), len(flat))
        chunk = int(max(1, self.memory_mb * 2**20 // (len(flat) * BYTES_PER_VALUE)))
        values = np.empty(self.n_genes, dtype=np.float32)
        for start in range(0, self.n_genes, chunk):
            top = self.top_values(self.weight[start:start + chunk], flat, k_max)
            # the bias moves all tokens of a gene alike: added after the top-k
            values[start:start + chunk] = top_k_means(top, self.ks) + self.bias[start:start + chunk]
        return values


def _read(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """These tensors of a safetensors file as float32 arrays (the rest is not read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as weights:
        return {name: weights.get_tensor(name).astype(np.float32, copy=False) for name in names}


def _gene_layer(path: Path) -> tuple[np.ndarray, np.ndarray]:
    part = _read(path, ("head.conv.weight", "head.conv.bias"))
    return part["head.conv.weight"][:, :, 0], part["head.conv.bias"]


@dataclass
class GatedAttention:
    """`model.head.GatedAttention`: a_i = softmax_i(w . (tanh(V t_i) * sigmoid(U t_i)))."""

    value_weight: np.ndarray  # (attention_dim, hidden)
    value_bias: np.ndarray
    gate_weight: np.ndarray
    gate_bias: np.ndarray
    score_weight: np.ndarray  # (1, attention_dim)
    score_bias: np.ndarray  # (1,)

    NAMES = ("value.weight", "value.bias", "gate.weight", "gate.bias", "score.weight",
             "score.bias")

    @classmethod
    def from_safetensors(cls, path: Path) -> "GatedAttention":
        part = _read(path, [f"attention.{name}" for name in cls.NAMES])
        return cls(*(part[f"attention.{name}"] for name in cls.NAMES))

    def weights(self, tokens: np.ndarray) -> np.ndarray:
        """(N, hidden) float32 tokens -> (N,) weights summing to 1."""
        value = np.tanh(tokens @ self.value_weight.T + self.value_bias)
        gate = 1.0 / (1.0 + np.exp(-(tokens @ self.gate_weight.T + self.gate_bias)))
        logits = (value * gate) @ self.score_weight[0] + self.score_bias[0]
        weights = np.exp(logits - logits.max())  # softmax, stable
        return weights / weights.sum()


def token_shares(mask: np.ndarray, grid: int) -> np.ndarray:
    """(S, H, W) 0/1 tumour mask -> (S, grid * grid) the share of each token's patch
    inside it (`GenePredictor.token_shares`)."""
    slices, height, width = mask.shape
    blocks = mask.astype(np.float32).reshape(slices, grid, height // grid, grid, width // grid)
    return blocks.mean(axis=(2, 4)).reshape(slices, -1)


def tumour_mean(flat: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """(N, hidden) tokens, (N,) their shares of tumour -> (hidden,) the share-weighted mean
    (all tokens alike if none holds tumour, as `model.head.tumour_weights`)."""
    total = float(shares.sum())
    return shares @ flat / total if total > 0 else flat.mean(axis=0)


def stem_texture_embedding(embedding: np.ndarray, hidden: int, channels: int,
                           core: np.ndarray | None = None) -> np.ndarray:
    """[tokens' mean, mean of m, mean of m**2] -> [tokens' mean, mean of m, SD of m
    [, SD of m over the tumour's core]], `core` being the means of m and m**2 there
    (`model.head.stem_texture_embedding`)."""
    if not channels:
        return embedding
    parts = [embedding[:hidden + channels], _sd(embedding[hidden:])]
    if core is not None:
        parts.append(_sd(core))
    return np.concatenate(parts)


def _sd(means: np.ndarray) -> np.ndarray:
    """(2 C,) the means of m and of m**2 -> (C,) m's SD."""
    mean, square = np.split(means, 2)
    return np.sqrt(np.maximum(square - mean * mean, 0))


def core_shares(shares: np.ndarray, grid: int) -> np.ndarray:
    """(S, grid * grid) each token's share of tumour -> its weight in the tumour's core
    (`model.head.core_shares`)."""
    from scipy import ndimage

    least = ndimage.minimum_filter(shares.reshape(-1, grid, grid), size=(1, 3, 3),
                                   mode="nearest")
    return (least + CORE_TRACE * shares.reshape(least.shape)).reshape(shares.shape)


def texture_embedding(flat: np.ndarray, pooled: np.ndarray, shares: np.ndarray | None,
                      config) -> np.ndarray:
    """A patient's (S * T, token_size) tokens, their `pooled` mean and (S, T) shares of
    tumour -> its embedding, with the stem texture's SDs for a stem-texture model."""
    core = None
    if config.core_texture:
        weights = core_shares(shares, config.grid_size).reshape(-1)
        core = tumour_mean(flat[:, config.hidden_size:], weights)
    return stem_texture_embedding(pooled, config.hidden_size, config.stem_channels, core)


def map_tokens(tokens: np.ndarray, config, embedding: np.ndarray) -> np.ndarray:
    """Tokens for a stem-texture model's gene maps: the m**2 channels replaced by the
    patient's texture SD (the end of its pooled `embedding`), the same on every token as
    the geometry's share (`GenePredictor.gene_maps`); others' tokens as they are."""
    if not config.stem_texture:
        return tokens
    start = config.hidden_size + config.stem_channels
    texture = np.broadcast_to(embedding[start:], tokens.shape[:-1] + (len(embedding) - start,))
    return np.concatenate([tokens[..., :start], texture], axis=-1)


class PooledHead:
    """tokens (S, T, hidden) of one patient -> a value per gene: the gene layer on their
    mean (`attention` None), gated-attention-weighted mean, or mean weighted by each
    token's share of tumour (`tumour_channel`: the slices' mask channel), as
    `model.head.pooled_embedding`."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, attention: GatedAttention | None,
                 tumour_channel: int | None, config):
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)  # (genes, embedding)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.attention, self.tumour_channel, self.config = attention, tumour_channel, config

    @classmethod
    def from_safetensors(cls, path: Path, config) -> "PooledHead":
        weight, bias = _gene_layer(path)
        attention = GatedAttention.from_safetensors(path) if config.pooling == "attention" else None
        tumour_channel = (int(_read(path, ("tumour_channel",))["tumour_channel"])
                          if config.pooling == "tumour" else None)
        return cls(weight, bias, attention, tumour_channel, config)

    @property
    def n_genes(self) -> int:
        return len(self.weight)

    def embedding(self, tokens: np.ndarray, images: np.ndarray | None = None) -> np.ndarray:
        flat = np.ascontiguousarray(tokens.reshape(-1, tokens.shape[-1]), dtype=np.float32)
        shares = None
        if self.attention is not None:
            pooled = self.attention.weights(flat) @ flat
        elif self.tumour_channel is None:
            pooled = flat.mean(axis=0)
        elif images is None:
            raise ValueError("tumour pooling needs the slices (their tumour mask channel)")
        else:
            shares = token_shares(images[:, self.tumour_channel], self.config.grid_size)
            pooled = tumour_mean(flat, shares.reshape(-1))
        return texture_embedding(flat, pooled, shares, self.config)

    def gene_values(self, tokens: np.ndarray, images: np.ndarray | None = None) -> np.ndarray:
        return self.weight @ self.embedding(tokens, images) + self.bias


@dataclass
class GeometryShift:
    """`GenePredictor.geometry_shift`: per gene, a linear function of the tumour's geometry
    standardised by the training patients' mean and std (buffers of the fold model)."""

    weight: np.ndarray  # (genes, n_geometry)
    mean: np.ndarray  # (n_geometry,): preprocess.geometry_names(settings)
    std: np.ndarray

    @classmethod
    def from_safetensors(cls, path: Path) -> "GeometryShift":
        part = _read(path, ("head.geometry.weight", "geometry_mean", "geometry_std"))
        return cls(part["head.geometry.weight"], part["geometry_mean"], part["geometry_std"])

    def __call__(self, geometry: np.ndarray | None) -> np.ndarray:
        if geometry is None or np.shape(geometry) != self.mean.shape:
            raise ValueError(f"a model with geometry needs {len(self.mean)} geometry values")
        standardised = (np.asarray(geometry, dtype=np.float32) - self.mean) / self.std
        return self.weight @ standardised


Head = Union[NumpyHead, PooledHead]
POOLINGS = ("topk", "mean", "attention", "tumour")  # what the heads here run


def read_head(path: Path, config, top_values: TopValues = numpy_top_values
              ) -> tuple[Head, GeometryShift | None]:
    """A fold's head and, for a model with geometry, its geometry shift."""
    head = (NumpyHead.from_safetensors(path, config, top_values) if config.pooling == "topk"
            else PooledHead.from_safetensors(path, config))
    return head, GeometryShift.from_safetensors(path) if config.geometry else None
