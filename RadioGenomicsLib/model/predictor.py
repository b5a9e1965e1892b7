"""The gene predictor: slices of a patient -> a value per gene, and per-token gene maps."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from RadioGenomicsLib.model.config import CNN_STRIDE, ModelConfig
from RadioGenomicsLib.model.encoder import HybridEncoder
from RadioGenomicsLib.model.head import (GatedAttention, GeneHead, core_shares,
                                         pooled_embedding, stem_texture_embedding)

N_GEOMETRY = 4  # len(preprocess.GEOMETRY_FEATURES): without sub-region geometry


def slices_per_pass(device: torch.device) -> int:
    """Encoder batch at inference: on a CPU 8 slices at a time ran 30 % faster than 32
    (BENCHMARKS.md), a GPU wants them all at once."""
    return 8 if device.type == "cpu" else 64


class GenePredictor(nn.Module):
    """TransUNet R50+ViT encoder and the gene head (HE2RNA top-k, or patient-level mean,
    gated-attention or tumour-weighted pooling: `config.pooling`).

    Inputs: `x` (B, S, C, H, W) float slices, H = W = config.image_size, and
    `slice_mask` (B, S) bool, False for padding slices (never encoded, never selected).
    `tumour_channel`: which input channel is the tumour mask (tumour pooling needs it; it
    is kept with the weights, so a loaded model knows it).
    """

    def __init__(self, config: ModelConfig, in_channels: int, n_genes: int,
                 n_geometry: int = N_GEOMETRY, tumour_channel: int | None = None):
        super().__init__()
        if config.pooling == "tumour":
            if tumour_channel is None or not 0 <= tumour_channel < in_channels:
                raise ValueError("tumour pooling needs the tumour mask as an input channel "
                                 "(preprocessing's tumour_channel)")
            self.register_buffer("tumour_channel", torch.tensor(int(tumour_channel)))
        self.config = config
        self.in_channels = in_channels
        self.n_geometry = n_geometry  # len(preprocess.geometry_names(settings))
        self.encoder = HybridEncoder(config, in_channels)
        self.head = GeneHead(config.embedding_size, n_genes, config.head_dropout)
        self.attention = (GatedAttention(config.token_size, config.attention_dim)
                          if config.pooling == "attention" else None)
        if config.geometry:
            # per gene, a linear function of the standardised geometry, added to its value
            self.head.geometry = nn.Linear(n_geometry, n_genes, bias=False)
            nn.init.zeros_(self.head.geometry.weight)
            self.register_buffer("geometry_mean", torch.zeros(n_geometry))
            self.register_buffer("geometry_std", torch.ones(n_geometry))

    @property
    def n_genes(self) -> int:
        return self.head.n_genes

    def encode(self, x: torch.Tensor, slice_mask: torch.Tensor,
               slices_per_pass: int | None = None) -> torch.Tensor:
        """-> tokens (B, S, T, hidden), T = grid**2 (row-major); zeros for padding slices.

        `slices_per_pass` bounds the encoder's activation memory at inference.
        """
        if x.dim() != 5 or x.shape[2] != self.in_channels or slice_mask.shape != x.shape[:2]:
            raise ValueError(f"expected x (B, S, {self.in_channels}, H, W) and slice_mask (B, S); "
                             f"got {tuple(x.shape)} and {tuple(slice_mask.shape)}")
        if not slice_mask.any():
            raise ValueError("no slice to encode: every slice is masked out")
        slices = x[slice_mask]
        step = slices_per_pass or max(1, len(slices))
        encoded = torch.cat([self.encoder(slices[i:i + step]) for i in range(0, len(slices), step)])
        tokens = encoded.new_zeros(*slice_mask.shape, *encoded.shape[1:])
        tokens[slice_mask] = encoded
        return tokens

    # HE2RNA draws one k per training step; False trains with the whole list, as evaluated
    draw_top_k: bool = True

    def top_k_list(self) -> list[int]:
        """The k to use now: one drawn at random in training, the whole list in eval."""
        ks = self.config.top_k
        if self.training and self.draw_top_k:
            return [ks[int(torch.randint(len(ks), ()))]]
        return list(ks)

    def token_shares(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B, S, C, H, W) slices -> (B, S, T) the share of each token's patch inside the
        tumour mask (its input channel), for tumour pooling; None for any other pooling."""
        if self.config.pooling != "tumour":
            return None
        mask = x[:, :, int(self.tumour_channel)].float()
        shares = nn.functional.avg_pool2d(mask.flatten(0, 1)[:, None], CNN_STRIDE)
        return shares.reshape(*x.shape[:2], -1)

    def predict_genes(self, tokens: torch.Tensor, slice_mask: torch.Tensor,
                      geometry: torch.Tensor | None = None,
                      memory_mb: float | None = None,
                      token_shares: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, T, hidden) tokens [, (B, n_geometry) geometry] -> (B, genes) float32.
        Tumour pooling needs `token_shares` (B, S, T): `token_shares(x)`."""
        batch, n_slices, per_slice, hidden = tokens.shape
        token_mask = slice_mask[:, :, None].expand(-1, -1, per_slice).reshape(batch, -1)
        flat = tokens.reshape(batch, n_slices * per_slice, hidden)
        shares = None
        if self.config.pooling == "tumour":
            if token_shares is None or token_shares.shape != tokens.shape[:3]:
                raise ValueError("tumour pooling needs each token's share of tumour "
                                 f"{tuple(tokens.shape[:3])}")
            shares = token_shares.reshape(batch, -1)
        if self.config.pooling == "topk":
            values = self.head(flat, token_mask, self.top_k_list(),
                               memory_mb or self.config.head_memory_mb)
        else:
            with torch.autocast(device_type=tokens.device.type, enabled=False):
                embedding = self.embedding(flat, token_mask, shares)
            values = self.head.embedding_values(embedding)
        return values + self.geometry_shift(geometry, batch)

    def embedding(self, flat: torch.Tensor, token_mask: torch.Tensor,
                  shares: torch.Tensor | None) -> torch.Tensor:
        """(B, N, token_size) tokens, (B, N) valid ones [and shares of tumour] -> (B,
        embedding_size) the pooled patient embedding [with the stem texture's SDs]."""
        embedding = pooled_embedding(flat, token_mask, self.attention, shares)
        core = None
        if self.config.core_texture:
            weights = core_shares(shares, self.config.grid_size)
            core = pooled_embedding(flat[..., self.config.hidden_size:], token_mask, None,
                                    weights)
        return stem_texture_embedding(embedding, self.config.hidden_size,
                                      self.config.stem_channels, core)

    def geometry_shift(self, geometry: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, genes) what the tumour's geometry adds to each gene (0 without geometry)."""
        if not self.config.geometry:
            return torch.zeros((), device=self.head.conv.bias.device)
        if geometry is None or geometry.shape != (batch, self.n_geometry):
            raise ValueError(f"a model with geometry needs (B, {self.n_geometry}) geometry values")
        standardised = (geometry.float() - self.geometry_mean) / self.geometry_std
        return self.head.geometry(standardised)

    @torch.no_grad()
    def set_geometry_scale(self, values: np.ndarray) -> None:
        """Standardise the geometry by the training patients' (N, n_geometry) values."""
        values = np.asarray(values, dtype=np.float32)
        self.geometry_mean.copy_(torch.from_numpy(values.mean(axis=0)))
        std = values.std(axis=0)
        self.geometry_std.copy_(torch.from_numpy(np.where(std > 0, std, 1.0).astype(np.float32)))

    def attention_maps(self, tokens: torch.Tensor, slice_mask: torch.Tensor) -> torch.Tensor:
        """(B, S, T, hidden) -> (B, S, grid, grid) attention weight of each token (summing to
        1 over the patient's tokens): where an attention-pooling model looked."""
        if self.attention is None:
            raise ValueError(f"a {self.config.pooling}-pooling model has no attention")
        batch, n_slices, per_slice, hidden = tokens.shape
        token_mask = slice_mask[:, :, None].expand(-1, -1, per_slice).reshape(batch, -1)
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            weights = self.attention(tokens.reshape(batch, -1, hidden).float(), token_mask)
        grid = self.config.grid_size
        return weights.reshape(batch, n_slices, grid, grid)

    def forward(self, x: torch.Tensor, slice_mask: torch.Tensor,
                geometry: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict_genes(self.encode(x, slice_mask), slice_mask, geometry,
                                  token_shares=self.token_shares(x))

    def gene_maps(self, tokens: torch.Tensor, gene_indices: Sequence[int] | torch.Tensor,
                  token_shares: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, T, hidden) tokens (every slice real) -> (B, S, n_sel, grid, grid) per-token
        values of the chosen genes (no dropout, float32): each gene's map over each slice.
        A stem-texture model's texture SD is the patient's, the same on every token (its
        tumour pooling needs `token_shares`)."""
        batch, n_slices, per_slice, hidden = tokens.shape
        genes = torch.as_tensor(gene_indices, dtype=torch.long, device=tokens.device)
        grid = self.config.grid_size
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            flat = tokens.float().reshape(batch * n_slices, per_slice, hidden)
            if self.config.stem_texture:
                flat = self.texture_filled(tokens.float(), token_shares).reshape(
                    batch * n_slices, per_slice, -1)
            values = self.head.values(flat, genes)  # (B*S, n_sel, T)
        return values.reshape(batch, n_slices, len(genes), grid, grid)

    def texture_filled(self, tokens: torch.Tensor, token_shares: torch.Tensor | None
                       ) -> torch.Tensor:
        """(B, S, T, token_size) -> (B, S, T, embedding_size) the tokens with their m**2
        channels replaced by the patient's texture SD [and core SD] (`runtime.head.map_tokens`)."""
        batch = tokens.shape[0]
        flat = tokens.reshape(batch, -1, tokens.shape[-1])
        mask = torch.ones(flat.shape[:2], dtype=torch.bool, device=tokens.device)
        shares = token_shares.reshape(batch, -1) if token_shares is not None else None
        if self.config.pooling == "tumour" and shares is None:
            raise ValueError("a tumour-pooling model's map needs each token's share of tumour")
        embedding = self.embedding(flat, mask, shares)
        start = self.config.hidden_size + self.config.stem_channels
        texture = embedding[:, None, None, start:].expand(*tokens.shape[:3], -1)
        return torch.cat([tokens[..., :start], texture], dim=-1)

    def token_values(self, x: torch.Tensor, slice_mask: torch.Tensor,
                     gene_indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Encode and map in one call: -> (B, S, n_sel, grid, grid)."""
        return self.gene_maps(self.encode(x, slice_mask), gene_indices, self.token_shares(x))

    def set_output_bias(self, mean: np.ndarray | torch.Tensor | Sequence[float]) -> None:
        """Start the head at the training mean of each gene (HE2RNA)."""
        self.head.set_bias(mean)

    def set_precision(self, precision: str) -> "GenePredictor":
        """`float32`, or `bf16`: the transformer under bf16 autocast and the top-k head's
        products in bf16, the CNN, pooling, geometry and top-k means in float32 (the split
        the precision check judges: runtime/precision.py)."""
        dtype = {"float32": None, "bf16": torch.bfloat16}[precision]
        self.encoder.transformer_dtype = dtype
        self.head.product_dtype = dtype
        return self

    def prepare_inference(self, channels_last: bool = False, compile: bool = False) -> "GenePredictor":
        """Eval mode, optionally channels-last convolutions and a compiled encoder."""
        self.eval()
        if channels_last:
            self.encoder.cnn.to(memory_format=torch.channels_last)
            self.encoder.channels_last = True
        if compile:
            self.encoder.compile()
        return self
