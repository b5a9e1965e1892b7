"""The gene predictor: TransUNet's R50+ViT hybrid encoder and HE2RNA's top-k gene head."""

from RadioGenomicsLib.model.config import PRESETS, ModelConfig
from RadioGenomicsLib.model.encoder import HybridEncoder, WeightStandardizedConv2d
from RadioGenomicsLib.model.head import GeneHead, top_k_mean
from RadioGenomicsLib.model.predictor import GenePredictor

__all__ = ["PRESETS", "GeneHead", "GenePredictor", "HybridEncoder", "ModelConfig",
           "WeightStandardizedConv2d", "top_k_mean"]
