"""How long ``pairless import-4m-data`` takes on an ml-4m-layout folder (target: 1,000 samples x 4
modalities in <= 1 minute on 2 cores).

Writes, in a temporary folder, ml-4m's layout at its released shapes: ``tok_rgb@224``, ``tok_depth@224``,
``tok_normal@224`` as int16 ``.npy`` of shape (2 crops, 196) in webdataset tars of 1,000 samples (or plain
files with ``--form folders``), raw captions, and a WordPiece file of ml-4m's id layout and size (30,000
entries, 1,000 coordinate bins), then imports it with the shipped mapping and prints the time of the import
alone (writing the folder is not counted). Usage::

    python benchmarks/import_4m_data.py [--samples 1000] [--form tars|folders] [--format packed|webdataset]

Timings depend on what else runs on the machine: measure on an idle one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the layout writer of the tests

from ml4m_layout_helpers import sample_values, write_layout, write_vocabulary  # noqa: E402

from pairless.tokenizers.ml4m_data import Ml4mDataConfig, import_ml4m_data  # noqa: E402
from pairless.utils.threads import torch_threads  # noqa: E402

GRIDS = {"tok_rgb@224": (14, 14, 16384), "tok_depth@224": (14, 14, 8192), "tok_normal@224": (14, 14, 8192)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--form", choices=("tars", "folders"), default="tars")
    parser.add_argument("--format", choices=("packed", "webdataset"), default="packed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder, torch_threads(2):
        folder = Path(folder)
        values = sample_values(args.samples, {name: grid for name, grid in GRIDS.items()}, seed=0)
        # sample_values draws 64 base tokens per sample: widen to the released 196
        for name, (height, width, vocab) in GRIDS.items():
            values[name] = [(crops.repeat(4, axis=1)[:, :height * width] * 97 % vocab).astype("int16")
                            for crops in values[name]]
        del values["det"]
        write_layout(folder / "ml4m" / "train", values, args.form, shard_samples=1000)
        vocabulary = write_vocabulary(folder / "tokenizer.json", bins=1000, size=30000)
        started = time.perf_counter()
        summary = import_ml4m_data(Ml4mDataConfig(root=folder / "ml4m", out=folder / "shards",
                                                  text_tokenizer=vocabulary, format=args.format))
        seconds = time.perf_counter() - started
    members = sum(summary["present"]["train"].values())
    print(f"import-4m-data: {args.samples} samples x {len(summary['modalities'])} modalities ({members} "
          f"members, {args.form} -> {args.format}) in {seconds:.2f} s ({members / seconds:,.0f} members/s; "
          "target: 1,000 x 4 in <= 60 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
