"""Generation speed: ROAR 8 steps for 64 images (target <= 10 s) and AR caption tokens/s with and
without the KV cache.

    python benchmarks/generate_speed.py                      # tiny preset, rgb -> depth and rgb -> caption
    python benchmarks/generate_speed.py --repeats 3 --num-images 64 --num-captions 16

An untrained model of the preset is timed (speed does not depend on the
weights; an untrained model rarely emits EOS, so every caption runs to the
full padded length, the worst case). Token layout as in
``benchmarks/eval_speed.py``. Prints figures only, with the load average.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from eval_speed import load, synthetic_shards, tiny_world_specs

from pairless.inference.generate import GenerationSchedule, generate, schedule_preset
from pairless.model import FourM, ModelConfig


def timed(function, repeats: int) -> tuple[float, list[float], object]:
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--num-captions", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: automatic)")
    args = parser.parse_args()
    specs = tiny_world_specs()
    shards = synthetic_shards(specs, max(args.num_images, args.num_captions))
    torch.manual_seed(0)
    model = FourM(ModelConfig.from_preset(args.preset), specs).eval()
    print(f"generation speed: preset {args.preset}, threads {args.threads or 'automatic'} {load()}")

    rgb = {"rgb": torch.from_numpy(shards.tokens["rgb"][: args.num_images]).long()}
    for preset in ("roar8", "roar1"):
        schedule = schedule_preset(preset)

        def roar(schedule=schedule):
            return generate(model, rgb, ["rgb"], "depth", specs, model.modalities, schedule,
                            torch.Generator().manual_seed(0), threads=args.threads)

        roar()  # warm-up
        median, seconds, _ = timed(roar, args.repeats)
        print(f"  {preset} (CFG {schedule.guidance_scale:g}) rgb->depth, {args.num_images} images: median "
              f"{median:.2f} s (runs {', '.join(f'{s:.2f}' for s in seconds)}) {load()}")
    print("  target: roar8 for 64 images in <= 10 s")

    captions = {"rgb": rgb["rgb"][: args.num_captions]}
    schedule = GenerationSchedule(scheme="ar", temperature=0.3, top_p=0.8)
    results = {}
    # interleaved, so that both see the same machine load
    for _ in range(args.repeats):
        for use_cache in (True, False):
            start = time.perf_counter()
            ids = generate(model, captions, ["rgb"], "caption", specs, model.modalities, schedule,
                           torch.Generator().manual_seed(0), use_cache=use_cache, threads=args.threads)
            elapsed = time.perf_counter() - start
            tokens = int((ids != specs["caption"].pad_id).sum())
            results.setdefault(use_cache, []).append(tokens / elapsed)
    for use_cache, rates in results.items():
        print(f"  AR rgb->caption, {args.num_captions} captions x {specs['caption'].num_tokens} positions, "
              f"{'with' if use_cache else 'without'} KV cache: median {statistics.median(rates):,.0f} "
              f"tokens/s (runs {', '.join(f'{r:,.0f}' for r in rates)})")
    ratio = statistics.median([a / b for a, b in zip(results[True], results[False], strict=True)])
    print(f"  KV cache speed-up (median of per-repeat ratios): {ratio:.1f}x {load()}")


if __name__ == "__main__":
    main()
