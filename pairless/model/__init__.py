"""The model: the 4M-style encoder-decoder (:mod:`.transformer`), its attention kernels
(:mod:`.attention`) and safetensors save/load (:mod:`.weights`)."""

from pairless.model.config import PRESETS, ModelConfig
from pairless.model.transformer import FourM
from pairless.model.weights import load_model, read_weights, save_model

__all__ = ["PRESETS", "FourM", "ModelConfig", "load_model", "read_weights", "save_model"]
