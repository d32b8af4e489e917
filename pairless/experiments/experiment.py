"""The typed config of an experiment: its world, tokenizers, training runs, pseudo-pair and adapter
stages, figures and evaluation settings (what a recipe returns and the runner executes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pairless.config import Config, laid_over, merged, overrides_as_data, validate
from pairless.model.attention import resolve_attention
from pairless.model.config import SAVED_BEFORE_OPTIONS
from pairless.tokenizers.neural_training import TokenizerTrainConfig, preset_config
from pairless.training.adapter import AdapterConfig
from pairless.training.config import TrainConfig

# few-shot: a withheld pair allowed in k samples; paired-only: trained on those k samples alone (pairs-curve);
# pseudo-pairs: a zero-shot run continued on its own pseudo-pairs, continued: the same on real data alone
# (the equal-budget control; transitive)
# frozen-base: a model trained without a modality that an adapter adds afterwards (adapter)
Role = Literal["zero-shot", "many-shot", "larger", "few-shot", "paired-only", "pseudo-pairs", "continued",
               "frozen-base", "adapter"]
Preset = Literal["micro", "quick", "tiny", "paper"]

# A recipe trained with ``seeds`` > 1 names seed N's copy of run or adapter ``name`` "name@sN" (N >= 1);
# seed 0 keeps the plain name. The report groups the copies by the plain name, the runner names cache
# folders by it.
SEED_MARK = "@s"


def seeded_name(name: str, seed: int) -> str:
    """Seed ``seed``'s copy of run ``name``: ``name`` itself for seed 0, ``name@s1`` ... for the others."""
    return f"{name}{SEED_MARK}{seed}" if seed else name


def seedless_name(name: str) -> str:
    """The run a seed's copy belongs to: ``zs-rgb-depth@s2`` -> ``zs-rgb-depth`` (a plain name unchanged)."""
    return name.split(SEED_MARK)[0]


class WorldStage(Config):
    num_scenes: int = Field(22000, ge=4)
    size: int = Field(32, ge=8)
    seed: int = 0
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)


class _StageWithSettings(Config):
    """A stage whose component settings are nested data under ``settings``; reads the form results.json
    files written before 2026-12-07 list it in, with ``overrides`` as ``--set`` text (``["steps=8"]``), as
    the same settings (``{"steps": 8}``)."""

    @model_validator(mode="before")
    @classmethod
    def _from_overrides(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "overrides" not in data:
            return data
        stage = {key: value for key, value in data.items() if key != "overrides"}
        stage["settings"] = merged(overrides_as_data(data["overrides"]), stage.get("settings", {}))
        return stage


class TokenizerStage(_StageWithSettings):
    """The tokenizers to train: a preset of :class:`TokenizerTrainConfig` with ``settings`` laid over it
    (:func:`pairless.config.laid_over`: sections merged, values such as a mapping replaced whole)."""

    preset: str = "tiny"
    modalities: list[str] | None = None  # None: every modality of the world
    seed: int = 0
    # TokenizerTrainConfig fields that differ from the preset's, nested as in its dump: {"steps": 8,
    # "normalization": {"depth": "log_standard"}} (``pairless run --set tokenizers.settings.steps=8``)
    settings: dict[str, Any] = {}

    @model_validator(mode="after")
    def _settings_are_a_tokenizer_config(self) -> TokenizerStage:
        self.config()  # a ConfigError naming the bad field of ``settings``
        return self

    def config(self) -> TokenizerTrainConfig:
        """The resolved trainer config: the preset's (with the stage's seed), ``settings`` laid over it."""
        return laid_over(preset_config(self.preset, seed=self.seed), self.settings, "tokenizers.settings")


class TrainingRun(Config):
    """One model to train: its name and role in the recipe, and its :class:`TrainConfig` without the paths.

    ``train`` holds the TrainConfig fields the run sets, nested as in RUN/config.json (``{"total_tokens":
    8000000, "model": {"preset": "tiny"}, "fragment": {"withheld": [["rgb", "depth"]]}}``); the rest are the
    trainer's defaults. The names the recipes and the report read (``withheld``, ``total_tokens`` ...) are
    properties of the resolved config, never a second copy of its fields. ``label`` groups runs in the
    report (e.g. a binding set).
    """

    name: str
    role: Role
    label: str = ""
    train: dict[str, Any] = {}
    init_from: str | None = None  # another run of the recipe whose final weights this one starts from
    # a pseudo-pair stage of the recipe (ExperimentConfig.pseudo): train on the shards it writes, made by the
    # run this one starts from (init_from)
    pseudo: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_flat_fields(cls, data: Any) -> Any:
        """A run as results.json files written before 2026-12-07 list it: the TrainConfig fields it set as
        its own (``total_tokens``, ``model_preset``, ``withheld`` ..., and ``overrides`` as ``--set`` text),
        nested under ``train`` the way the runner then built its TrainConfig."""
        if not isinstance(data, dict) or not set(data) & _FLAT_FIELDS:
            return data
        run = {key: value for key, value in data.items() if key not in _FLAT_FIELDS}
        flat = {key: data[key] for key in _FLAT_FIELDS if key in data}
        fragment = {key: flat[key] for key in ("withheld", "universe", "allow_pairs", "only_paired")
                    if flat.get(key)}
        seed = flat.get("seed", 0)
        train = {"total_tokens": flat.get("total_tokens", 8_000_000),
                 "batch_size": flat.get("batch_size", 32),
                 # trained before the defaults of 2026-12-07: the architecture options at None (the
                 # style's), which keeps each run's key
                 "model": {"preset": flat.get("model_preset", "tiny"), **SAVED_BEFORE_OPTIONS}, "seed": seed,
                 "fragment": {**fragment, "seed": seed},
                 "masking": {"input_budget": flat.get("input_budget", 64),
                             "target_budget": flat.get("target_budget", 64)}}
        if flat.get("snapshots"):
            train["snapshots"] = list(flat["snapshots"])
        train = merged(train, overrides_as_data(flat.get("overrides", [])))
        run["train"] = merged(train, run.get("train", {}))
        return run

    @model_validator(mode="after")
    def _train_is_a_train_config(self) -> TrainingRun:
        self.config()  # a ConfigError naming the bad field of ``train``
        return self

    def config(self, shards: Path = Path("."), out: Path = Path("."),
               init_from: Path | None = None, device_type: str | None = None) -> TrainConfig:
        """The run's TrainConfig with its data and run folders (and, for a continued run, the folder of the
        run it starts from). ``device_type`` ("cpu", "cuda"): the device the run is for, which
        ``model.attention="auto"`` is resolved for (None: this machine's device, as ``train`` resolves it);
        the ``device`` field itself stays as the run sets it, so the run's key names only the kernel."""
        train = merged(self.train, {"shards": str(shards), "out": str(out)})
        if init_from is not None:
            train["init_from"] = str(init_from)
        if device_type is not None:
            # a plan made on this machine for another (a GPU): the kernel that one will run
            kind = train.get("model", {}).get("attention", "auto")
            train = merged(train, {"model": {"attention": resolve_attention(kind, device_type)}})
        return validate(TrainConfig, train, "train")

    def with_train(self, **changes) -> TrainingRun:
        """A copy with ``changes`` laid over ``train`` (nested sections merged: ``fragment={"seed": 1}``)."""
        return self.model_copy(update={"train": merged(self.train, changes)})

    @property
    def withheld(self) -> list[tuple[str, str]]:
        return [tuple(pair) for pair in self.config().fragment.withheld]

    @property
    def universe(self) -> list[str] | None:
        return self.config().fragment.universe

    @property
    def allow_pairs(self) -> dict[str, int]:
        return dict(self.config().fragment.allow_pairs)

    @property
    def only_paired(self) -> bool:
        return self.config().fragment.only_paired

    @property
    def total_tokens(self) -> int:
        return self.config().total_tokens

    @property
    def batch_size(self) -> int:
        return self.config().batch_size

    @property
    def seed(self) -> int:
        return self.config().seed

    @property
    def snapshots(self) -> list[float]:
        return list(self.config().snapshots)

    @property
    def model_preset(self) -> str:
        return self.config().model.preset

    @property
    def input_budget(self) -> int:
        return self.config().masking.input_budget

    @property
    def target_budget(self) -> int:
        return self.config().masking.target_budget


# TrainingRun's fields before its TrainConfig moved under ``train`` (2026-12-07)
_FLAT_FIELDS = frozenset({"model_preset", "withheld", "universe", "total_tokens", "batch_size",
                          "input_budget", "target_budget", "seed", "allow_pairs", "only_paired", "overrides",
                          "snapshots"})


class PseudoStage(Config):
    """Pseudo-pairs generated by the run a continued run starts from (pairless.experiments.pseudo_pairs)."""

    direction: str  # "rgb:depth": generate depth for the training samples that expose rgb but not depth
    via: str | None = None  # chain through a binding modality
    schedule: str = "roar1"
    threshold: float | None = None  # consistency filter; None keeps every generated sample
    keep_fraction: float | None = None  # or keep the most consistent fraction


ADAPTER_PATHS = ("base", "shards", "out")  # AdapterConfig fields the runner fills in


class AdapterStage(_StageWithSettings):
    """A modality added to a frozen run of the recipe through a light adapter (pairless.training.adapter);
    evaluated, drawn and reported like a run, under ``name``."""

    name: str
    base: str  # the run of the recipe (trained without ``modality``) that stays frozen
    modality: str
    anchor: str  # the one modality the adapter is trained with
    label: str = ""
    total_tokens: int = Field(1_000_000, ge=1)
    structure_weight: float = Field(0.0, ge=0)  # M2M's structure-preserving term
    rank: int | None = None  # low-rank rows and head (large vocabularies)
    # the other AdapterConfig fields the stage sets, nested as in OUT/config.json ({"batch_size": 32}); the
    # rest are the adapter's defaults. Never one of the stage's own fields above, nor a path.
    settings: dict[str, Any] = {}

    @model_validator(mode="after")
    def _settings_are_an_adapter_config(self) -> AdapterStage:
        own = sorted(set(self.settings) & (set(AdapterStage.model_fields) | set(ADAPTER_PATHS)))
        if own:
            raise ValueError(f"settings: {', '.join(own)} set by the stage itself (or the runner), not in "
                             "settings")
        self.config()  # a ConfigError naming the bad field of ``settings``
        return self

    def config(self, base: Path = Path("."), shards: Path = Path("."),
               out: Path = Path(".")) -> AdapterConfig:
        """The stage's AdapterConfig on the frozen run in ``base``, its token shards and its output folder."""
        fields = {"modality": self.modality, "anchor": self.anchor, "total_tokens": self.total_tokens,
                  "rank": self.rank, "structure_weight": self.structure_weight}
        paths = {"base": str(base), "shards": str(shards), "out": str(out)}
        return validate(AdapterConfig, {**self.settings, **fields, **paths}, f"adapters.{self.name}.settings")


class Figure(Config):
    """A generation grid: src -> dst with one schedule, comparing the listed runs."""

    src: str
    dst: str
    schedule: str
    runs: list[str]  # training-run names, in column order
    num: int = 8
    scored_runs: list[str] = []  # runs whose generations are scored too, without a column in the grid
    # a binding modality to chain through: generate ``via`` from ``src``, then ``dst`` from both (4M's
    # chained generation), scored against the same samples' ``dst`` as the direct figure
    via: str | None = None


class ExperimentConfig(Config):
    recipe: str
    preset: Preset
    world: WorldStage
    tokenizers: TokenizerStage
    runs: list[TrainingRun]
    directions: list[str]  # "src:dst", src may be "a+b"
    eval_samples: int = Field(2500, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    figures: list[Figure] = []
    decoded_samples: int = Field(64, ge=0)  # generations scored with decoded metrics per direction
    # alignment probes (pairless.inference.probes) of every run, per modality pair of the directions
    probe_samples: int = Field(1000, ge=0)  # 0 = no probes
    probe_neighbours: int = Field(10, ge=1)  # k of mutual kNN; the probes need more samples than k
    # CE split into object and background tokens for directions into an image modality
    # (pairless.inference.regions; needs semseg in the shards); 0 = not measured
    region_samples: int = Field(1000, ge=0)
    seeds: int = Field(1, ge=1)  # training seeds per run (only training is repeated)
    # a user's dataset folder instead of the world (recipe own-data); the world stage is then unused
    data: str | None = None
    on_bad_sample: Literal["error", "skip"] = "error"  # what the tokenizer stages do with a bad file
    # pairs with no ground truth (never recorded together): what can be measured instead
    # (pairless.inference.unpaired), with the bridge modalities to chain through for each
    unpaired: list[str] = []
    bridges: dict[str, list[str]] = {}
    pseudo: dict[str, PseudoStage] = {}  # name -> pseudo-pair stage (transitive)
    adapters: list[AdapterStage] = []  # modalities added to frozen runs (adapter)
    # what the recipe adapted to the data or cannot do with it (own-data: a batch clipped to a small folder,
    # no direction to evaluate), in words: printed with the plan and shown in the report
    notes: list[str] = []

    def with_train_settings(self, settings: dict) -> ExperimentConfig:
        """A copy whose every run has ``settings`` (nested TrainConfig data: ``{"model": {"mlp": "gelu"}}``)
        laid over its own training settings (``pairless run --train-set``); a bad key or value raises
        ConfigError naming it, before anything runs. Adapters keep their own settings."""
        runs = [run.with_train(**settings) for run in self.runs]
        for run in runs:
            run.config()
        return self.model_copy(update={"runs": runs})

    def expanded_runs(self) -> list[TrainingRun]:
        """The runs with seeds expanded: ``name`` for seed 0, ``name@s1`` ... for the others."""
        out = []
        for run in self.runs:
            for seed in range(self.seeds):
                if seed == 0:
                    out.append(run)
                else:  # a continued run starts from the same seed's copy of its base run
                    init = seeded_name(run.init_from, seed) if run.init_from else None
                    seeded = run.with_train(seed=run.seed + seed, fragment={"seed": run.seed + seed})
                    out.append(seeded.model_copy(update={"name": seeded_name(run.name, seed),
                                                         "init_from": init}))
        return out

    def adapter_runs(self) -> list[TrainingRun]:
        """Each expanded adapter as a run (role ``adapter``; universe: its base's plus the added modality),
        for the stages that evaluate, probe and draw runs."""
        runs = {run.name: run for run in self.expanded_runs()}
        out = []
        for stage in self.expanded_adapters():
            base = runs[stage.base]
            universe = None if base.universe is None else [*base.universe, stage.modality]
            run = base.with_train(fragment={"universe": universe}, total_tokens=stage.total_tokens,
                                  snapshots=[])
            out.append(run.model_copy(update={"name": stage.name, "role": "adapter", "label": stage.label}))
        return out

    def expanded_adapters(self) -> list[AdapterStage]:
        """The adapters with seeds expanded like the runs: ``name@sN`` on the base run's ``@sN`` copy."""
        out = []
        for stage in self.adapters:
            for seed in range(self.seeds):
                settings = {**stage.settings, "seed": stage.settings.get("seed", 0) + seed}
                out.append(stage.model_copy(update={"name": seeded_name(stage.name, seed),
                                                    "base": seeded_name(stage.base, seed),
                                                    "settings": settings}))
        return out

    @model_validator(mode="after")
    def _continued_runs_name_their_base(self) -> ExperimentConfig:
        names = {run.name for run in self.runs}
        for run in self.runs:
            if run.init_from is not None and run.init_from not in names:
                raise ValueError(f"runs.{run.name}.init_from: no run named {run.init_from!r}")
            if run.pseudo is not None and (run.pseudo not in self.pseudo or run.init_from is None):
                raise ValueError(f"runs.{run.name}.pseudo: needs a pseudo stage named {run.pseudo!r} "
                                 f"(stages: {', '.join(self.pseudo) or 'none'}) and init_from (its "
                                 "generator)")
        for stage in self.adapters:
            if stage.base not in names or stage.name in names:
                raise ValueError(f"adapters.{stage.name}: base {stage.base!r} must be a run of the recipe "
                                 "and the name not one")
        return self
