"""Time `pairless run own-data` on a user-like folder (issue target: <= 20 minutes at --preset quick).

Builds a folder as a user would bring it: ~1,200 samples at 32x32 from the built-in world in folder form,
four modalities (rgb, depth, semseg and `thermal`, a modality the package does not know, declared in
modalities.yaml and derived from depth so that it has real structure: closer surfaces are warmer), where
depth and thermal are never recorded on the same sample, plus two junk files. Then runs the recipe once
and prints the wall-clock time, the time per stage and where the report is.

    python benchmarks/own_data_time.py --work /tmp/own-data-bench [--preset quick] [--scenes 1200]

Time it on an otherwise idle machine; the stages' own timings are in the report.

Since thermal is a known function of depth here, the script then checks the report's proxies against the
truth they stand in for: for the held-out samples the depth -> thermal analysis used (which have depth, so
no thermal file), the true thermal is f(their real depth). It prints the rmse against that truth of the
direct, no-input and bridge-proxy predictions (all decoded by the thermal tokenizer), beside the report's
proxy-based numbers: if the proxies are honest, direct beats no input against the truth as well.

    python benchmarks/own_data_time.py --work /tmp/own-data-bench --check-only   # the check, no re-run
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
                thermal = thermal_of(np.load(path))
                target = data / split / "thermal" / path.relative_to(data / split / "depth")
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, thermal)
                path.unlink()
    (data / "train" / "rgb" / "Thumbs.db").write_bytes(b"junk")
    (data / "train" / "notes.csv").write_text("not a sample\n")
    return data


def thermal_of(depth: np.ndarray) -> np.ndarray:
    """The benchmark's thermal modality: closer surfaces are warmer."""
    return (20.0 + 15.0 * np.exp(-depth / 5.0)).astype(np.float32)


def check_against_truth(data: Path, recipe: Path) -> None:
    """rmse of the depth -> thermal predictions against the true thermal of the same samples."""
    from pairless.tokenizers import load_tokenizer

    folder = recipe / "unpaired" / "depth-to-thermal"
    results = json.loads((recipe / "results.json").read_text())
    samples = json.loads((folder / "samples.json").read_text())
    recorded = Path(results["paths"]["tokenizers"])  # relative to where the run was started: the work folder
    root = recorded if recorded.is_absolute() else recipe.parents[1] / recorded
    tokenizer = load_tokenizer(root, "thermal")
    depths = [np.load(data / "val" / "depth" / f"{sample}.npy") for sample in samples["ids"]]
    truth = np.stack([thermal_of(depth) for depth in depths])
    print("depth -> thermal against the true thermal (rmse, degrees; lower is better):")
    for label in ("direct", "no_input"):
        predicted = tokenizer.decode(np.load(folder / f"thermal.{label}.tokens.npy"))
        print(f"  {label:<22} {float(np.sqrt(np.mean((predicted - truth) ** 2))):.3f}")
    for path in sorted(folder.glob("thermal.from_*.tokens.npy")):
        bridge = path.name.split(".")[1].removeprefix("from_")
        rows = samples[f"has_{bridge}"]
        predicted = tokenizer.decode(np.load(path))
        error = float(np.sqrt(np.mean((predicted - truth[rows]) ** 2)))
        print(f"  {'proxy from real ' + bridge:<22} {error:.3f}")
    ceiling = tokenizer.decode(tokenizer.encode(truth))
    print(f"  {'tokenizer ceiling':<22} {float(np.sqrt(np.mean((ceiling - truth) ** 2))):.3f}")
    proxies = results["unpaired"]["depth:thermal"]["bridges"]
    print("the report's proxy-based rmse (direct / no input): "
          + ", ".join(f"via {bridge} {v['direct']['rmse']:.3f} / {v['no_input']['rmse']:.3f}"
                      for bridge, v in proxies.items() if "direct" in v))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (the folder and results)")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--scenes", type=int, default=1200)
    parser.add_argument("--check-only", action="store_true", help="only check the proxies of an earlier run")
    args = parser.parse_args()
    out = args.work / f"results-{args.preset}"
    if args.check_only:
        check_against_truth(args.work / "my_data", out / "own-data")
        return 0
    data = make_folder(args.work, args.scenes)
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
    check_against_truth(data, out / "own-data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
