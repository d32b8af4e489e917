"""The typed form of a recipe's results.json (:class:`Results`): what the runner writes and the report reads.

Every entry the report relies on is declared here, with its type; entries that carry open-ended measurements
(decoded metrics, probe summaries, the tokenizer report) stay dictionaries of numbers. Directions and pairs
are validated by the registry's parsers (:class:`~pairless.modalities.Direction`,
:class:`~pairless.modalities.Pair`): keys are their text form (``"rgb:depth"``), withheld pairs their list
form (``["rgb", "depth"]``), as in the files. Records allow keys beyond the declared ones, so that a file
written by a newer runner still loads; a missing or mistyped declared key is an error naming it
(``results.evals.many-shot.rgb:depth.ce: ...``). The schema is in docs/interfaces.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from pairless.config import ConfigError, format_validation_error
from pairless.experiments.experiment import Role
from pairless.modalities import DirectionText, Pair, PairText
from pairless.utils.storage import read_json

# a withheld pair as results.json stores it (["rgb", "depth"]) or as text ("rgb:depth")
WithheldPair = Annotated[Pair, BeforeValidator(Pair.parse)]


class Record(BaseModel):
    """A results.json record: declared keys typed, further keys kept as they are."""

    model_config = ConfigDict(extra="allow")


class RunRecord(Record):
    """What the report needs of one trained run or adapter (``runs.NAME``)."""

    role: Role
    label: str = ""
    path: str | None = None  # the run folder (the runner always records it)
    withheld: list[WithheldPair] = []
    universe: list[str] | None = None
    total_tokens: int | None = None
    tokens_per_modality: dict[str, int] = {}
    train_seconds: float | None = None
    final_loss: float | None = None
    init_from: str | None = None  # a continued run: the run it started from
    pseudo: str | None = None  # its pseudo-pair stage
    base: str | None = None  # an adapter: its frozen run, the modality it adds and the anchor
    modality: str | None = None
    anchor: str | None = None
    seed: int | None = None
    tokens: int | None = None  # an adapter: the tokens it trained on, its parameters and weight hashes
    trainable_parameters: int | None = None
    model_parameters: int | None = None
    trainable_fraction: float | None = None
    structure_weight: float | None = None
    frozen_hash: str | None = None
    base_hash: str | None = None


class RecipeRun(Record):
    """A run as the recipe's config lists it (``config.runs``), with its fragmentation at the top, whichever
    form the file has: under ``train.fragment`` (today) or as the run's own fields (files written before
    2026-12-07)."""

    name: str
    role: Role
    label: str = ""
    withheld: list[WithheldPair] = []
    universe: list[str] | None = None
    allow_pairs: dict[PairText, int] = {}

    @classmethod
    def from_config(cls, run: dict) -> RecipeRun:
        fragment = (run.get("train") or {}).get("fragment") or run
        return cls(name=run["name"], role=run["role"], label=run.get("label", ""),
                   withheld=fragment.get("withheld") or [], universe=fragment.get("universe"),
                   allow_pairs=fragment.get("allow_pairs") or {})


class AdapterStep(Record):
    """An adapter stage as the recipe's config lists it (``config.adapters``)."""

    name: str
    base: str
    modality: str
    anchor: str
    structure_weight: float = 0.0
    total_tokens: int | None = None


class Evaluation(Record):
    """Translation cross-entropy of one run in one direction (``evals.RUN.DIRECTION``)."""

    ce: float
    ce_unconditional: float
    num_samples: int
    num_tokens: int


class Reference(Record):
    """An outside model scored on the recipe's samples (``references.NAME``)."""

    path: str
    outside: bool = True
    evals: dict[DirectionText, Evaluation] = {}


class ProbeResult(Record):
    """Alignment probes of one run for one pair, or why they were skipped (``probes.RUN.PAIR``)."""

    num_samples: int | None = None
    k: int | None = None
    summary: dict[str, Any] | None = None
    shuffled: dict[str, Any] | None = None
    skipped: str | None = None


class Snapshot(Record):
    """One snapshot along training (``snapshots.RUN.FRACTION``): where it was taken, its measurements."""

    fraction: float
    step: int
    tokens: int
    evals: dict[DirectionText, Evaluation] = {}
    probes: dict[PairText, ProbeResult] = {}


class Chained(Record):
    """A chained figure's decoded metrics (``generation.chained.DIRECTION``): through ``via``, per run."""

    via: str
    metrics: dict[str, Any] = {}


class Generation(Record):
    """What the generation stage made: figures by title, decoded metrics and chained metrics by direction
    (per run, plus ``_no_input`` and ``_num_samples``)."""

    figures: dict[str, str] = {}
    metrics: dict[DirectionText, dict[str, Any]] = {}
    chained: dict[DirectionText, Chained] = {}


class Inspection(Record):
    """A user's folder (recipe own-data): counts per split from the listing and as used, bad files."""

    splits: dict[str, dict[str, Any]]
    used: dict[str, dict[str, Any]] = {}
    bad_samples: dict[str, list[list[str]]] = {}


class Results(Record):
    """A recipe's results.json."""

    recipe: str
    preset: str
    config: dict[str, Any]  # the ExperimentConfig as run (older files: its fields then)
    date: str | None = None
    machine: str | None = None
    runtime: dict[str, Any] | None = None  # threads and device (files before the runtime record lack it)
    timings_seconds: dict[str, float] = {}
    runs: dict[str, RunRecord]
    evals: dict[str, dict[DirectionText, Evaluation]]
    references: dict[str, Reference] = {}
    probes: dict[str, dict[PairText, ProbeResult]] = {}
    regions: dict[str, dict[DirectionText, dict[str, Any]]] = {}
    inspection: Inspection | None = None
    unpaired: dict[DirectionText, dict[str, Any]] = {}
    pseudo_pairs: dict[str, dict[str, Any]] = {}
    snapshots: dict[str, dict[str, Snapshot]] = {}
    generation: Generation = Field(default_factory=Generation)
    tokenizer_ceiling: dict[str, Any] = {}
    paths: dict[str, str] = {}

    # The recipe's config as the report reads it (the config stays a dictionary: older files differ in form).

    @property
    def directions(self) -> list[str]:
        """The directions the recipe evaluates, in its order (text form, as the evals are keyed)."""
        return list(self.config.get("directions", []))

    @property
    def seeds(self) -> int:
        return self.config.get("seeds", 1)

    @property
    def eval_samples(self) -> int | None:
        return self.config.get("eval_samples")

    @property
    def data(self) -> str | None:
        """A user's data folder (recipe own-data); None on the built-in world."""
        return self.config.get("data")

    @property
    def notes(self) -> list[str]:
        """What the recipe adapted to the data or could not do with it (own-data), in words."""
        return list(self.config.get("notes", []))

    @property
    def recipe_runs(self) -> list[RecipeRun]:
        """The recipe's runs in its order."""
        return [RecipeRun.from_config(run) for run in self.config.get("runs", [])]

    @property
    def adapter_steps(self) -> list[AdapterStep]:
        """The recipe's adapter stages in its order."""
        return [AdapterStep.model_validate(stage) for stage in self.config.get("adapters", [])]

    def to_json(self) -> dict:
        """The JSON form written to results.json: the keys that were given, none of the defaults."""
        return self.model_dump(mode="json", exclude_unset=True)


def validate_results(data: dict, source: str | Path = "results.json") -> Results:
    """``data`` as :class:`Results`; a ConfigError naming ``source`` and each bad key otherwise."""
    try:
        return Results.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {format_validation_error(error, 'results')}") from None


def read_results(path: str | Path) -> Results:
    """A results.json file, validated."""
    return validate_results(read_json(path), path)
