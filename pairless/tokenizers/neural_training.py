"""Training of the neural tokenizers: typed config with presets, one seeded AdamW + cosine loop.

``train_neural(tokenizer, values, ...)`` fits any :class:`NeuralTokenizer`
on a natural-form training array with bf16 autocast (on these CPUs bf16
convolutions and matmuls are several times faster than fp32; the FSQ
rounding itself stays in fp32), warmup then cosine learning rate, and
seeded batch order. ``build_spatial`` / ``build_vector`` construct a
tokenizer (statistics fitted on the training values) from the config.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
from pydantic import Field
from tqdm import tqdm

from pairless import modalities as registry
from pairless.config import Config, ConfigError
from pairless.tokenizers import normalize
from pairless.tokenizers.base import NeuralTokenizer
from pairless.tokenizers.spatial import SpatialConfig, SpatialTokenizer
from pairless.tokenizers.vector import VectorConfig, VectorTokenizer, fit_statistics
from pairless.utils.threads import torch_threads


class OptimizerSettings(Config):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)


class SpatialSettings(OptimizerSettings):
    width: int = Field(64, ge=8)
    num_blocks: int = Field(1, ge=0)
    downsample: int = 4
    levels: list[int] = [8, 5, 5, 5]
    encoder_kernel: int = 3  # 1: a token encodes its own patch only (see SpatialConfig)
    modality_levels: dict[str, list[int]] = {}  # per-modality FSQ levels (codebook size = their product)


class VectorSettings(OptimizerSettings):
    hidden: int = Field(512, ge=8)
    num_tokens: int = Field(16, ge=1)
    levels: list[int] = [8, 5, 5, 5]


class TextSettings(Config):
    vocab_size: int = Field(2000, ge=64)
    truncate: bool = False  # cut texts longer than the padded length instead of raising
    # extra tokens beyond the longest training text (before rounding to 4)
    length_margin: int = Field(0, ge=0)


class TokenizerTrainConfig(Config):
    """Everything ``pairless tokenizers train`` needs besides the data (saved as TOKDIR/config.json)."""

    preset: str = "tiny"
    seed: int = 0
    steps: int | None = Field(None, ge=1)  # when set, overrides the steps of every neural tokenizer
    bf16: bool = True
    # torch threads while training; None = the command's --threads, else the fixed default of the usable
    # cores (pairless.utils.threads.default_threads; never chosen from the machine's load). Recorded per
    # modality in TOKDIR/training.json. On a loaded machine, 2 OpenMP threads were measured 3-60x slower
    # than 1: set 1 there.
    threads: int | None = Field(None, ge=1)
    max_train_samples: int | None = Field(None, ge=1)  # cap per modality (None: all samples that have it)
    report_samples: int = Field(2000, ge=1)  # val samples scored by the reconstruction report
    spatial: SpatialSettings = SpatialSettings()
    vector: VectorSettings = VectorSettings()
    text: TextSettings = TextSettings()
    normalization: dict[str, normalize.NormalizationKind] = {}  # per-modality override of the default
    modality_steps: dict[str, int] = {}  # per-modality steps (e.g. more for rgb, the hardest to reconstruct)

    def steps_for(self, modality: str, section: OptimizerSettings) -> int:
        """Training steps of ``modality``: ``steps`` if set, else ``modality_steps``, else the section's."""
        return self.steps or self.modality_steps.get(modality) or section.steps


# FSQ codebooks by modality for the CPU presets: 1,000 codes for a 6-class label map or a smooth depth patch
# gave several codes to one decoded patch, and that noise is unpredictable from any input (no-input CE of
# semseg tokens 3.25 -> 2.10 nats with 64 codes, decoded metrics unchanged: docs/learning.md).
_SMALL_CODEBOOKS = {"semseg": [4, 4, 4], "depth": [5, 5, 5], "normal": [8, 5, 5]}

PRESETS: dict[str, dict] = {
    # seconds: end-to-end smoke tests and the micro demo
    # (small worlds: a val text may be longer than every training text, so leave room and truncate)
    "micro": dict(spatial=dict(steps=40, batch_size=16, width=16, lr=3e-3, modality_levels=_SMALL_CODEBOOKS),
                  vector=dict(steps=40, batch_size=16, hidden=64, lr=3e-3), report_samples=64,
                  text=dict(length_margin=8, truncate=True)),
    # a couple of minutes in all
    "demo": dict(spatial=dict(steps=300, batch_size=32, width=32, modality_levels=_SMALL_CODEBOOKS),
                 vector=dict(steps=300, batch_size=64),
                 report_samples=500, text=dict(length_margin=8, truncate=True)),
    # the CPU study: the demo's image tokenizers. Sharper ones (1,600 steps, width 64, rgb 3,000: ceilings
    # mIoU 0.97, abs_rel 0.013, 26.2 dB) made every translation worse at this budget (demo data, 4M tokens:
    # rgb -> depth CE ratio 0.57 -> 0.83, mIoU 0.39 -> 0.31; docs/learning.md), so the study uses these.
    "tiny": dict(spatial=dict(steps=300, batch_size=32, width=32, modality_levels=_SMALL_CODEBOOKS),
                 vector=dict(steps=1500, batch_size=128)),
    # GPU scale
    "base": dict(spatial=dict(steps=20000, batch_size=128, width=128, num_blocks=2, lr=1e-3),
                 vector=dict(steps=10000, batch_size=256, hidden=1024, lr=1e-3)),
}


def preset_config(name: str, seed: int = 0) -> TokenizerTrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown tokenizer preset {name!r}; allowed: {', '.join(PRESETS)}")
    return TokenizerTrainConfig.model_validate({"preset": name, "seed": seed, **PRESETS[name]})


@contextlib.contextmanager
def seeded_init(seed: int):
    """Module construction draws from torch's global generator: fork it so the caller's state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_spatial(modality: str, values: np.ndarray, config: TokenizerTrainConfig) -> SpatialTokenizer:
    """A fresh spatial tokenizer whose normalisation statistics are fitted on ``values`` [N, H, W(, C)]."""
    entry = registry.get(modality)
    if values.ndim not in (3, 4) or values.shape[1] != values.shape[2]:
        raise ValueError(f"{modality}: spatial tokenizers need square images [N, S, S(, C)], got "
                         f"{list(values.shape)}")
    norm = normalize.fit_normalization(entry, values, config.normalization.get(modality))
    settings = config.spatial
    spatial_config = SpatialConfig(modality=modality, image_size=values.shape[1],
                                   downsample=settings.downsample, width=settings.width,
                                   num_blocks=settings.num_blocks,
                                   levels=settings.modality_levels.get(modality, settings.levels),
                                   encoder_kernel=settings.encoder_kernel, normalization=norm)
    with seeded_init(config.seed):
        return SpatialTokenizer(spatial_config)


def build_vector(modality: str, values: np.ndarray, config: TokenizerTrainConfig) -> VectorTokenizer:
    if values.ndim != 2:
        raise ValueError(f"{modality}: vector tokenizers need [N, D] arrays, got {list(values.shape)}")
    mean, std = fit_statistics(values)
    settings = config.vector
    vector_config = VectorConfig(modality=modality, dim=values.shape[1], num_tokens=settings.num_tokens,
                                 hidden=settings.hidden, levels=settings.levels, mean=mean, std=std)
    with seeded_init(config.seed):
        return VectorTokenizer(vector_config)


def learning_rate(step: int, steps: int, peak: float, warmup_fraction: float) -> float:
    """Linear warmup to ``peak``, then cosine decay to 1% of it."""
    warmup = max(1, int(steps * warmup_fraction))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_step(tokenizer: NeuralTokenizer, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               targets: torch.Tensor, bf16: bool) -> torch.Tensor:
    """One optimizer step on a prepared batch (``tokenizer.prepare``): the forward under bf16 autocast when
    ``bf16``, the reconstruction loss, the backward, gradient clipping at norm 1, the step; the loss."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs, _ = tokenizer(inputs)
    loss = tokenizer.loss(outputs, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(tokenizer.parameters(), 1.0)
    optimizer.step()
    return loss


def train_neural(tokenizer: NeuralTokenizer, values: np.ndarray, settings: OptimizerSettings, *, steps: int,
                 seed: int, bf16: bool = True, description: str = "", threads: int | None = None,
                 device: str | torch.device = "cpu") -> dict:
    """Fit ``tokenizer`` on ``values`` [N, ...]; {losses, seconds, samples_per_second, threads, device}.

    ``threads``: torch threads for the loop (None: the current count); ``device``: where it trains (the
    tokenizer is back on the CPU afterwards, as it is saved and loaded).
    """
    threads = torch.get_num_threads() if threads is None else threads
    device = torch.device(device)
    with torch_threads(threads):
        try:
            result = _train_loop(tokenizer.to(device), values, settings, steps, seed, bf16, description)
        finally:
            tokenizer.cpu()
    return {**result, "threads": threads, "device": str(device)}


def _train_loop(tokenizer: NeuralTokenizer, values: np.ndarray, settings: OptimizerSettings, steps: int,
                seed: int, bf16: bool, description: str) -> dict:
    if len(values) == 0:
        raise ValueError(f"{tokenizer.modality}: no training samples have this modality")
    rng = np.random.default_rng(seed)
    device = tokenizer.device
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=settings.lr, betas=(0.9, 0.99),
                                  weight_decay=settings.weight_decay)
    batch_size = min(settings.batch_size, len(values))
    order = rng.permutation(len(values))
    cursor = 0
    losses = []
    tokenizer.train()
    started = time.perf_counter()
    progress = tqdm(range(steps), desc=description or f"tokenizer {tokenizer.modality}", disable=None,
                    leave=False)
    for step in progress:
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(values)), 0
        batch = np.asarray(values[np.sort(order[cursor:cursor + batch_size])])
        cursor += batch_size
        inputs, targets = tokenizer.prepare(batch)
        inputs, targets = inputs.to(device), targets.to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, settings.lr, settings.warmup_fraction)
        loss = train_step(tokenizer, optimizer, inputs, targets, bf16)
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            progress.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    seconds = time.perf_counter() - started
    tokenizer.eval()
    return {"losses": losses, "seconds": seconds,
            "samples_per_second": steps * batch_size / max(seconds, 1e-9)}
