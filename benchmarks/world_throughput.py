"""Throughput of the built-in world: scenes/s of render_world, and the wall time of ``pairless world``.

    .venv/bin/python benchmarks/world_throughput.py [--num-scenes 2000] [--repeats 3]

Prints medians over ``--repeats`` runs (targets: >= 500 scenes/s at 32x32 on
2 cores; ``pairless world --num-scenes 2000 --size 32`` under 30 s), plus
where the time goes (sampling, ray casting, text and scene dicts). The
machine may be shared: compare numbers taken within one run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pairless.world.render import render_batch
from pairless.world.samples import render_world, scene_dicts
from pairless.world.scenes import sample_scenes


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-scenes", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args(argv)
    count = args.num_scenes

    for size in args.sizes:
        total = _median_seconds(lambda size=size: render_world(count, size, seed=0, progress=False),
                                args.repeats)
        print(f"render_world {count} scenes at {size}x{size}: {count / total:8.0f} scenes/s "
              f"(median {total:.2f} s over {args.repeats})")

    scenes = sample_scenes(count, seed=0)
    sampling = _median_seconds(lambda: sample_scenes(count, seed=0), args.repeats)
    casting = _median_seconds(lambda: [render_batch(scenes.slice(s, s + 256), 32)
                                       for s in range(0, count, 256)],
                              args.repeats)
    rendered = render_batch(scenes.slice(0, 256), 32)
    describing = _median_seconds(lambda: scene_dicts(scenes.slice(0, 256), rendered, 32), args.repeats)
    print(f"  at 32x32, per 1000 scenes: sampling {1000 * sampling / count:.3f} s, "
          f"ray casting {1000 * casting / count:.3f} s, scene dicts {1000 * describing / 256:.3f} s")

    with tempfile.TemporaryDirectory() as folder:
        command = [str(Path(sys.executable).parent / "pairless"), "world", "--num-scenes", str(count),
                   "--size", "32"]

        def run_command() -> None:
            out = Path(folder) / f"world-{time.monotonic_ns()}"
            subprocess.run(command + ["--out", str(out)], check=True, capture_output=True)

        wall = _median_seconds(run_command, args.repeats)
    print(f"pairless world --num-scenes {count} --size 32 (packed, written): {wall:.2f} s wall "
          f"(median over {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
