"""Which runs the user points at, and what each has seen together.

- :func:`discover` reads a recipe's results folder (``results.json``), a run folder (``config.json`` +
  ``model.safetensors``), or a folder holding either, into a :class:`Catalogue` of runs with their role,
  withheld pairs, universe, shards and tokenizers.
- :func:`chain_status` says, per run and per link of a translation, whether the model ever saw the
  modalities of that link together in a training sample ("trained"), never ("zero-shot"), or in only
  ``k`` samples ("few-shot"), so that a zero-shot output is never mistaken for a trained one.

Used by the explorer (:mod:`pairless.inference.explore`), which loads the runs it finds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pairless.data.shards import open_shards
from pairless.inference.evaluate import run_shards_path
from pairless.inference.translations import tokenizers_of
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


def resolve_recorded(folder: Path, recorded: str) -> Path:
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
        path = resolve_recorded(folder, info["path"])
        shards = resolve_recorded(folder, paths["shards"]) if "shards" in paths else run_shards_path(path)
        tokenizers = (resolve_recorded(folder, paths["tokenizers"]) if "tokenizers" in paths
                      else tokenizers_of(shards))
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
    from pairless.inference.known import know_modalities

    for run in runs.values():  # a modality declared with the data is known to the page with no flag
        know_modalities(run.path, shards=run.shards, tokenizers=run.tokenizers)
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
