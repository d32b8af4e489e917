"""The explorer's library side (``pairless explore``): find runs, load them once, show samples, translate.

- The runs come from :func:`pairless.inference.catalogue.discover`, each translation's status (trained,
  few-shot, zero-shot) from :func:`pairless.inference.catalogue.chain_status`.
- :class:`ExploreSession` holds every model, tokenizer and shard split loaded once per session, and
  turns a held-out sample or an uploaded file into a :class:`Sample`, then generates with several
  runs side by side (:meth:`ExploreSession.translate`), decoded and scored against the ground truth.
- :func:`picture` draws any modality's value as an RGB array (with
  :func:`pairless.inference.figures.visualize`).

The page itself (Gradio) is in :mod:`pairless.inference.explore_page`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pairless import modalities as registry
from pairless.batch import TokenSpec
from pairless.config import validate
from pairless.data import file_codecs
from pairless.data.shards import TokenShards, open_shards
from pairless.data.validate import Problem, check_array_column
from pairless.inference.catalogue import Catalogue, RunInfo, chain_status
from pairless.inference.decoded_metrics import score
from pairless.inference.evaluate import load_run_model
from pairless.inference.figures import visualize
from pairless.inference.generate import GenerationSchedule
from pairless.inference.translations import generate_run, tokenizers_of

# ----------------------------------------------------------------------------- samples and translations


@dataclass
class Sample:
    """One input to translate: tokens ``{modality: [1, L]}`` (the shape :func:`generate_run` reads as
    shards), their decoded values (what the model sees), and the data they belong to."""

    label: str
    specs: dict[str, TokenSpec]
    tokens: dict[str, np.ndarray]
    values: dict[str, object]
    shards: Path
    scene: dict | None = None
    ground_truth: bool = True  # False for an upload: nothing to score against


@dataclass
class Prediction:
    """One run's output for a :class:`Sample`; ``error`` set instead of ``value`` when it cannot run."""

    run: str
    status: str
    status_lines: list[str]
    value: object = None
    tokens: np.ndarray | None = None
    metrics: dict[str, float] | None = None
    seconds: float = 0.0
    error: str | None = None


class ExploreSession:
    """Models, tokenizers and shard splits of a catalogue, each loaded once and kept for the session."""

    def __init__(self, catalogue: Catalogue, split: str = "val", threads: int | None = None,
                 device: str | torch.device = "cpu"):
        self.catalogue = catalogue
        self.split = split
        self.threads = threads
        self.device = device  # where the models run (tokenizers decode on the CPU)
        self._models: dict[str, torch.nn.Module] = {}
        self._tokenizers: dict[tuple[Path, str], object] = {}
        self._data: dict[Path, TokenShards] = {}

    def model(self, name: str):
        if name not in self._models:
            self._models[name] = load_run_model(self.catalogue.runs[name].path, self.device).eval()
        return self._models[name]

    def tokenizer(self, shards: Path, modality: str):
        root = self.tokenizers_of(shards)
        if (root, modality) not in self._tokenizers:
            from pairless.tokenizers import load_tokenizer

            self._tokenizers[(root, modality)] = load_tokenizer(root, modality)
        return self._tokenizers[(root, modality)]

    def data(self, shards: Path) -> TokenShards:
        if shards not in self._data:
            self._data[shards] = open_shards(shards, self.split)
        return self._data[shards]

    def tokenizers_of(self, shards: Path) -> Path:
        for run in self.catalogue.runs.values():
            if run.shards == shards:
                return run.tokenizers
        return tokenizers_of(shards)

    def warm(self, progress=print) -> None:
        """Load every run's model, shards and tokenizers now: the first click is then as fast as the rest."""
        for name, run in self.catalogue.runs.items():
            progress(f"loading {name} ({run.path})")
            self.model(name)
            for modality in self.data(run.shards).specs:
                self.tokenizer(run.shards, modality)

    def decode(self, shards: Path, modality: str, ids: np.ndarray):
        """One decoded value from token ids [L] or [1, L]."""
        ids = torch.as_tensor(np.asarray(ids)).long().reshape(1, -1)
        return self.tokenizer(shards, modality).decode(ids)[0]

    def sample(self, shards: Path, index: int) -> Sample:
        """Held-out sample ``index`` of the split, in every modality it has, decoded by the tokenizers."""
        data = self.data(shards)
        if not 0 <= index < len(data):
            raise ValueError(f"sample {index} is outside the {self.split} split's {len(data)} samples "
                             f"(0 to {len(data) - 1})")
        tokens = {name: np.array(data.tokens[name][index : index + 1]) for name in data.specs
                  if data.present[name][index]}
        values = {name: self.decode(shards, name, ids) for name, ids in tokens.items()}
        label = f"{self.split} sample {index} (id {data.ids[index]})"
        return Sample(label, data.specs, tokens, values, shards, data.scenes[index] if data.scenes else None)

    def upload(self, shards: Path, modality: str, path: str | Path) -> Sample:
        """An uploaded file as one modality, checked and tokenized with the data's tokenizer."""
        path = Path(path)
        tokenizer = self.tokenizer(shards, modality)
        value = read_upload(path, modality, tokenizer)
        ids = tokenizer.encode([value] if isinstance(value, str) else value[None]).numpy()
        return Sample(f"upload {path.name} as {modality}", self.data(shards).specs, {modality: ids},
                      {modality: self.decode(shards, modality, ids)}, shards, ground_truth=False)

    def translate(self, runs: list[str], sample: Sample, chain: list[list[str]],
                  schedule: GenerationSchedule, seed: int = 0) -> list[Prediction]:
        """Generate the chain's links from ``sample`` with every run; decode and score the last link."""
        missing = [name for name in chain[0] if name not in sample.tokens]
        if missing:
            raise ValueError(f"{sample.label} has no {', '.join(missing)} to translate from; it has "
                             f"{', '.join(sample.tokens)}")
        final = chain[-1][0]
        truth = sample.values.get(final) if sample.ground_truth else None
        out = []
        for name in runs:
            run = self.catalogue.runs[name]
            status, lines = chain_status(run, chain, schedule.chain_condition)
            prediction = Prediction(name, status, lines)
            out.append(prediction)
            problem = self._cannot_run(run, sample)
            if problem or status == "not trained on":
                prediction.error = problem or lines[-1]
                continue
            started = time.perf_counter()
            try:
                generated = generate_run(self.model(name), sample, np.array([0]), chain, schedule, seed, 1,
                                          name, self.threads)
            except ValueError as error:  # e.g. a modality the model was not built for
                prediction.error = str(error)
                continue
            prediction.tokens = generated[final]
            prediction.value = self.decode(sample.shards, final, generated[final])
            prediction.seconds = time.perf_counter() - started
            if truth is not None:
                prediction.metrics = score(final, _batch(prediction.value), _batch(truth),
                                           [sample.scene] if sample.scene else None)
        return out

    def _cannot_run(self, run: RunInfo, sample: Sample) -> str | None:
        """Why ``run`` cannot read ``sample``'s tokens (other tokenizers), or None."""
        if run.shards == sample.shards or run.tokenizers == self.tokenizers_of(sample.shards):
            return None
        ours, theirs = self.data(sample.shards).info, self.data(run.shards).info
        if ours.get("tokenizers_hash") and ours.get("tokenizers_hash") == theirs.get("tokenizers_hash"):
            return None
        return f"trained with other tokenizers ({run.tokenizers}): its tokens do not mean this data's"


def _batch(value):
    return [value] if isinstance(value, str) else np.asarray(value)[None]


def read_upload(path: Path, modality: str, tokenizer) -> object:
    """An uploaded file as one natural value of ``modality`` (checked against the tokenizer), or a
    ValueError that names the file, what it holds and what is expected."""
    entry = registry.get(modality)
    accepted = (".txt", ".json") if entry.is_text else \
        (".png", ".jpg", ".jpeg", ".npy") if entry.kind == "image" else (".npy", ".json")
    where = f"{path.name} as {modality}"
    if path.suffix.lower() not in accepted:
        raise ValueError(f"{where}: a {path.suffix or 'extension-less'} file cannot be {modality} "
                         f"({entry.description}); upload {', '.join(accepted)}")
    try:
        value = file_codecs.decode_checked(entry, path)
        if entry.is_text:
            return value
        expected = tuple(tokenizer.natural_shape())
        if value.ndim == len(expected) + 1 and value.shape[0] == 1:
            value = value[0]  # a batch of one
        size = expected[0] if entry.kind == "image" else None
        values, problems = check_array_column(entry, value[None], np.ones(1, dtype=bool), size)
        if problems:
            raise Problem(problems[0])
    except Problem as problem:
        hint = f"; the {modality} tokenizer takes {_shape_text(tokenizer)}" if not entry.is_text else ""
        raise ValueError(f"{where}: {problem}{hint}") from None
    return values[0]


def _shape_text(tokenizer) -> str:
    shape = tuple(tokenizer.natural_shape())
    return f"{' x '.join(map(str, shape))} {tokenizer.natural_dtype()} values"


def schedule_from_fields(base: GenerationSchedule, **fields) -> GenerationSchedule:
    """``base`` with the page's schedule fields (None: keep), validated; ConfigError names a bad one."""
    merged = {**base.model_dump(), **{key: value for key, value in fields.items() if value is not None}}
    return validate(GenerationSchedule, merged, prefix="schedule")


def picture(modality: str, value, pixels: int = 192, background: np.ndarray | None = None) -> np.ndarray:
    """``value`` of ``modality`` drawn as an RGB uint8 array (pixels x pixels), as the figures draw it;
    ``background``: the sample's rgb image, on which det boxes are drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(pixels / 100, pixels / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    source = background if isinstance(value, str) and background is not None else value
    size = int(np.asarray(source).shape[0]) if not isinstance(source, str) else 32
    visualize(modality, value, axes, size=size, background=background)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
