"""The stages the fault-injection harness kills, at micro size, and the inputs they need.

``build_inputs(folder, stages)`` makes, once, the small inputs later stages
read (a world, tokenizers, token shards, a trained run, a recipe's results)
by running the real ``pairless`` commands; ``stage_cases(folder)`` returns a
:class:`fault_harness.StageCase` per stage whose commands read those inputs
through symlinks (or copies, where the stage writes beside its input, like
``pairless eval`` into the run folder). Settings are micro-sized so that one
uninterrupted run takes seconds; they are the same in CI and in the full
harness, only the number of kills differs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fault_harness import StageCase, pairless_command

# Stage order: each needs the inputs of the ones before it.
STAGES = ("world", "preview", "tokenizers", "tokenizers-image", "tokenize", "train", "eval", "generate",
          "run", "report")

MICRO_MODEL = ["--preset", "tiny", "--set", "model.dim=32", "--set", "model.heads=2",
               "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1"]
TOKENIZER_ARGS = ["--preset", "micro", "--set", "steps=8", "--modalities", "rgb", "depth", "caption"]
TRAIN_ARGS = [*MICRO_MODEL, "--withhold", "rgb:depth", "--total-tokens", "3000", "--batch-size", "8",
              "--set", "masking.input_budget=32", "--set", "masking.target_budget=32",
              "--set", "checkpoint_every=2", "--set", "log_every=1", "--resume"]
RUN_ARGS = ["--preset", "micro", "--set", "world.num_scenes=48",
            "--set", "tokenizers.settings.steps=8", "--set", "eval_samples=8",
            "--set", "decoded_samples=2",
            "--set", "runs.0.train.total_tokens=1500", "--set", "runs.1.train.total_tokens=1500"]


def _is_time_dependent(relative: Path) -> bool:
    """Files that record wall-clock times or throughput (never compared byte for byte)."""
    return relative.name in ("COMPLETE.json", "timings.json") \
        or any(part in ("tb", "checkpoints") for part in relative.parts)


def _without_timing(relative: Path, data: bytes) -> bytes:
    """Drop what depends on the clock: a log's throughput, a recipe's date and stage timings."""
    if relative.name == "log.jsonl":
        entries = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        for entry in entries:
            entry.pop("tokens_per_second", None)
            entry.pop("seconds", None)  # wall-clock time since the run began
        return json.dumps(entries, sort_keys=True).encode()
    if relative.name == "results.json":
        results = json.loads(data)
        for key in ("date", "timings_seconds"):
            results.pop(key, None)
        for run in results.get("runs", {}).values():
            if isinstance(run, dict):
                run.pop("train_seconds", None)
        return json.dumps(results, sort_keys=True).encode()
    if relative.name == "report.md":
        kept, skipping = [], False
        for line in data.decode().splitlines():
            if line.startswith("## "):
                skipping = line.startswith("## Time per stage")
            if not skipping and not line.startswith("Run on "):
                kept.append(line)
        return "\n".join(kept).encode()
    return data


def _link(inputs: Path, *names: str):
    def prepare(work: Path) -> None:
        for name in names:
            (work / name).symlink_to((inputs / name).resolve(), target_is_directory=True)
    return prepare


def _copy_run_link_rest(inputs: Path, copied: tuple[str, ...], linked: tuple[str, ...]):
    def prepare(work: Path) -> None:
        for name in copied:
            shutil.copytree(inputs / name, work / name, symlinks=True)
        _link(inputs, *linked)(work)
    return prepare


def input_commands() -> dict[str, list[str]]:
    """The commands (cwd = the inputs folder) that make each input, in order."""
    return {
        "data": pairless_command("world", "--out", "data", "--num-scenes", "64", "--size", "16"),
        "tok": pairless_command("tokenizers", "train", "--data", "data", "--out", "tok", *TOKENIZER_ARGS,
                                "--no-report"),
        "shards": pairless_command("tokenize", "--data", "data", "--tokenizers", "tok", "--out", "shards"),
        "run": pairless_command("train", "--shards", "shards", "--out", "run", *TRAIN_ARGS),
        "results": pairless_command("run", "demo", "--out", "results", *RUN_ARGS),
    }


# Which inputs each stage's case reads.
NEEDS = {"world": (), "preview": ("data",), "tokenizers": ("data",), "tokenizers-image": ("data",),
         "tokenize": ("data", "tok"),
         "train": ("data", "tok", "shards"), "eval": ("data", "tok", "shards", "run"),
         "generate": ("data", "tok", "shards", "run"), "run": (), "report": ("results",)}


def stage_cases(inputs: Path) -> dict[str, StageCase]:
    """One case per stage, reading the inputs under ``inputs`` (see :func:`build_inputs`)."""
    command = pairless_command
    return {
        "world": StageCase("world",
                           command("world", "--out", "world", "--num-scenes", "3000", "--size", "16"),
                           ("world",)),
        "preview": StageCase("preview", command("preview", "data", "--out", "grid.png", "--num", "6"),
                             ("grid.png",), prepare=_link(inputs, "data")),
        "tokenizers": StageCase("tokenizers", command("tokenizers", "train", "--data", "data", "--out", "tok",
                                                      *TOKENIZER_ARGS),
                                ("tok",), prepare=_link(inputs, "data"), ignore=_is_time_dependent),
        # The same without text (a failure here and not above points at the text tokenizer).
        "tokenizers-image": StageCase("tokenizers-image", command("tokenizers", "train", "--data", "data",
                                                                  "--out", "tok", *TOKENIZER_ARGS[:-1]),
                                      ("tok",), prepare=_link(inputs, "data"), ignore=_is_time_dependent),
        "tokenize": StageCase("tokenize", command("tokenize", "--data", "data", "--tokenizers", "tok",
                                                  "--out", "shards"),
                              ("shards",), prepare=_link(inputs, "data", "tok")),
        "train": StageCase("train", command("train", "--shards", "shards", "--out", "run", *TRAIN_ARGS),
                           ("run",), prepare=_link(inputs, "shards"), ignore=_is_time_dependent,
                           normalize=_without_timing),
        "eval": StageCase("eval", command("eval", "run", "--directions", "rgb:depth,depth:rgb,caption:rgb",
                                          "--num-samples", "8", "--batch-size", "4"),
                          ("run/eval.json",), prepare=_copy_run_link_rest(inputs, ("run",), ("shards",))),
        "generate": StageCase("generate",
                              command("generate", "run", "--from", "rgb", "--to", "depth", "--num", "3",
                                                  "--batch-size", "3", "--out", "gen"),
                              ("gen",), prepare=_link(inputs, "run", "shards"), ignore=_is_time_dependent),
        # The runner writes eval-<key>.json into finished run folders, after their COMPLETE.json.
        "run": StageCase("run", command("run", "demo", "--out", "results", *RUN_ARGS), ("results",),
                         ignore=_is_time_dependent, normalize=_without_timing,
                         stale_markers=lambda folder: folder.parent.name == "runs"),
        "report": StageCase("report", command("report", "results/demo"), ("results/demo",),
                            prepare=_copy_run_link_rest(inputs, ("results",), ()), ignore=_is_time_dependent,
                            normalize=_without_timing),
    }


def build_inputs(inputs: Path, stages: list[str], run_command) -> None:
    """Make the inputs ``stages`` need under ``inputs`` (skipping complete ones).

    ``run_command(cmd, cwd)`` runs one command.
    """
    inputs.mkdir(parents=True, exist_ok=True)
    needed = {name for stage in stages for name in NEEDS[stage]}
    for name, command in input_commands().items():
        if name in needed and not (inputs / name / "COMPLETE.json").is_file() \
                and not (inputs / name / "demo" / "report.md").is_file():
            run_command(command, inputs)
