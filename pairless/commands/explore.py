"""``pairless explore``: a local web page to look at trained runs side by side.

The page is :mod:`pairless.inference.explore_page`; this module parses the arguments, loads the runs and
serves it, or, with ``--once``, builds it, translates one held-out sample with every run through the
page's own callbacks, prints what the page would show (and writes its images with ``--out``) and exits:
the page checked without a browser, or a translation looked at on a machine that has none.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.config import ConfigError
from pairless.inference.catalogue import discover
from pairless.inference.explore import ExploreSession
from pairless.inference.explore_page import CSS, build_app, translate_once
from pairless.modalities import parse_chain
from pairless.utils.storage import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless explore", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="RESULTS_OR_RUNS",
                        help="a recipe's results folder (e.g. results/demo), run folders, or folders of runs")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default: this machine only)")
    parser.add_argument("--split", default="val", help="the split whose samples are shown (default val)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 'random sample' button")
    once = parser.add_argument_group(
        "--once", "translate one held-out sample with every run as the page's 'generate' button does, print "
        "the sample, each run's status (trained / ZERO-SHOT) and decoded metric, and exit (0 when some run "
        "translated it, 1 when none could); nothing is served")
    once.add_argument("--once", action="store_true", help="build the page, translate once, exit")
    once.add_argument("--from", dest="src", help="source modality, or a+b (default: the direction the page "
                      "opens on, a pair some run never saw together)")
    once.add_argument("--to", dest="dst", help="destination modality, or a chain normal:depth")
    once.add_argument("--sample", type=int, default=None, help="index in --split (default: the first "
                      "sample holding the sources and the destination, else the sources)")
    once.add_argument("--schedule", default=None, help="a schedule preset (default: the page's for the "
                      "destination: roar8, or ar-caption for text)")
    once.add_argument("--out", type=Path, default=None,
                      help="also write the input and output images and explore.md (the printed text) here")
    add_runtime_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.once and any(value is not None for value in (args.src, args.dst, args.sample, args.schedule,
                                                               args.out)):
        parser.error("--from, --to, --sample, --schedule and --out go with --once")
    if (args.src is None) != (args.dst is None):
        parser.error("--from and --to go together (or neither: the direction the page opens on)")
    try:
        catalogue = discover(args.paths)
        if not catalogue.runs:
            raise ValueError(f"no trained run under {', '.join(map(str, args.paths))}")
        runtime = resolve_runtime(args)
        print(f"pairless explore: models on {runtime.device}, {runtime.threads} torch thread(s)", flush=True)
        session = ExploreSession(catalogue, args.split, runtime.threads, runtime.device)
        session.warm(lambda line: print(line, flush=True))
        if args.once:
            return _once(args, session)
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


def _once(args, session: ExploreSession) -> int:
    """``--once``: the page built and its translation of one sample, printed (and written under ``--out``)."""
    chain = parse_chain(f"{args.src}:{args.dst}") if args.src is not None else None
    with _own_gradio_cache():
        build_app(session, args.seed)
        _, inputs, outputs, text = translate_once(session, chain, args.sample, args.schedule)
    print(text, flush=True)
    if args.out is not None:
        from PIL import Image

        args.out.mkdir(parents=True, exist_ok=True)
        lines = [text, ""]
        for prefix, gallery in (("input", inputs), ("output", outputs)):
            for number, (image, label) in enumerate(gallery):
                name = f"{prefix}-{number}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', label).strip('-')}.png"
                Image.fromarray(image).save(args.out / name)
                lines.append(f"![{prefix}: {label}]({name})")
        atomic_write_text(args.out / "explore.md", "\n".join(lines) + "\n")
        print(f"wrote {args.out}/explore.md and {len(inputs) + len(outputs)} images", flush=True)
    translated = [label for _, label in outputs if label != "ground truth"]
    return 0 if translated else 1


@contextmanager
def _own_gradio_cache():
    """Gradio copies the report's figures into its cache folder (``GRADIO_TEMP_DIR``, else the system's
    temp/gradio) when the page is built; a page that is never served gets a cache removed with it."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="pairless-explore-") as folder:
        os.environ["GRADIO_TEMP_DIR"] = folder
        try:
            yield
        finally:
            del os.environ["GRADIO_TEMP_DIR"]


if __name__ == "__main__":
    sys.exit(main())
