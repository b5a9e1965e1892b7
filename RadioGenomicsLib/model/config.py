"""Model settings: the `paper` and `small` presets, or any other from a JSON file."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from RadioGenomicsLib.errors import InputError, read_json_object

# The R50 hybrid downsamples by 16: a 224x224 slice gives a 14x14 token grid.
CNN_STRIDE = 16
# a core token's weight beside its share of the core: a tumour with no core (too small)
# takes its m's core SD over all its tokens
CORE_TRACE = 1e-3
POOLINGS = ("topk", "mean", "attention", "tumour")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the encoder (TransUNet's R50+ViT hybrid) and of the HE2RNA gene head."""

    name: str = "paper"
    image_size: int = 224
    # ResNet: stem width w; stages of (3, 4, 9) bottlenecks with 4w, 8w, 16w output channels
    resnet_width: int = 64
    resnet_layers: tuple[int, ...] = (3, 4, 9)
    norm_groups: int = 32
    # transformer over the token grid
    hidden_size: int = 768
    num_layers: int = 8
    num_heads: int = 12
    mlp_dim: int = 3072
    dropout: float = 0.1
    # head: Dropout, Conv1d(hidden -> genes, kernel 1), mean of the top-k tokens per gene.
    # HE2RNA's k list (slides of up to 8000 tiles); a patient here holds slices x 196
    # tokens (6272 for 32 slices), the same order, so the list carries over as is.
    head_dropout: float = 0.25
    top_k: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)
    # how a patient's value comes from its tokens: "topk" (HE2RNA, the paper: the mean of
    # the k highest token values per gene), "mean" (the gene layer on the mean token) or
    # "attention" (on the gated-attention-weighted token, Ilse et al. 2018) or "tumour"
    # (on the mean token weighted by the share of each token's patch inside the tumour:
    # the crop's margin and the tissue around the tumour left out; needs the tumour mask
    # as an input channel); the gene layer on each token stays the gene's map whatever
    # the pooling
    pooling: str = "topk"
    attention_dim: int = 128  # hidden units of the attention's gates
    # the tumour's size and extent from the mask (preprocess.GEOMETRY_FEATURES), through a
    # linear layer added to every gene's value: physical scale that the rescaled crops lose
    geometry: bool = False
    # texture from the ResNet stem (its first convolution, at half the slice's resolution):
    # each token also carries its patch's mean of the stem's feature maps, m, and m**2; a
    # pooled head turns their pooled means into m's mean and SD across the patient's
    # (tumour's) patches. The fine texture inside a tumour survives the stem but not the
    # deeper stages, the 16-px tokens or the transformer (BENCHMARKS.md, CT heterogeneity)
    stem_texture: bool = False
    # with stem_texture and tumour pooling: m's SD also across the tumour's core, the tokens
    # whose patch and 8 neighbours are all tumour. At the edge the tumour's contrast with
    # its surroundings outweighs its own texture in the stem's maps (BENCHMARKS.md)
    core_texture: bool = False
    # most memory the head's per-token values may take at once (genes are chunked to fit)
    head_memory_mb: float = 256.0

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so configs compare and hash
        object.__setattr__(self, "resnet_layers", tuple(int(n) for n in self.resnet_layers))
        object.__setattr__(self, "top_k", tuple(int(k) for k in self.top_k))

    @property
    def grid_size(self) -> int:
        return self.image_size // CNN_STRIDE

    @property
    def tokens_per_slice(self) -> int:
        return self.grid_size**2

    @property
    def feature_channels(self) -> int:
        """Channels of the last ResNet stage, the input of the token projection."""
        return self.resnet_width * 16

    @property
    def stem_channels(self) -> int:
        """Feature maps of the ResNet stem: each adds m and m**2 to a stem-texture token."""
        return self.resnet_width if self.stem_texture else 0

    @property
    def token_size(self) -> int:
        """Channels of a token: the transformer's hidden size [+ the stem's texture]."""
        return self.hidden_size + 2 * self.stem_channels

    @property
    def embedding_size(self) -> int:
        """Channels of a pooled patient embedding, the gene layer's input: the token's, with
        m's SD in place of m**2's mean [+ m's SD across the tumour's core]."""
        return self.token_size + (self.stem_channels if self.core_texture else 0)

    def problems(self) -> list[str]:
        found = []
        if self.image_size <= 0 or self.image_size % CNN_STRIDE:
            found.append(f"image_size {self.image_size} is not a positive multiple of {CNN_STRIDE}")
        if len(self.resnet_layers) != 3 or min(self.resnet_layers) < 1:
            found.append(f"resnet_layers {list(self.resnet_layers)}: need three stages of >= 1 block")
        if self.resnet_width <= 0 or self.norm_groups <= 0 or self.resnet_width % self.norm_groups:
            found.append(f"resnet_width {self.resnet_width} is not a multiple of norm_groups {self.norm_groups}")
        if self.num_heads <= 0 or self.hidden_size % self.num_heads:
            found.append(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.num_layers < 1 or self.mlp_dim < 1:
            found.append("num_layers and mlp_dim must be >= 1")
        if not (0 <= self.dropout < 1 and 0 <= self.head_dropout < 1):
            found.append("dropout and head_dropout must be in [0, 1)")
        if not self.top_k or min(self.top_k) < 1:
            found.append(f"top_k {list(self.top_k)}: need one or more k >= 1")
        if self.head_memory_mb <= 0:
            found.append("head_memory_mb must be > 0")
        if self.pooling not in POOLINGS:
            found.append(f"pooling {self.pooling!r}: choose one of {', '.join(POOLINGS)}")
        if self.stem_texture and self.pooling == "topk":
            found.append("stem_texture needs a pooled head (mean, attention or tumour pooling): "
                         "its SD is taken across the pooled tokens")
        if self.core_texture and not (self.stem_texture and self.pooling == "tumour"):
            found.append("core_texture needs stem_texture and tumour pooling: it is the stem "
                         "texture's SD across the tumour's core")
        if self.attention_dim < 1:
            found.append("attention_dim must be >= 1")
        return found

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["resnet_layers"] = list(self.resnet_layers)
        data["top_k"] = list(self.top_k)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | os.PathLike | None = None) -> "ModelConfig":
        """Build and check a config; `source` names the file in error messages."""
        if not isinstance(data, dict):
            raise InputError(source, "model settings must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(source, f"unknown model setting(s) {', '.join(unknown)}")
        from RadioGenomicsLib.schemas import MODEL, validate

        validate(data, MODEL, source)
        try:
            config = cls(**data)
        except (TypeError, ValueError) as error:
            raise InputError(source, f"bad model settings: {error}") from None
        problems = config.problems()
        if problems:
            raise InputError(source, "bad model settings: " + "; ".join(problems))
        return config

    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        if name not in PRESETS:
            raise InputError(None, f"unknown model setting {name!r} (presets: {', '.join(PRESETS)})")
        return PRESETS[name]

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> "ModelConfig":
        """A preset name (`paper`, `small`) or a JSON file of settings."""
        if str(name_or_path) in PRESETS:
            return PRESETS[str(name_or_path)]
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(path, f"neither a model preset ({', '.join(PRESETS)}) nor a JSON file")
        return cls.from_dict({"name": path.stem, **read_json_object(path)}, source=path)


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    # same shape (R50-style stages, 14x14 tokens for 224 input), sized for CPU training and tests
    "small": ModelConfig(
        name="small", resnet_width=32, resnet_layers=(1, 1, 2), hidden_size=192,
        num_layers=4, num_heads=3, mlp_dim=768, head_dropout=0.0,
    ),
}
