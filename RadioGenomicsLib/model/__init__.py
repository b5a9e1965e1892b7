"""The gene predictor: TransUNet's R50+ViT hybrid encoder and HE2RNA's top-k gene head.

The torch classes are imported on first use (PEP 562), so that `model.config` (and the
bundle reader built on it) work without PyTorch: the ONNX runtimes need no torch.
"""

import importlib

from RadioGenomicsLib.model.config import PRESETS, ModelConfig

_LAZY = {"GeneHead": "head", "top_k_mean": "head", "GenePredictor": "predictor",
         "HybridEncoder": "encoder", "WeightStandardizedConv2d": "encoder"}

__all__ = ["PRESETS", "GeneHead", "GenePredictor", "HybridEncoder", "ModelConfig",
           "WeightStandardizedConv2d", "top_k_mean"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
