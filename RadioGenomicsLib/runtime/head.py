"""HE2RNA's gene head without torch: a 1x1 convolution is a matrix product, then the
mean of the top-k token values per gene (as `model.head`, for one patient, no padding).

The weights come from the fold's safetensors file (read as numpy arrays). Genes are taken
in chunks so that genes x tokens values stay within the model's memory budget. The
product and the top-k selection are a pluggable `top_values` (numpy here; the OpenVINO
runner brings a bf16 one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

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
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as weights:  # reads these two tensors only
            weight = weights.get_tensor("head.conv.weight")[:, :, 0]
            bias = weights.get_tensor("head.conv.bias")
        return cls(weight, bias, config.top_k, config.head_memory_mb, top_values)

    @property
    def n_genes(self) -> int:
        return len(self.weight)

    def gene_values(self, tokens: np.ndarray) -> np.ndarray:
        flat = np.ascontiguousarray(tokens.reshape(-1, tokens.shape[-1]), dtype=np.float32)
        k_max = min(max(self.ks), len(flat))
        chunk = int(max(1, self.memory_mb * 2**20 // (len(flat) * BYTES_PER_VALUE)))
        values = np.empty(self.n_genes, dtype=np.float32)
        for start in range(0, self.n_genes, chunk):
            top = self.top_values(self.weight[start:start + chunk], flat, k_max)
            # the bias moves all tokens of a gene alike: added after the top-k
            values[start:start + chunk] = top_k_means(top, self.ks) + self.bias[start:start + chunk]
        return values
