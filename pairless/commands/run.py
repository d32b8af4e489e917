"""``pairless run RECIPE``: every stage a recipe needs, cached by config hash and resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.commands.arguments import pair_argument
from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.config import ConfigError, apply_overrides, laid_over
from pairless.data.validate import DataError
from pairless.experiments.recipes import RECIPES, get_recipe
from pairless.experiments.references import parse_reference
from pairless.experiments.runner import fitted_plan, run_experiment
from pairless.experiments.scale import presets_epilog
from pairless.training.compute import GPU_PROFILES, PROFILE_NAMES
from pairless.utils.runtime import Runtime
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
    parser.add_argument("--device-profile", choices=PROFILE_NAMES, default="cpu",
                        help="with --dry-run: the device the plan's times and memory are for (h100, h200, "
                             "a100: stated peak bf16 TFLOP/s and an assumed MFU; cpu: measured here)")
    parser.add_argument("--config-out", type=Path, help="write the resolved config as JSON and exit")
    add_runtime_arguments(parser)  # every stage's thread count and device
    return parser


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
        references = dict(parse_reference(text) for text in args.reference)
    except (ConfigError, DataError, ValueError) as error:
        parser.error(str(error))
    if args.config_out:
        atomic_write_json(args.config_out, config.model_dump(mode="json"))
        return 0
    if args.dry_run:
        profile = GPU_PROFILES.get(args.device_profile)  # None: this CPU, measured
        # timed with the thread count the run would use (--threads, else the usable cores)
        threads = Runtime.resolve(args.threads, "cpu").threads
        # a user's budgets fitted to the folder as the run will fit them
        print(fitted_plan(config, args.out).summary(profile, measure_seconds=1.0, threads=threads))
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
