"""Time `pairless run own-data` on a user-like folder (issue target: <= 20 minutes at --preset quick).

Builds a folder as a user would bring it: ~1,200 samples at 32x32 from the built-in world in folder form,
four modalities (rgb, depth, semseg and `thermal`, a modality the package does not know, declared in
modalities.yaml and derived from depth so that it has real structure: closer surfaces are warmer), where
depth and thermal are never recorded on the same sample, plus two junk files. Then runs the recipe once
and prints the wall-clock time, the time per stage and where the report is.

    python benchmarks/own_data_time.py --work /tmp/own-data-bench [--preset quick] [--scenes 1200]

Time it on an otherwise idle machine; the stages' own timings are in the report.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DECLARATION = """\
modalities:
  thermal:
    kind: image
    dtype: float32
    extensions: [.npy]
    value_range: [0, 60]
    viz: depth
    description: surface temperature, degrees C (closer is warmer)
"""


def make_folder(root: Path, scenes: int) -> Path:
    """The world in folder form, cut down to a fragmented four-modality user folder."""
    from pairless.commands.world import main as world_main

    world = root / "world"
    if not (world / "COMPLETE.json").is_file():
        assert world_main(["--out", str(world), "--num-scenes", str(scenes), "--format", "folder"]) == 0
    data = root / "my_data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    (data / "modalities.yaml").write_text(DECLARATION)
    for split in ("train", "val"):
        source = world / split
        for modality in ("rgb", "depth", "semseg"):
            shutil.copytree(source / modality, data / split / modality)
        depth_files = sorted((data / split / "depth").rglob("*.npy"))
        (data / split / "thermal").mkdir()
        for index, path in enumerate(depth_files):
            if index % 2:  # odd samples: thermal instead of depth (never both)
                depth = np.load(path)
                thermal = (20.0 + 15.0 * np.exp(-depth / 5.0)).astype(np.float32)
                target = data / split / "thermal" / path.relative_to(data / split / "depth")
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, thermal)
                path.unlink()
    (data / "train" / "rgb" / "Thumbs.db").write_bytes(b"junk")
    (data / "train" / "notes.csv").write_text("not a sample\n")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (the folder and results)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--scenes", type=int, default=1200)
    args = parser.parse_args()
    data = make_folder(args.work, args.scenes)
    out = args.work / f"results-{args.preset}"
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, "-m", "pairless", "run", "own-data", "--data", str(data),
               "--preset", args.preset, "--compare", "rgb:semseg", "--out", str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    results = json.loads((out / "own-data" / "results.json").read_text())
    print(f"own-data --preset {args.preset} on {args.scenes} scenes: {seconds / 60:.1f} min wall-clock")
    for stage, value in results["timings_seconds"].items():
        print(f"  {stage:<28} {value:8.0f} s")
    print(f"report: {out / 'own-data' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
