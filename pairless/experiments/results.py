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
