"""One command that tells whether a machine with a GPU runs pairless well: minutes, not a study.

    python benchmarks/gpu_check.py                      # on a GPU machine: the real check (~5 min on one GPU)
    python benchmarks/gpu_check.py --device cpu --micro  # CI's smoke test of the same code, micro shapes

Checks, each printed as ok / FAIL / skip with its numbers (and all of them as JSON with ``--json``):

  environment  the torch build, CUDA, the device and its memory, bf16 support, the GPU count
  precision    every nn.Linear of a training forward computes in bf16 under autocast; AdamW is fused
  throughput   training steps of the base model (micro: a tiny one) at the paper shape (batch 256 split into
               micro-batches, 128 input + 128 target tokens) for explicit / sdpa / sdpa + compile: valid
               tokens/s and MFU from the FLOPs the model executes (6N beside it, labelled: it overcounts an
               encoder-decoder); the peak is the device's stated bf16 dense peak where known, else measured
  memory       peak device memory of a base and a large step at the micro-batch micro_batch_size=auto picks,
               against the memory model's prediction (pairless.training.memory)
  plan         (in throughput) the dry run's step time for this device's --device-profile against the measured
  resume       a real ``pairless train`` on small shards, killed (SIGKILL) after a checkpoint, resumed, and
               compared with an uninterrupted run: bit-identical weights on the CPU, within 1e-2 on a GPU
  inference    ``pairless eval`` and ``pairless generate`` on the device against the same on the CPU
  multi-gpu    ``torchrun`` DDP and FSDP2 over NCCL with 2 GPUs when there are two or more (else skip)

The paper shape is the ``paper`` preset's: 64x64 images, 4x downsampling tokenizers, so 16x16 = 256 tokens of
a 1,000-code vocabulary for each of rgb / depth / normal / semseg; a caption and det of up to 64 text tokens
(vocabulary 3,000); a 16-token global vector (1,024 codes). Stated peaks: NVIDIA's dense bf16 Tensor Core
figures (H100 / H200 SXM 989 TFLOP/s, A100 312); a PCIe card or a capped clock gives less.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the FLOP count of train_throughput.py
from train_throughput import step_flops as executed_step_flops  # noqa: E402

from pairless.batch import MaskedBatch, TokenSpec
from pairless.data.shards import ShardSplit, write_shards
from pairless.model import FourM, ModelConfig
from pairless.training import memory, memory_fit
from pairless.training.compute import device_profile, training_flops
from pairless.training.masking import Masker, MaskingConfig
from pairless.training.train import build_optimizer
from pairless.utils.runtime import resolve_device

STATED_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


@dataclass
class Check:
    """One check's outcome: ``status`` ok / FAIL / skip, the numbers it measured and a line of explanation."""

    name: str
    status: str = "ok"
    numbers: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class Shape:
    """The model presets and batch the throughput and memory checks use."""

    model: str
    larger: str
    batch_size: int
    micro_batch_size: int
    budget: tuple[int, int]
    grid: int
    steps: int
    model_overrides: dict = field(default_factory=dict)


PAPER = Shape(model="base", larger="large", batch_size=256, micro_batch_size=64, budget=(128, 128), grid=16,
              steps=6)
MICRO = Shape(model="tiny", larger="tiny", batch_size=8, micro_batch_size=4, budget=(24, 24), grid=4, steps=2,
              model_overrides=dict(dim=32, heads=2, encoder_layers=1, decoder_layers=1))


def paper_specs(grid: int) -> dict[str, TokenSpec]:
    """Token specs at the paper preset's shape (``grid`` x ``grid`` tokens per image modality)."""
    specs = {name: TokenSpec(name, "image", grid * grid, 1000, grid=(grid, grid))
             for name in ("rgb", "depth", "normal", "semseg")}
    for name in ("caption", "det"):
        specs[name] = TokenSpec(name, "sequence", 64, 3000, pad_id=0, bos_id=2, eos_id=3)
    specs["embed"] = TokenSpec("embed", "vector", 16, 1024)
    return specs


def masked_batches(specs: dict[str, TokenSpec], shape: Shape, count: int) -> list[MaskedBatch]:
    """``count`` masked micro-batches of random tokens (captions of random length), masked on the host."""
    generator = torch.Generator().manual_seed(0)
    masker = Masker(specs, MaskingConfig(input_budget=shape.budget[0], target_budget=shape.budget[1]))
    batches = []
    for _ in range(count):
        size = shape.micro_batch_size
        tokens = {name: torch.randint(4, spec.vocab_size, (size, spec.num_tokens), generator=generator)
                  for name, spec in specs.items()}
        for name, spec in specs.items():
            if spec.kind == "sequence":
                lengths = torch.randint(8, spec.num_tokens - 1, (size, 1), generator=generator)
                position = torch.arange(spec.num_tokens).unsqueeze(0)
                tokens[name] = torch.where(position < lengths, tokens[name],
                                           torch.where(position == lengths, spec.eos_id, spec.pad_id))
        views = torch.ones(size, len(specs), dtype=torch.bool)
        batches.append(masker(tokens, views, generator))
    return batches


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(preset: str, shape: Shape, specs, device: torch.device, **options) -> FourM:
    torch.manual_seed(0)
    config = ModelConfig.from_preset(preset, **shape.model_overrides, **options)
    return FourM(config, specs).to(device)


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def train_steps(model: FourM, batches, device: torch.device, steps: int, shape: Shape,
                compiled: bool = False) -> dict:
    """Median wall time of an optimizer step over ``steps`` steps after one warm-up (two when compiled)."""
    optimizer = build_optimizer(model, argparse.Namespace(peak_lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05))
    forward = torch.compile(model) if compiled else model
    accumulation = max(1, shape.batch_size // shape.micro_batch_size)
    on_device = [batch.to(device) for batch in batches]
    times, flops, tokens = [], [], []
    for step in range((2 if compiled else 1) + steps):
        synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for index in range(accumulation):
            with autocast(device):
                loss, _ = forward(on_device[index % len(on_device)])
            (loss / accumulation).backward()
        optimizer.step()
        synchronize(device)
        if step >= (2 if compiled else 1):
            times.append(time.perf_counter() - start)
            flops.append(sum(executed_step_flops(model, on_device[i % len(on_device)])
                             for i in range(accumulation)))
            tokens.append(sum(on_device[i % len(on_device)].num_valid_tokens() for i in range(accumulation)))
    median_tokens = statistics.median(tokens)
    return dict(seconds=statistics.median(times), flops=statistics.median(flops), tokens=median_tokens,
                six_n=6.0 * model.num_parameters() * median_tokens)


def workload(preset: str, shape: Shape, specs, device: torch.device, micro_batch: int,
             attention: str = "sdpa") -> memory.Workload:
    config = ModelConfig.from_preset(preset, **shape.model_overrides, attention=attention)
    return memory.Workload(model=config, specs=specs, input_tokens=shape.budget[0],
                           target_tokens=shape.budget[1], micro_batch=micro_batch, device_type=device.type)


def device_peak(device: torch.device) -> tuple[float, str]:
    """The bf16 dense peak FLOP/s the MFU is relative to: stated for known GPUs, else a measured matmul."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in STATED_BF16_PEAK.items():
            if key in name:
                return peak, f"stated {key} bf16 dense"
    size = 8192 if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    torch.matmul(a, a)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(5):
        torch.matmul(a, a)
    synchronize(device)
    return 5 * 2.0 * size**3 / (time.perf_counter() - start), "measured bf16 matmul"


def check_environment(device: torch.device, _shape: Shape, _work: Path) -> Check:
    numbers = dict(torch=torch.__version__, cuda_build=torch.version.cuda, device=str(device),
                   gpus=torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        numbers |= dict(name=properties.name, memory_gib=round(properties.total_memory / 2**30, 1),
                        bf16=torch.cuda.is_bf16_supported())
        if not numbers["bf16"]:
            return Check("environment", "FAIL", numbers, "this GPU has no bf16: the training path needs it")
    return Check("environment", "ok", numbers)


def check_precision(device: torch.device, shape: Shape, _work: Path) -> Check:
    specs = paper_specs(shape.grid)
    model = build_model(shape.model if device.type == "cuda" else "tiny", shape, specs, device)
    dtypes: set[torch.dtype] = set()
    hooks = [module.register_forward_hook(lambda _m, _i, output: dtypes.add(output.dtype))
             for module in model.modules() if isinstance(module, torch.nn.Linear)]
    with autocast(device):
        model(masked_batches(specs, shape, 1)[0].to(device))
    for hook in hooks:
        hook.remove()
    optimizer = build_optimizer(model, argparse.Namespace(peak_lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05))
    fused = bool(optimizer.defaults.get("fused"))
    numbers = dict(linear_output_dtypes=sorted(str(dtype) for dtype in dtypes), adamw_fused=fused)
    good = dtypes == {torch.bfloat16} and fused
    return Check("precision", "ok" if good else "FAIL", numbers,
                 "" if good else "a Linear ran outside bf16, or AdamW is not fused")


def check_throughput(device: torch.device, shape: Shape, _work: Path) -> Check:
    specs = paper_specs(shape.grid)
    batches = masked_batches(specs, shape, 4)
    peak, peak_kind = device_peak(device)
    numbers: dict = dict(peak_tflops=round(peak / 1e12, 1), peak_kind=peak_kind, model=shape.model,
                         batch=shape.batch_size, micro_batch=shape.micro_batch_size)
    kinds = [("explicit", False), ("sdpa", False), ("sdpa+compile", True)]
    for label, compiled in kinds:
        if compiled and device.type != "cuda":  # compile == eager on the CPU: tests/training/test_pipeline.py
            numbers[label] = "not timed on the CPU (torch.compile gives no gain there)"
            continue
        attention = label.split("+")[0]
        model = build_model(shape.model, shape, specs, device, attention=attention)
        try:
            result = train_steps(model, batches, device, shape.steps, shape, compiled=compiled)
        except Exception as error:  # a kernel or compiler failure is this check's finding, not a crash
            numbers[label] = f"failed: {type(error).__name__}: {str(error)[:200]}"
            continue
        numbers[label] = dict(tokens_per_second=round(result["tokens"] / result["seconds"]),
                              step_seconds=round(result["seconds"], 4),
                              mfu_executed=round(result["flops"] / result["seconds"] / peak, 3),
                              mfu_6n=round(result["six_n"] / result["seconds"] / peak, 3))
        del model
    profile = device_profile(device)  # what `--device cuda` plans with on this GPU (None on the CPU)
    if profile is not None and isinstance(numbers.get("sdpa"), dict):
        config = ModelConfig.from_preset(shape.model, **shape.model_overrides, attention="sdpa")
        flops = shape.batch_size * training_flops(config, specs, *shape.budget, shape.micro_batch_size)
        planned = flops / (profile.peak_tflops * 1e12 * profile.mfu)
        numbers["plan"] = dict(profile=profile.name, step_seconds=round(planned, 4),
                               measured_over_plan=round(numbers["sdpa"]["step_seconds"] / planned, 2))
    measured = [value["mfu_executed"] for value in numbers.values()
                if isinstance(value, dict) and "mfu_executed" in value]
    if not measured:
        return Check("throughput", "FAIL", numbers, "no attention kind ran")
    best = max(measured)
    status = "ok" if device.type == "cpu" or best >= 0.40 else "FAIL"
    return Check("throughput", status, numbers, f"best executed MFU {best:.2f} (target on a GPU: >= 0.40)")


def peak_step_memory(preset: str, shape: Shape, device: torch.device, micro_batch: int) -> float:
    """Peak bytes of one optimizer step of ``preset`` at ``micro_batch`` samples per pass (CUDA)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    specs = paper_specs(shape.grid)
    model = build_model(preset, shape, specs, device, attention="sdpa")
    single = Shape(**{**asdict(shape), "batch_size": micro_batch, "micro_batch_size": micro_batch})
    train_steps(model, masked_batches(specs, single, 1), device, 1, single)
    peak = torch.cuda.max_memory_allocated(device)
    del model
    torch.cuda.empty_cache()
    return float(peak)


def largest_fitting_micro_batch(preset: str, shape: Shape, specs, device: torch.device,
                                available: int) -> int:
    """What ``micro_batch_size=auto`` picks: the largest divisor of the batch the memory model fits."""
    for size in sorted(memory_fit.divisors(shape.batch_size), reverse=True):
        if memory.needed(memory.estimate(workload(preset, shape, specs, device, size)))[0] <= available:
            return size
    return 1


def check_memory(device: torch.device, shape: Shape, _work: Path) -> Check:
    if device.type != "cuda":
        return Check("memory", "skip", note="device memory is measured on CUDA only (the CPU's peak RSS is "
                                            "checked against the memory model by the test suite)")
    total = torch.cuda.get_device_properties(device).total_memory
    specs = paper_specs(shape.grid)
    numbers: dict = dict(device_gib=round(total / 2**30, 1))
    good = True
    for preset in dict.fromkeys((shape.model, shape.larger)):
        micro = largest_fitting_micro_batch(preset, shape, specs, device, total)
        predicted = memory.estimate(workload(preset, shape, specs, device, micro)).device
        try:
            measured = peak_step_memory(preset, shape, device, micro)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            numbers[preset] = dict(micro_batch=micro, predicted_gib=round(predicted / 2**30, 1),
                                   measured="out of memory")
            good = False
            continue
        numbers[preset] = dict(micro_batch=micro, predicted_gib=round(predicted / 2**30, 1),
                               measured_gib=round(measured / 2**30, 1),
                               measured_over_predicted=round(measured / predicted, 2))
    return Check("memory", "ok" if good else "FAIL", numbers,
                 "micro-batch as micro_batch_size=auto picks it; the model's prediction against the peak")


def write_small_shards(root: Path, count: int = 64) -> Path:
    """Token shards with learnable structure (depth and normal are functions of rgb)."""
    specs = {name: TokenSpec(name, "image", 16, 32, grid=(4, 4)) for name in ("rgb", "depth", "normal")}

    def split(size: int, seed: int) -> ShardSplit:
        base = np.random.default_rng(seed).integers(0, 8, (size, 16))
        tokens = {"rgb": base * 4, "depth": base * 3, "normal": base + 1}
        return ShardSplit([f"s{index:04d}" for index in range(size)], tokens,
                          {name: np.ones(size, dtype=bool) for name in specs})

    return write_shards(root, {"train": split(count, 0), "val": split(16, 1)}, specs, {"note": "gpu_check"})


def pairless(*arguments: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pairless", *arguments], capture_output=True, text=True,
                          **kwargs)


def train_arguments(shards: Path, out: Path, device: torch.device) -> list[str]:
    return ["train", "--shards", str(shards), "--out", str(out), "--total-tokens", str(16 * 24 * 40),
            "--batch-size", "16", "--withhold", "rgb:depth", "--set", "model.dim=32",
            "--set", "model.heads=2",
            "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1",
            "--set", "masking.input_budget=12", "--set", "masking.target_budget=12",
            "--set", "checkpoint_every=5", "--set", f"device={device}", "--set", "num_threads=1"]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def check_resume(device: torch.device, _shape: Shape, work: Path) -> Check:
    shards = write_small_shards(work / "shards")
    whole, killed = work / "whole", work / "killed"
    done = pairless(*train_arguments(shards, whole, device))
    if done.returncode:
        return Check("resume", "FAIL", note=f"uninterrupted train failed: {done.stderr[-400:]}")
    process = subprocess.Popen([sys.executable, "-m", "pairless", *train_arguments(shards, killed, device)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any((killed / "checkpoints").glob("step-*/COMPLETE.json")):
            break
        time.sleep(0.02)
    killed_at = "finished before a checkpoint" if process.poll() is not None else "after its first checkpoint"
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = pairless(*train_arguments(shards, killed, device), "--resume")
    if resumed.returncode:
        return Check("resume", "FAIL", note=f"resume failed: {resumed.stderr[-400:]}")
    reference, continued = final_weights(whole), final_weights(killed)
    difference = max(float((reference[key].float() - continued[key].float()).abs().max())
                     for key in reference)
    tolerance = 0.0 if device.type == "cpu" else 1e-2
    numbers = dict(killed=killed_at, max_weight_difference=difference, tolerance=tolerance)
    return Check("resume", "ok" if difference <= tolerance else "FAIL", numbers,
                 "bit-identical required on the CPU; GPU kernels may reorder sums")


def greedy_depth(run: Path, shards: Path, device: torch.device) -> torch.Tensor:
    """rgb -> depth tokens of 8 val samples by greedy one-step generation on ``device``."""
    from pairless.data.shards import open_shards
    from pairless.inference.evaluate import load_run_model, model_modalities
    from pairless.inference.generate import generate, schedule_preset

    model = load_run_model(run).to(device).eval()
    split = open_shards(shards, "val")
    source = {"rgb": torch.as_tensor(np.asarray(split.tokens["rgb"][:8]), dtype=torch.long, device=device)}
    specs = split.specs
    modalities = model_modalities(model, specs, ["rgb", "depth"])
    return generate(model, source, ["rgb"], "depth", specs, modalities, schedule_preset("greedy"),
                    torch.Generator(device=device).manual_seed(0)).cpu()


def check_inference(device: torch.device, _shape: Shape, work: Path) -> Check:
    run, shards = work / "whole", work / "shards"
    if not (run / "model.safetensors").exists():
        return Check("inference", "skip", note="needs the resume check's run")
    ce = {}
    for where in dict.fromkeys([str(device), "cpu"]):
        done = pairless("eval", str(run), "--shards", str(shards), "--directions", "rgb:depth,depth:rgb",
                        "--num-samples", "16", "--device", where)
        if done.returncode:
            return Check("inference", "FAIL", note=f"eval --device {where} failed: {done.stderr[-400:]}")
        ce[where] = {direction: round(row["ce"], 5)
                     for direction, row in json.loads((run / "eval.json").read_text()).items()}
    if device.type == "cpu":  # one device: the command's numbers against the library called here
        from pairless.inference.evaluate import evaluate_directions

        direct = evaluate_directions(run, ["rgb:depth", "depth:rgb"], 16, shards_path=shards, threads=1)
        ce["library"] = {direction: round(row["ce"], 5) for direction, row in direct.items()}
        reference = "library"
    else:
        reference = "cpu"
    difference = max(abs(ce[str(device)][key] - ce[reference][key]) for key in ce[reference])
    agreement = float((greedy_depth(run, shards, device) == greedy_depth(run, shards, torch.device("cpu")))
                      .float().mean())
    good = difference <= 0.02 and agreement >= 0.95
    return Check("inference", "ok" if good else "FAIL",
                 dict(ce=ce, max_ce_difference=difference, greedy_token_agreement=round(agreement, 3)),
                 "eval CE (<= 0.02 nats apart) and greedy rgb -> depth tokens (>= 95% equal) against the CPU")


def check_multi_gpu(device: torch.device, _shape: Shape, work: Path) -> Check:
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count < 2:
        return Check("multi-gpu", "skip", note=f"{count} GPU(s): DDP and FSDP2 over NCCL need two")
    shards = work / "shards"
    numbers = {}
    for strategy in ("ddp", "fsdp"):
        out = work / f"torchrun-{strategy}"
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                               "-m", "pairless", *train_arguments(shards, out, torch.device("cuda")),
                               "--set", f"distributed={strategy}"], capture_output=True, text=True)
        numbers[strategy] = "ok" if done.returncode == 0 else done.stderr[-300:]
    good = all(value == "ok" for value in numbers.values())
    return Check("multi-gpu", "ok" if good else "FAIL", numbers, "2 processes, NCCL")


CHECKS = [check_environment, check_precision, check_throughput, check_memory, check_resume, check_inference,
          check_multi_gpu]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (the first GPU, else the CPU), cpu, cuda[:N]")
    parser.add_argument("--micro", action="store_true", help="micro shapes (CI's smoke test on the CPU)")
    parser.add_argument("--json", type=Path, help="also write every check's numbers here")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        print(f"gpu_check: --device {args.device}: {error}", file=sys.stderr)
        return 2
    shape = MICRO if args.micro else PAPER
    outcomes = []
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-check-")))
        work.mkdir(parents=True, exist_ok=True)
        for check in CHECKS:
            start = time.perf_counter()
            outcome = check(device, shape, work)
            outcome.numbers["seconds"] = round(time.perf_counter() - start, 1)
            outcomes.append(outcome)
            print(f"{outcome.status:<4} {outcome.name:<11} {json.dumps(outcome.numbers)} {outcome.note}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(outcome) for outcome in outcomes], indent=1))
    failed = [outcome.name for outcome in outcomes if outcome.status == "FAIL"]
    print(f"gpu_check on {device} ({'micro' if args.micro else 'paper'} shapes): "
          + (f"FAILED: {', '.join(failed)}" if failed else "all checks ok or skipped"))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
