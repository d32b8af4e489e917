"""The model: the 4M-style encoder-decoder (:mod:`.transformer`), its attention kernels
(:mod:`.attention`) and safetensors save/load (:mod:`.weights`)."""

from pairless.model.transformer import PRESETS, FourM, ModelConfig
from pairless.model.weights import load_model, read_weights, save_model

__all__ = ["PRESETS", "FourM", "ModelConfig", "load_model", "read_weights", "save_model"]
