"""``pairless run RECIPE``: every stage a recipe needs, cached by config hash and resumable."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from pairless.commands.arguments import pair_argument
from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.config import ConfigError, apply_overrides, laid_over, overrides_as_data
from pairless.data.validate import DataError
from pairless.experiments.recipes import RECIPES, get_recipe
from pairless.experiments.references import parse_reference
from pairless.experiments.runner import fitted_plan, run_experiment
from pairless.experiments.scale import presets_epilog
from pairless.training.compute import GPU_PROFILES, PROFILE_NAMES, DeviceProfile, device_profile
from pairless.utils.runtime import DEVICE_CHOICES, DEVICE_PATTERN, Runtime, resolve_device
from pairless.utils.storage import atomic_write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless run", description=__doc__.splitlines()[0],
                                     epilog=presets_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(RECIPES), help="which experiment")
    parser.add_argument("--preset", default="tiny",
                        help="micro (seconds, tests) | quick (CPU, first look) | tiny (CPU) | paper (GPU)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="results root (cache shared by recipes)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="training seeds per run (mean and spread reported)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. world.num_scenes=5000 (repeatable)")
    parser.add_argument("--train-set", dest="train_settings", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a training setting for every run of the recipe, laid over each run's own, e.g. "
                             "model.mlp=gelu (repeatable; the keys of `pairless train --set`)")
    parser.add_argument("--data", default=None,
                        help="own-data: your dataset folder (train/ and val/; modalities.yaml for new ones). "
                             "Bad files (unreadable, NaN, wrong size or extension) are skipped, counted and "
                             "listed in the report; their samples keep the rest (no --on-bad-sample needed)")
    parser.add_argument("--withhold", action="append", default=[], type=pair_argument, metavar="A:B",
                        help="own-data: also never show A and B together in training, to simulate a pair "
                             "never recorded together (repeatable)")
    parser.add_argument("--compare", action="append", default=[], type=pair_argument, metavar="A:B",
                        help="own-data: a pair with paired samples to run the study's zero-shot vs "
                             "all-data comparison on (repeatable)")
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=RUN",
                        help="an outside model (e.g. an imported 4M-L) evaluated on the same samples and "
                             "printed as a column of its own; its tokenizers must be the recipe's "
                             "(repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--device-profile", choices=PROFILE_NAMES, default=None,
                        help="with --dry-run: the device the plan's times, attention kernel and memory are "
                             "for (h100, h200, a100: stated peak bf16 TFLOP/s and an assumed MFU; cpu: "
                             "measured here). Default: the --device's (cuda: this machine's GPU, or an H100 "
                             "where there is none; auto: this machine's GPU if any, else its CPU)")
    parser.add_argument("--config-out", type=Path, help="write the resolved config as JSON and exit")
    add_runtime_arguments(parser)  # every stage's thread count and device
    return parser


def planned_profile(profile_name: str | None, device: str | None) -> DeviceProfile | None:
    """The device a dry run plans for (None: this CPU, measured): ``--device-profile`` when given, else the
    one ``--device`` names: ``cuda[:N]`` this machine's GPU, or where there is none the H100 profile (said
    in the plan); ``auto`` (or none) this machine's GPU if it has one, else its CPU. ValueError when the two
    name different kinds of device."""
    if device is not None and not DEVICE_PATTERN.match(device):
        raise ValueError(f"--device: {device!r} is not one of {DEVICE_CHOICES}")
    wants_gpu = device is not None and device.startswith("cuda")
    if profile_name is not None:
        profile = GPU_PROFILES.get(profile_name)
        if device not in (None, "auto") and wants_gpu != (profile is not None):
            raise ValueError(f"--device {device} and --device-profile {profile_name} name different devices: "
                             "give one of them")
        return profile
    if device in (None, "auto") and not torch.cuda.is_available():
        return None
    if device == "cpu":
        return None
    if torch.cuda.is_available():
        return device_profile(resolve_device(device or "auto"))
    assumed = GPU_PROFILES["h100"]  # planning here for a GPU this machine does not have
    return dataclasses.replace(assumed, name=f"{assumed.name} (assumed for --device {device}: no GPU here; "
                                             "--device-profile names another)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = get_recipe(args.recipe, args.preset, data=args.data, withhold=args.withhold,
                            compare=args.compare)
    except (ConfigError, DataError) as error:  # the data or a recipe option: the message, without usage
        print(f"pairless run: {error}", file=sys.stderr)
        return 2
    try:
        if args.seeds is not None:
            config = laid_over(config, {"seeds": args.seeds})
        config = apply_overrides(config, args.overrides)
        if args.train_settings:
            config = config.with_train_settings(overrides_as_data(args.train_settings))
        references = dict(parse_reference(text) for text in args.reference)
    except (ConfigError, DataError, ValueError) as error:
        parser.error(str(error))
    if args.config_out:
        atomic_write_json(args.config_out, config.model_dump(mode="json"))
        return 0
    if args.dry_run:
        try:
            profile = planned_profile(args.device_profile, args.device)  # None: this CPU, measured
        except ValueError as error:
            parser.error(str(error))
        # timed with the thread count the run would use (--threads, else the usable cores)
        threads = Runtime.resolve(args.threads, "cpu").threads
        device_type = profile.device_type if profile is not None else "cpu"
        # a user's budgets fitted to the folder as the run will fit them
        plan = fitted_plan(config, args.out, device_type)
        print(plan.summary(profile, measure_seconds=1.0, threads=threads))
        for name, run in references.items():
            print(f"outside model {name}: {run} (its tokenizers are checked once the recipe's exist)")
        return 0
    for name, run in references.items():
        if not (run / "model.safetensors").is_file():
            parser.error(f"--reference {name}={run}: no model.safetensors there (not a run folder)")
    try:
        runtime = resolve_runtime(args)
    except ValueError as error:
        print(f"pairless run: {error}", file=sys.stderr)
        return 2
    try:
        run_experiment(config, args.out, runtime, references)
    except ValueError as error:
        if not str(error).startswith("--reference"):
            raise
        print(f"pairless run: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
