"""The explorer's library side (``pairless explore``): find runs, load them once, show samples, translate.

- :func:`discover` reads what the user points at (a recipe's results folder with ``results.json``, a run
  folder with ``config.json`` + ``model.safetensors``, or a folder holding either) into a
  :class:`Catalogue` of runs with their role, withheld pairs, universe, shards and tokenizers.
- :func:`chain_status` says, per run and per link of a translation, whether the model ever saw the
  modalities of that link together in a training sample ("trained"), never ("zero-shot"), or in only
  ``k`` samples ("few-shot"), so that a zero-shot output is never mistaken for a trained one.
- :class:`ExploreSession` holds every model, tokenizer and shard split loaded once per session, and
  turns a held-out sample or an uploaded file into a :class:`Sample`, then generates with several
  runs side by side (:meth:`ExploreSession.translate`), decoded and scored against the ground truth.
- :func:`picture` draws any modality's value as an RGB array (with
  :func:`pairless.inference.figures.visualize`).

The page itself (Gradio) is in :mod:`pairless.commands.explore`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pairless import modalities as registry
from pairless.batch import TokenSpec
from pairless.config import validate
from pairless.data import codecs
from pairless.data.shards import TokenShards, open_shards
from pairless.data.validate import Problem, check_array_column
from pairless.inference.decoded_metrics import score
from pairless.inference.evaluate import load_run_model, run_shards_path
from pairless.inference.figures import visualize
from pairless.inference.generate import GenerationSchedule
from pairless.inference.translations import generate_run, tokenizers_of
from pairless.utils.storage import read_json

USER_ROLE = "user"  # a run folder given directly, not through a recipe's results
# how bad a link's status is, for the status of a whole chain (the worst link)
_SEVERITY = {"trained": 0, "few-shot": 1, "partly zero-shot": 2, "zero-shot": 3, "not trained on": 4}


@dataclass(frozen=True)
class RunInfo:
    """One trained run as the explorer shows it."""

    name: str
    path: Path
    role: str
    withheld: tuple[tuple[str, str], ...]
    universe: tuple[str, ...] | None  # None: every modality of its shards
    shards: Path
    tokenizers: Path
    allow_pairs: dict[str, int] = field(default_factory=dict)  # "a:b" -> samples allowed to keep both
    only_paired: bool = False
    results: Path | None = None  # the recipe's results folder it came from


@dataclass(frozen=True)
class ResultsFolder:
    """A recipe's results folder: its report and its figures (caption, png)."""

    path: Path
    recipe: str
    report: Path | None
    figures: tuple[tuple[str, Path], ...]


@dataclass
class Catalogue:
    runs: dict[str, RunInfo]
    results: list[ResultsFolder]


def _is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _resolve(folder: Path, recorded: str) -> Path:
    """A path that ``results.json`` recorded, found again: under this results root (``OUT`` of
    ``OUT/<recipe>/``) from its ``cache/`` part (the runner records paths as ``--out`` was given, relative to
    where it ran), else as written."""
    path = Path(recorded)
    if "cache" in path.parts:
        here = folder.parent.joinpath(*path.parts[path.parts.index("cache"):])
        if here.exists():
            return here
    if path.exists():
        return path
    raise FileNotFoundError(f"{folder / 'results.json'}: recorded path {recorded} does not exist (nor under "
                            f"{folder.parent}); was the results' cache/ folder moved or deleted?")


def _pairs(raw) -> tuple[tuple[str, str], ...]:
    return tuple((str(a), str(b)) for a, b in raw or [])


def _figures(folder: Path, report: str) -> tuple[tuple[str, Path], ...]:
    """The report's figures in its order (``![caption](file.png)``), then any other png beside it."""
    found = []
    for line in report.splitlines():
        if line.startswith("![") and "](" in line and line.endswith(")"):
            caption, target = line[2:-1].split("](", 1)
            if (folder / target).is_file():
                found.append((caption, folder / target))
    listed = {path for _, path in found}
    found += [(path.stem.replace("_", " "), path) for path in sorted(folder.glob("*.png"))
              if path not in listed]
    return tuple(found)


def _from_results(folder: Path, runs: dict[str, RunInfo], results: list[ResultsFolder]) -> None:
    data = read_json(folder / "results.json")
    if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
        raise ValueError(f"{folder / 'results.json'}: no 'runs' table; is this a recipe's results folder?")
    paths = data.get("paths") or {}
    for name, info in data["runs"].items():
        path = _resolve(folder, info["path"])
        shards = _resolve(folder, paths["shards"]) if "shards" in paths else run_shards_path(path)
        tokenizers = _resolve(folder, paths["tokenizers"]) if "tokenizers" in paths else tokenizers_of(shards)
        _add(runs, RunInfo(name, path, info.get("role", USER_ROLE), _pairs(info.get("withheld")),
                           tuple(info["universe"]) if info.get("universe") else None, shards, tokenizers,
                           dict(info.get("allow_pairs") or {}), bool(info.get("only_paired")), folder))
    report = folder / "report.md"
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    results.append(ResultsFolder(folder, str(data.get("recipe", folder.name)),
                                 report if report.is_file() else None, _figures(folder, text)))


def _from_run(folder: Path, runs: dict[str, RunInfo]) -> None:
    config = read_json(folder / "config.json")
    fragment = config.get("fragment") or {}
    shards = run_shards_path(folder)
    universe = fragment.get("universe")
    _add(runs, RunInfo(folder.name, folder, USER_ROLE, _pairs(fragment.get("withheld")),
                       tuple(universe) if universe else None, shards, tokenizers_of(shards),
                       dict(fragment.get("allow_pairs") or {}), bool(fragment.get("only_paired"))))


def never_in_data(shards: Path) -> tuple[tuple[str, str], ...]:
    """Pairs no sample of the shards' training split holds together (a user's data is fragmented by
    nature: such a pair was never seen together whatever the run withheld)."""
    present = open_shards(shards, "train").present
    names = list(present)
    return tuple((a, b) for index, a in enumerate(names) for b in names[index + 1:]
                 if not np.any(np.asarray(present[a], bool) & np.asarray(present[b], bool)))


def _add(runs: dict[str, RunInfo], run: RunInfo) -> None:
    """Add a run (pairs its training data never holds together count as withheld); a name already taken
    gets its results folder's (or parent folder's) name in front."""
    for what, path in (("token shards", run.shards), ("tokenizers", run.tokenizers)):
        if not path.is_dir():
            raise FileNotFoundError(f"{run.path}: its {what} {path} do not exist (moved or deleted?)")
    known = {frozenset(pair) for pair in run.withheld}
    absent = tuple(pair for pair in never_in_data(run.shards) if frozenset(pair) not in known)
    if absent:
        run = replace(run, withheld=run.withheld + absent)
    name = run.name
    if name in runs:
        name = f"{(run.results or run.path.parent).name}/{run.name}"
    if name in runs:
        raise ValueError(f"two runs are both called {name!r} ({runs[name].path} and {run.path}); "
                         "point the explorer at one of them")
    runs[name] = replace(run, name=name)


def discover(paths: list[str | Path]) -> Catalogue:
    """The runs and results under ``paths``: results folders, run folders, or folders holding either."""
    runs: dict[str, RunInfo] = {}
    results: list[ResultsFolder] = []
    for given in paths:
        folder = Path(given)
        if (folder / "results.json").is_file():
            _from_results(folder, runs, results)
        elif _is_run(folder):
            _from_run(folder, runs)
        elif folder.is_dir() and any((child / "results.json").is_file() or _is_run(child)
                                     for child in folder.iterdir() if child.is_dir()):
            for child in sorted(child for child in folder.iterdir() if child.is_dir()):
                if (child / "results.json").is_file():
                    _from_results(child, runs, results)
                elif _is_run(child):
                    _from_run(child, runs)
        else:
            what = "does not exist" if not folder.exists() else \
                "holds no results.json, no run (config.json + model.safetensors) and no folder with either"
            raise ValueError(f"{folder}: {what}; give a recipe's results folder (e.g. results/demo), a run "
                             "folder, or a folder of runs")
    return Catalogue(runs, results)


# ----------------------------------------------------------------------------- what a run has seen


def _allowed(run: RunInfo, a: str, b: str) -> int:
    return int(run.allow_pairs.get(f"{a}:{b}", run.allow_pairs.get(f"{b}:{a}", 0)))


def never_together(run: RunInfo) -> list[str]:
    """What the run never saw together, one line per withheld pair (empty: every pair was seen)."""
    lines = []
    for a, b in run.withheld:
        count = _allowed(run, a, b)
        if count and run.only_paired:
            lines.append(f"{a} & {b}: trained on {count} paired samples only")
        elif count:
            lines.append(f"{a} & {b}: together in only {count} training samples")
        else:
            lines.append(f"{a} & {b}: never in one training sample")
    return lines


def link_status(run: RunInfo, sources: list[str], destination: str) -> tuple[str, str]:
    """(status, reason) of one translation ``sources -> destination`` for this run.

    status: "trained" (some source was seen with the destination), "few-shot" (only in the allowed
    samples), "partly zero-shot" (some sources never seen with it), "zero-shot" (none), or
    "not trained on" (a modality outside the run's universe).
    """
    outside = [name for name in [*sources, destination] if run.universe and name not in run.universe]
    if outside:
        return "not trained on", f"{', '.join(outside)} not in its training modalities"
    withheld = {frozenset(pair) for pair in run.withheld}
    unseen = [name for name in sources if frozenset((name, destination)) in withheld]
    never = [name for name in unseen if not _allowed(run, name, destination)]
    if not unseen:
        return "trained", f"{'+'.join(sources)} seen with {destination} in training"
    if len(never) == len(sources):
        return "zero-shot", f"never saw {' or '.join(never)} with {destination} in one training sample"
    if never:
        return "partly zero-shot", f"never saw {', '.join(never)} with {destination}"
    counts = ", ".join(f"{name} with {destination} in {_allowed(run, name, destination)} samples"
                       for name in unseen)
    return "few-shot", f"saw {counts} only"


def chain_status(run: RunInfo, chain: list[list[str]], condition: str = "all") -> tuple[str, list[str]]:
    """The worst status over a chain's links, and why: one line per link (``rgb+normal → depth: partly
    zero-shot (never saw rgb with depth)``), or only the reason for a single link.

    ``condition``: "all" (each link sees every modality before it) or "last", as the sampler does.
    """
    worst, lines, before = "trained", [], list(chain[0])
    for link in chain[1:]:
        status, reason = link_status(run, before, link[0])
        lines.append(reason if len(chain) == 2 else f"{'+'.join(before)} → {link[0]}: {status} ({reason})")
        worst = status if _SEVERITY[status] > _SEVERITY[worst] else worst
        before = [*before, link[0]] if condition == "all" else [link[0]]
    return worst, lines


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

    def __init__(self, catalogue: Catalogue, split: str = "val", threads: int | None = None):
        self.catalogue = catalogue
        self.split = split
        self.threads = threads
        self._models: dict[str, torch.nn.Module] = {}
        self._tokenizers: dict[tuple[Path, str], object] = {}
        self._data: dict[Path, TokenShards] = {}

    def model(self, name: str):
        if name not in self._models:
            self._models[name] = load_run_model(self.catalogue.runs[name].path).eval()
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
        value = codecs.decode_checked(entry, path)
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
