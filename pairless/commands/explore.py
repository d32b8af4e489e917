"""``pairless explore``: a local web page to look at trained runs side by side.

The page is :mod:`pairless.inference.explore_page`; this module parses the arguments, loads the runs and
serves it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.config import ConfigError
from pairless.inference.catalogue import discover
from pairless.inference.explore import ExploreSession
from pairless.inference.explore_page import CSS, build_app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless explore", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="RESULTS_OR_RUNS",
                        help="a recipe's results folder (e.g. results/demo), run folders, or folders of runs")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default: this machine only)")
    parser.add_argument("--split", default="val", help="the split whose samples are shown (default val)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 'random sample' button")
    add_runtime_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        catalogue = discover(args.paths)
        if not catalogue.runs:
            raise ValueError(f"no trained run under {', '.join(map(str, args.paths))}")
        runtime = resolve_runtime(args)
        print(f"pairless explore: models on {runtime.device}, {runtime.threads} torch thread(s)", flush=True)
        session = ExploreSession(catalogue, args.split, runtime.threads, runtime.device)
        session.warm(lambda line: print(line, flush=True))
        app = build_app(session, args.seed)
    except (ValueError, FileNotFoundError, KeyError, ConfigError) as error:
        print(f"pairless explore: {error}", file=sys.stderr)
        return 2
    try:
        app.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, quiet=True,
                   css=CSS, allowed_paths=[str(item.path.resolve()) for item in catalogue.results],
                   prevent_thread_lock=True)
    except OSError as error:
        print(f"pairless explore: cannot serve on {args.host}:{args.port} ({error}); try another --port",
              file=sys.stderr)
        return 2
    print(f"pairless explore: {len(catalogue.runs)} runs at http://{args.host}:{args.port} (Ctrl-C to stop)",
          flush=True)
    app.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
