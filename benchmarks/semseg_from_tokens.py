"""How much of semseg do the rgb *tokens* carry? A pixel model's mIoU from raw rgb and from tokenized rgb.

The tiny study's rgb -> semseg target (decoded mIoU >= 0.7) asks a translation model to recover each
object's shape class from the rgb tokens. This benchmark asks the same of a model made for the job: a small
dilated CNN (receptive field ~30 px, the whole 32x32 image), trained with the same steps and seed twice:

- on the raw rendered rgb -> semseg of the world (what the scene shows),
- on the rgb decoded from its tokens -> the same semseg (what a pairless model's input holds),

and prints the val mIoU of each (the metric of the study's decoded semseg, over all val samples and over
the first 64 as the study's decoded metric uses). If the tokenized row is far below the target, no model
that reads the rgb tokens reaches it at this tokenizer: the limit is the rgb tokenizer, not the translator.

    python benchmarks/semseg_from_tokens.py --world OUT/cache/world-<hash> \
        --shards OUT/cache/shards-<hash> --tokenizers OUT/cache/tokenizers-<hash>

(``OUT`` is the folder of ``pairless run visual-pairs --preset tiny --out OUT``.)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pairless.metrics import miou
from pairless.modalities import SEMSEG_CLASSES
from pairless.tokenizers import load_tokenizer


def decoded_rgb(tokenizers: Path, shards: Path, split: str, count: int) -> np.ndarray:
    """The rgb of the first ``count`` samples of ``split`` as the rgb tokenizer decodes its tokens."""
    tokenizer = load_tokenizer(tokenizers, "rgb")
    ids = np.load(shards / split / "rgb.npy", mmap_mode="r")[:count]
    chunks = [tokenizer.decode(torch.as_tensor(np.asarray(ids[start:start + 500], dtype=np.int64)))
              for start in range(0, len(ids), 500)]
    return np.concatenate(chunks)


def as_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    values = torch.as_tensor(np.array(images), dtype=torch.float32).div(255.0)
    return values.permute(0, 3, 1, 2).contiguous()


def pixel_model(width: int = 64) -> nn.Module:
    """Six 3x3 convolutions, dilations 1, 1, 2, 4, 1: every pixel sees ~30 px, i.e. the whole object."""
    layers: list[nn.Module] = []
    channels = 3
    for dilation in (1, 1, 2, 4, 1):
        layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation), nn.GELU()]
        channels = width
    return nn.Sequential(*layers, nn.Conv2d(width, len(SEMSEG_CLASSES), 1))


def fit_and_score(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: np.ndarray,
                  steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = pixel_model()
    optimizer = torch.optim.AdamW(model.parameters(), 2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, len(train_x), (64,), generator=generator)
        with torch.autocast("cpu", torch.bfloat16):
            loss = F.cross_entropy(model(train_x[rows]).float(), train_y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        predicted = torch.cat([model(val_x[start:start + 250]).float().argmax(1)
                               for start in range(0, len(val_x), 250)]).numpy()
    classes = len(SEMSEG_CLASSES)
    return {"miou": miou(predicted, val_y, classes),
            "miou_first_64": miou(predicted[:64], val_y[:64], classes), "final_train_loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True, help="the world folder (raw rgb and semseg)")
    parser.add_argument("--shards", type=Path, required=True, help="token shards of that world")
    parser.add_argument("--tokenizers", type=Path, required=True, help="the tokenizers of those shards")
    parser.add_argument("--train-samples", type=int, default=8000)
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for folder in (args.world, args.shards, args.tokenizers):
        if not folder.is_dir():
            parser.error(f"{folder}: not a folder")

    def semseg(split: str, count: int) -> np.ndarray:
        return np.asarray(np.load(args.world / split / "semseg.npy", mmap_mode="r")[:count])

    def raw(split: str, count: int) -> np.ndarray:
        return np.asarray(np.load(args.world / split / "rgb.npy", mmap_mode="r")[:count])

    train_y = torch.as_tensor(semseg("train", args.train_samples).astype(np.int64))
    val_y = semseg("val", args.val_samples)
    def decoded(split: str, count: int) -> np.ndarray:
        return decoded_rgb(args.tokenizers, args.shards, split, count)

    header = f"{'rgb given to the pixel model':<32} {'val mIoU':>9} {'first 64':>9} {'train loss':>11}"
    print(f"{header} {'seconds':>8}")
    for name, load in (("raw (rendered)", raw), ("decoded from its tokens", decoded)):
        start = time.perf_counter()
        result = fit_and_score(as_input(load("train", args.train_samples)), train_y,
                               as_input(load("val", args.val_samples)), val_y, args.steps, args.seed)
        print(f"{name:<32} {result['miou']:>9.3f} {result['miou_first_64']:>9.3f} "
              f"{result['final_train_loss']:>11.3f} {time.perf_counter() - start:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
