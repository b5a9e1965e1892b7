"""TransUNet's R50+ViT hybrid encoder, built from MONAI's ResNet and transformer blocks.

Faithful to the ViT/TransUNet jax original (whose weights `pretrained.py` imports):
weight-standardised convolutions and GroupNorm(32, eps 1e-6) in the ResNet, 1x1
patches over its 16x-downsampled grid, learned position embeddings, pre-norm blocks
with LayerNorm eps 1e-6, dropout after the embeddings, the attention output and both
MLP layers, none on the attention weights.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from typing import Callable

import torch
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from monai.networks.nets import ResNet
from torch import nn

from RadioGenomicsLib.model.config import ModelConfig

NORM_EPS = 1e-6  # flax's default, used by the published checkpoint
STD_CONV_EPS = 1e-5
STEM_LAYERS = 3  # conv1, norm, activation: the stem, before the max-pool


class WeightStandardizedConv2d(nn.Conv2d):
    """BiT's StdConv: each filter is standardised to zero mean, unit variance before use."""

    def standardized_weight(self) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (self.weight - mean) * torch.rsqrt(var + STD_CONV_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)


def _replace_children(module: nn.Module, convert: Callable[[nn.Module], nn.Module | None]) -> None:
    for name, child in module.named_children():
        replacement = convert(child)
        if replacement is None:
            _replace_children(child, convert)
        else:
            setattr(module, name, replacement)


def _to_bit_layers(groups: int) -> Callable[[nn.Module], nn.Module | None]:
    def convert(layer: nn.Module) -> nn.Module | None:
        if isinstance(layer, nn.BatchNorm2d):
            return nn.GroupNorm(groups, layer.num_features, eps=NORM_EPS)
        if isinstance(layer, nn.Conv2d) and not isinstance(layer, WeightStandardizedConv2d):
            conv = WeightStandardizedConv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                padding=layer.padding, bias=layer.bias is not None)
            conv.weight.data.copy_(layer.weight.data)
            return conv
        return None

    return convert


def build_resnet_stages(config: ModelConfig, in_channels: int) -> nn.Sequential:
    """Stem and the first three bottleneck stages of MONAI's ResNet, in BiT form."""
    width = config.resnet_width
    resnet = ResNet(
        block="bottleneck", layers=[*config.resnet_layers, 1],
        # MONAI always builds a fourth stage; give it one channel since it is dropped
        block_inplanes=[width, 2 * width, 4 * width, 1],
        spatial_dims=2, n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2,
        shortcut_type="B", bias_downsample=False, feed_forward=False,
    )
    stages = nn.Sequential(OrderedDict(
        (name, getattr(resnet, name))
        for name in ("conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3")))
    # ResNet(norm=...) reaches only the stem: swap every BatchNorm (and conv) here instead
    _replace_children(stages, _to_bit_layers(config.norm_groups))
    return stages


def build_transformer_block(config: ModelConfig) -> TransformerBlock:
    block = TransformerBlock(
        config.hidden_size, config.mlp_dim, config.num_heads, dropout_rate=config.dropout,
        qkv_bias=True, use_flash_attention=True)
    # MONAI passes this rate to the fused attention as attention-weight dropout, in eval
    # too; the original has none there. Output and MLP dropout keep config.dropout.
    block.attn.dropout_rate = 0.0
    block.norm1.eps = block.norm2.eps = NORM_EPS
    block.norm_cross_attn = nn.Identity()  # MONAI builds it even without cross-attention
    return block


class HybridEncoder(nn.Module):
    """(N, C, H, W) slices -> (N, tokens, hidden) token embeddings, tokens = (H/16)*(W/16)."""

    def __init__(self, config: ModelConfig, in_channels: int):
        super().__init__()
        self.config = config
        self.cnn = build_resnet_stages(config, in_channels)
        self.embedding = PatchEmbeddingBlock(
            in_channels=config.feature_channels, img_size=config.grid_size, patch_size=1,
            hidden_size=config.hidden_size, num_heads=config.num_heads, proj_type="conv",
            pos_embed_type="learnable", dropout_rate=config.dropout, spatial_dims=2)
        self.blocks = nn.ModuleList(build_transformer_block(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=NORM_EPS)
        self.channels_last = False
        # inference at reduced precision: the transformer blocks under autocast to this dtype
        # (bf16 on a CPU with AVX-512 BF16 / AMX), the CNN and the final norm in float32
        self.transformer_dtype: torch.dtype | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """-> (N, tokens, config.token_size): the transformer's tokens [, stem texture]."""
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            raise ValueError(f"slices must be {size}x{size}, got {tuple(images.shape[-2:])}")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        stem = self.cnn[:STEM_LAYERS](images)
        x = self.embedding(self.cnn[STEM_LAYERS:](stem))
        reduced = (torch.autocast(device_type=x.device.type, dtype=self.transformer_dtype)
                   if self.transformer_dtype is not None else nullcontext())
        with reduced:
            for block in self.blocks:
                x = block(x)
        tokens = self.norm(x.float())
        if not self.config.stem_texture:
            return tokens
        return torch.cat([tokens, *stem_texture_tokens(stem.float(), self.config.grid_size)], -1)


def stem_texture_tokens(stem: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, h, w) stem feature maps -> m and m**2, each (N, grid**2, C): m the mean of
    each map over a token's patch (row-major tokens, as the transformer's)."""
    means = nn.functional.avg_pool2d(stem, stem.shape[-1] // grid)
    means = means.flatten(2).transpose(1, 2)
    return means, means * means

