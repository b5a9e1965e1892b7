"""HE2RNA's gene head: a value per token and gene, the patient value a top-k mean.

Dropout, then Conv1d(hidden -> genes, kernel 1) on every token of every slice. Per
gene, a patient's value is the mean of its k highest token values: k drawn from a list
in training, the mean over the list at evaluation. A patient with fewer valid tokens
than k uses all of them. Genes are processed in chunks so that tokens x genes values
never take more than the memory budget (31,793 genes x 6,272 tokens would be 800 MB).

Beside top-k, the pooling can be patient-level: the tokens become one patient embedding
(their mean, a gated-attention-weighted mean, or the mean weighted by how much of each
token's patch is tumour) and the same gene layer gives the values. The gene layer is
linear, so the value is then the (weighted) mean of the token values: the per-token
values stay each gene's map, and the attention weights say where the model looked.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from RadioGenomicsLib.model.config import CORE_TRACE

BYTES_PER_VALUE = 4  # the head runs in float32, also under autocast


def largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest values along the last dimension, in descending order.

    Without grad on a CPU, `values` is reordered in place: numpy's introselect is several
    times faster than torch's top-k for k ~ 100 among thousands of tokens.
    """
    if values.requires_grad or values.device.type != "cpu":
        return values.topk(k, dim=-1, sorted=True).values
    array = values.numpy()
    array.partition(array.shape[-1] - k, axis=-1)
    return torch.from_numpy(array[..., -k:]).sort(dim=-1, descending=True).values


def top_k_mean(values: torch.Tensor, n_valid: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """(B, G, N) token values whose invalid tokens are -inf -> (B, G): the mean over `ks`
    of the mean of the k largest values (k capped at each patient's `n_valid`).
    May reorder `values` along N (see `largest`)."""
    k_max = min(max(ks), values.shape[-1])
    top = largest(values, k_max)
    rank = torch.arange(k_max, device=values.device)
    # a patient with fewer valid tokens than k_max has -inf at the end of its top list
    top = top.masked_fill(rank >= n_valid[:, None, None], 0.0)
    running_sum = top.cumsum(dim=-1)
    result = values.new_zeros(values.shape[:2])
    for k in ks:
        k_used = n_valid.clamp(max=min(k, k_max))  # (B,)
        index = (k_used - 1).view(-1, 1, 1).expand(-1, values.shape[1], 1)
        result = result + running_sum.gather(-1, index).squeeze(-1) / k_used[:, None]
    return result / len(ks)


class GeneHead(nn.Module):
    """Dropout then Conv1d(hidden -> genes, kernel 1): a value per token and gene."""

    def __init__(self, hidden_size: int, n_genes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv1d(hidden_size, n_genes, kernel_size=1)

    @property
    def n_genes(self) -> int:
        return self.conv.out_channels

    # inference at reduced precision: the token x gene products in this dtype (bf16), the
    # top-k means and the bias in float32
    product_dtype: torch.dtype | None = None

    def products(self, tokens: torch.Tensor, genes: slice | torch.Tensor) -> torch.Tensor:
        """(B, N, hidden) tokens -> (B, genes, N) values of the chosen genes, less the bias."""
        weight = self.conv.weight[genes, :, 0].expand(tokens.shape[0], -1, -1)
        if self.product_dtype is not None:
            weight, tokens = weight.to(self.product_dtype), tokens.to(self.product_dtype)
        # bmm, not matmul: matmul's broadcasting returns a transposed, non-contiguous result
        return torch.bmm(weight, tokens.transpose(1, 2)).float()

    def values(self, tokens: torch.Tensor, genes: slice | torch.Tensor) -> torch.Tensor:
        """(B, N, hidden) tokens -> (B, genes, N) values of the chosen genes."""
        return self.products(tokens, genes) + self.conv.bias[genes, None]

    def gene_chunk(self, batch: int, n_tokens: int, memory_mb: float) -> int:
        per_gene = batch * n_tokens * BYTES_PER_VALUE
        return int(max(1, min(self.n_genes, memory_mb * 2**20 // per_gene)))

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor, ks: Sequence[int],
                memory_mb: float) -> torch.Tensor:
        """(B, N, hidden) tokens, (B, N) bool mask of real tokens -> (B, genes)."""
        n_valid = token_mask.sum(dim=1)
        if int(n_valid.min()) < 1:
            raise ValueError("every patient needs at least one slice")
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            tokens = self.dropout(tokens.float())
            chunk = self.gene_chunk(tokens.shape[0], tokens.shape[1], memory_mb)
            invalid = None if token_mask.all() else ~token_mask[:, None, :]
            parts = []
            for start in range(0, self.n_genes, chunk):
                genes = slice(start, start + chunk)
                products = self.products(tokens, genes)
                if invalid is not None:
                    products = products.masked_fill(invalid, -torch.inf)
                # the bias moves all tokens of a gene alike: add it after the top-k
                parts.append(top_k_mean(products, n_valid, ks) + self.conv.bias[genes])
            return torch.cat(parts, dim=1)

    def embedding_values(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, hidden) patient embeddings -> (B, genes): the gene layer, after dropout."""
        with torch.autocast(device_type=embedding.device.type, enabled=False):
            embedding = self.dropout(embedding.float())
            return nn.functional.linear(embedding, self.conv.weight[:, :, 0], self.conv.bias)

    @torch.no_grad()
    def set_bias(self, mean: np.ndarray | torch.Tensor | Sequence[float]) -> None:
        if not isinstance(mean, torch.Tensor):
            mean = torch.tensor(np.array(mean, dtype=np.float32))  # a copy: pandas arrays may be read-only
        if mean.shape != (self.n_genes,):
            raise ValueError(f"bias needs {self.n_genes} values, got shape {tuple(mean.shape)}")
        self.conv.bias.copy_(mean)


class GatedAttention(nn.Module):
    """Gated attention over a patient's tokens (Ilse, Tomczak and Welling, 2018):
    a_i = softmax_i(w . (tanh(V t_i) * sigmoid(U t_i))), over the valid tokens only."""

    def __init__(self, hidden_size: int, attention_dim: int):
        super().__init__()
        self.value = nn.Linear(hidden_size, attention_dim)
        self.gate = nn.Linear(hidden_size, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (...) unnormalised attention of each token."""
        hidden = torch.tanh(self.value(tokens)) * torch.sigmoid(self.gate(tokens))
        return self.score(hidden)[..., 0]

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """(B, N, hidden), (B, N) bool -> (B, N) weights summing to 1 over valid tokens."""
        logits = self.logits(tokens.float()).masked_fill(~token_mask, -torch.inf)
        return torch.softmax(logits, dim=1)


def tumour_weights(token_mask: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """(B, N) valid tokens and each token's share of tumour -> (B, N) weights summing to 1:
    the tumour's tokens by their share (a patient whose slices hold no tumour at all,
    which preprocessing never gives, falls back to all its tokens alike)."""
    weights = shares.float() * token_mask
    empty = weights.sum(dim=1, keepdim=True) <= 0
    weights = torch.where(empty, token_mask.float(), weights)
    return weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)


def pooled_embedding(tokens: torch.Tensor, token_mask: torch.Tensor,
                     attention: GatedAttention | None,
                     shares: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, hidden) tokens -> (B, hidden): their mean over valid tokens, the
    attention-weighted mean when `attention` is given, or the mean weighted by each
    token's share of tumour when `shares` (B, N) is."""
    tokens = tokens.float()
    if attention is not None:
        weights = attention(tokens, token_mask)
    elif shares is not None:
        weights = tumour_weights(token_mask, shares)
    else:
        weights = token_mask.float() / token_mask.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.einsum("bn,bnh->bh", weights, tokens)


def stem_texture_embedding(embedding: torch.Tensor, hidden: int, channels: int,
                           core: torch.Tensor | None = None) -> torch.Tensor:
    """A pooled stem-texture token (..., hidden + 2 C): [tokens' mean, mean of m, mean of
    m**2] -> [tokens' mean, mean of m, SD of m] across the pooled tokens (with their
    weights; config.stem_texture). `core` (..., 2 C), the means of m and m**2 over the
    tumour's core (`core_shares`; config.core_texture), appends m's SD there."""
    if not channels:
        return embedding
    parts = [embedding[..., :hidden + channels], _sd(embedding[..., hidden:])]
    if core is not None:
        parts.append(_sd(core))
    return torch.cat(parts, dim=-1)


def _sd(means: torch.Tensor) -> torch.Tensor:
    """(..., 2 C) the means of m and of m**2 -> (..., C) m's SD."""
    mean, square = means.chunk(2, dim=-1)
    return torch.sqrt((square - mean * mean).clamp(min=0))


def core_shares(shares: torch.Tensor, grid: int) -> torch.Tensor:
    """(..., grid * grid) each token's share of tumour, per slice -> the token's weight in
    the tumour's core: the least share over its 3 x 3 neighbourhood on the slice (1 only
    where the patch and its neighbours are all tumour) plus CORE_TRACE of its own share,
    so that a tumour too small for a core falls back to all its tokens
    (`runtime.head.core_shares`)."""
    flat = shares.float().reshape(-1, 1, grid, grid)
    least = -nn.functional.max_pool2d(-flat, 3, stride=1, padding=1)  # padding never wins
    return (least + CORE_TRACE * flat).reshape(shares.shape)
