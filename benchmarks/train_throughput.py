"""Training-step throughput of FourM on a CPU or a GPU: valid tokens per second and MFU.

Times full training steps (forward, backward, AdamW step; masking done
beforehand and timed separately) after warm-up, for the tiny/small/anchor
presets on the ANCHOR data shape: 4 image-like modalities of 8x8 = 64 tokens
(vocab 1024), a caption of up to 32 tokens (vocab 3000), a global modality of
16 tokens (vocab 1024); 128 input + 128 target tokens per sample, Dirichlet
alpha 0.5 over all modalities, batch 32. The fp32 and bf16 matmul peaks are
measured in the same run (square matmuls), so MFU is relative to what this
machine delivers right now (it is shared: read ratios within one run).
``--device cuda`` (the default ``auto`` picks a GPU when there is one) runs the same steps on a GPU, in bf16
autocast on that device, timed with its queue synchronised, against the GPU's own measured matmul peak
(square 8192), and prints the peak GPU memory of each configuration. ``--compile`` and ``--checkpointing``
train as ``TrainConfig.compile`` / ``activation_checkpointing`` do.

Two FLOP counts, both on valid tokens only (padding is neither computed nor counted):
  model FLOPs, the usual MFU convention (Kaplan et al., PaLM, nanoGPT): 6 x N per token, N = all
    parameters (31.0M at the anchor shape). This is the convention that reproduces the reference
    implementation's "~62% MFU" quoted in issue 4 from its own numbers: 6,430 tokens/s (padding
    included) x 6 x 31.0M = 1.20 TFLOP/s, 0.61 of the ~1.95 TFLOP/s bf16 peak measured here.
    For an encoder-decoder it overcounts: no token passes through every parameter.
  executed FLOPs, what a step actually computes:
    6 x (matmul weights each token passes through) per token
      encoder tokens (inputs + null token): encoder blocks + the decoder's cross-attention key/value
        projections; decoder tokens: decoder blocks except those key/value projections, plus the output
        rows of its modality;
    + attention: 3 x 4 x Nq x Nk x dim per layer (QK^T and AV, forward + backward), Nq/Nk the valid
      lengths (encoder self, decoder self over all target slots, decoder cross), dense as computed.
    Embedding gathers, norms and softmax are not counted. At the anchor shape this is ~81 MFLOP per
    token against 6N = 186: by this count the reference's 6,430 tokens/s are ~0.27 of the peak.

Prints one line per configuration:
  <config> <dtype> tokens/s=<valid input+target tokens per second> mfu=<model FLOP/s / that dtype's peak>
      mfu_executed=<executed FLOP/s / peak> ...
Run: .venv/bin/python benchmarks/train_throughput.py [--configs tiny,small,anchor] [--attention explicit,sdpa]
     [--breakdown]   (adds, per configuration, the share of step time per kind of op: matmuls, copies and
                      casts, GELU, softmax, layer norm, AdamW, other; and the MFU bound of the matmul share)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

# OpenMP's wait policy is read when torch loads, so it is the caller's: unset (libgomp's default, spin a
# little then sleep) is what `pairless train` runs with. OMP_WAIT_POLICY=PASSIVE (sleep at once) costs
# 15-25% at 2 threads on an idle machine (anchor bf16: ~7,100 against ~8,300 tokens/s, 2026-11-23); on a
# machine whose cores are busy, spinning threads can make 2-thread steps several times slower than 1,
# which is why `pairless run` gives each stage only the cores other processes leave free
# (pairless/utils/threads.py).
import torch

from pairless.batch import MaskedBatch, TokenSpec
from pairless.model import FourM, ModelConfig
from pairless.model.transformer import with_target_rows
from pairless.training.distributed import resolve_device
from pairless.training.masking import Masker, MaskingConfig
from pairless.training.train import build_optimizer


def anchor_specs() -> dict[str, TokenSpec]:
    specs = {f"image{i}": TokenSpec(f"image{i}", "image", 64, 1024, grid=(8, 8)) for i in range(4)}
    specs["caption"] = TokenSpec("caption", "sequence", 32, 3000, pad_id=0, bos_id=1, eos_id=2)
    specs["global"] = TokenSpec("global", "vector", 16, 1024)
    return specs


def training_optimizer(model: FourM) -> torch.optim.AdamW:
    """The optimizer ``pairless train`` builds (AdamW, betas 0.9/0.95, weight decay 0.05 on matrices)."""
    return build_optimizer(model, SimpleNamespace(peak_lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05))


def make_batches(specs, batch_size: int, count: int, seed: int = 0) -> tuple[list[MaskedBatch], float]:
    """``count`` masked batches of random tokens; returns them and the median masking time (ms)."""
    generator = torch.Generator().manual_seed(seed)
    masker = Masker(specs, MaskingConfig(input_budget=128, target_budget=128, alphas=[0.5],
                                         empty_input_fraction=0.0))
    batches, times = [], []
    for _ in range(count):
        tokens = {name: torch.randint(3, spec.vocab_size, (batch_size, spec.num_tokens), generator=generator)
                  for name, spec in specs.items()}
        lengths = torch.randint(8, 32, (batch_size, 1), generator=generator)
        position = torch.arange(32).unsqueeze(0)
        tokens["caption"] = torch.where(position < lengths, tokens["caption"],
                                        torch.where(position == lengths, 2, 0))
        views = torch.ones(batch_size, len(specs), dtype=torch.bool)
        start = time.perf_counter()
        # the training loop finds each micro-batch's target rows on the host (no GPU sync in the forward)
        batches.append(with_target_rows(masker(tokens, views, generator)))
        times.append(time.perf_counter() - start)
    return batches, 1e3 * statistics.median(times)


def model_flops(model: FourM, batch: MaskedBatch) -> float:
    """Model FLOPs of one training step on ``batch``: 6 x parameters x valid tokens (module docstring)."""
    return 6.0 * model.num_parameters() * batch.num_valid_tokens()


def step_flops(model: FourM, batch: MaskedBatch) -> float:
    """Executed training FLOPs of one step on ``batch`` (see the module docstring for what is counted)."""
    dim = model.config.dim
    encoder_weights = sum(m.weight.numel() for block in model.encoder for m in block.modules()
                          if isinstance(m, torch.nn.Linear))
    cross_kv = sum(block.cross.kv.weight.numel() for block in model.decoder)
    decoder_weights = sum(m.weight.numel() for block in model.decoder for m in block.modules()
                          if isinstance(m, torch.nn.Linear)) - cross_kv
    encoder_tokens = batch.enc_valid.sum(1) + 1  # (B,) with the null token
    decoder_tokens = batch.dec_valid.sum(1)
    head = sum(int(((batch.dec_modality == i) & batch.dec_valid).sum()) * vocab * dim
               for i, vocab in enumerate(model.vocab_sizes))
    linear = 6.0 * (float(encoder_tokens.sum()) * (encoder_weights + cross_kv)
                    + float(decoder_tokens.sum()) * decoder_weights + head)
    per_sample = (len(model.encoder) * encoder_tokens.double() ** 2
                  + len(model.decoder) * (decoder_tokens.double() ** 2
                                          + decoder_tokens.double() * encoder_tokens))
    return linear + 12.0 * dim * float(per_sample.sum())


CPU = torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously; the CPU has nothing to wait for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 7,
                device: torch.device = CPU) -> tuple[float, float]:
    """Median FLOP/s of a square ``size`` matmul in ``dtype`` on ``device``: per wall second and per CPU
    second / threads (on a GPU both are per wall second, and the square is 8192: a GPU's peak needs it).
    """
    if device.type == "cuda":
        size = max(size, 8192)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.matmul(a, b)
    synchronize(device)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        torch.matmul(a, b)
        synchronize(device)
        walls.append(time.perf_counter() - wall)
        cpus.append((time.process_time() - cpu) / torch.get_num_threads())
    if device.type == "cuda":
        cpus = walls
    return 2.0 * size**3 / statistics.median(walls), 2.0 * size**3 / statistics.median(cpus)


def time_training(preset: str, attention: str, dtype: str, batches, warmup: int, steps: int,
                  device: torch.device = CPU, compile_blocks: bool = False,
                  checkpointing: bool = False) -> dict:
    """Median seconds per training step (wall, and CPU / threads), FLOPs and valid tokens per step, and the
    peak device memory (GPU only; 0 on the CPU). The step is the training loop's: bf16 autocast on the
    model's device, fused AdamW; ``compile_blocks`` and ``checkpointing`` as TrainConfig's ``compile`` and
    ``activation_checkpointing``."""
    torch.manual_seed(0)
    model = FourM(ModelConfig.from_preset(preset, attention=attention), anchor_specs()).to(device)
    if compile_blocks:
        for block in [*model.encoder, *model.decoder]:
            block.compile()
    optimizer = training_optimizer(model)
    on_device = [batch.to(device) for batch in batches]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def autocast():
        return (torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16"
                else contextlib.nullcontext())

    walls, cpus, flops, model_fl, tokens = [], [], [], [], []
    for index in range(warmup + steps):
        batch = batches[index % len(batches)]
        synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        with autocast():
            loss, _ = model(on_device[index % len(batches)], checkpoint_blocks=checkpointing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        if index >= warmup:
            walls.append(time.perf_counter() - wall)
            cpus.append((time.process_time() - cpu) / torch.get_num_threads())
            flops.append(step_flops(model, batch))
            model_fl.append(model_flops(model, batch))
            tokens.append(batch.num_valid_tokens())
    if device.type == "cuda":
        cpus = walls  # the host's CPU time says nothing about a GPU step
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return dict(wall=statistics.median(walls), cpu=statistics.median(cpus), flops=statistics.median(flops),
                model_flops=statistics.median(model_fl), tokens=statistics.median(tokens),
                params=model.num_parameters(), memory=memory)


MATMUL_OPS = {"aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward"}
GROUPS = {"matmul": MATMUL_OPS,
          "copy/cast": {"aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous"},
          "gelu": {"aten::gelu", "aten::gelu_backward"},
          "softmax": {"aten::_softmax", "aten::_softmax_backward_data", "aten::_log_softmax",
                      "aten::_log_softmax_backward_data"},
          "layer norm": {"aten::native_layer_norm", "aten::native_layer_norm_backward"},
          "adamw": {"aten::_fused_adamw_"}}


def time_breakdown(preset: str, attention: str, dtype: str, batches, steps: int = 3) -> dict[str, float]:
    """Share of a training step's CPU time per kind of op (self time, torch profiler), after warm-up.

    The "matmul" share bounds the executed-FLOP MFU this eager implementation can reach: were everything
    else free, it would be ``mfu_executed / matmul share`` at the efficiency the matmuls have at these shapes.
    """
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = FourM(ModelConfig.from_preset(preset, attention=attention), anchor_specs())
    optimizer = training_optimizer(model)

    def step(batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext():
            loss, _ = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for index in range(2):
        step(batches[index % len(batches)])
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for index in range(steps):
            step(batches[index % len(batches)])
    totals = {name: 0.0 for name in GROUPS} | {"other": 0.0}
    for event in profiler.key_averages():
        group = next((name for name, ops in GROUPS.items() if event.key in ops), "other")
        totals[group] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {name: value / whole for name, value in totals.items()}


def peak_rss_child(batch_size: int, steps: int) -> None:
    """Train the small preset in bf16 for a few steps (run in a subprocess to read its peak RSS)."""
    batches, _ = make_batches(anchor_specs(), batch_size, 2)
    time_training("small", "explicit", "bf16", batches, 1, steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small,anchor")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--attention", default="explicit,sdpa",
                        help="attention kernels to compare (auto: sdpa on a GPU, explicit on a CPU)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda or cuda:N")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each block (TrainConfig.compile)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="recompute each block in the backward (TrainConfig.activation_checkpointing)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS of small at batch 64")
    parser.add_argument("--breakdown", action="store_true",
                        help="also profile each configuration: share of step time per kind of op")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rss_child:
        peak_rss_child(args.rss_child, 3)
        return 0
    device = resolve_device(args.device)
    print(f"# device={device} threads={args.threads} "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} "
          f"load average={os.getloadavg()[0]:.1f} torch={torch.__version__}"
          + (f" gpu={torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print("# wall = per wall-clock second; cpu = per (process CPU second / threads), which a loaded machine"
          " distorts less (spinning threads count as busy, so it errs low)")
    peaks = {"fp32": matmul_peak(torch.float32, device=device),
             "bf16": matmul_peak(torch.bfloat16, device=device)}
    print("# matmul peak GFLOP/s: " + " ".join(f"{k}: wall={v[0] / 1e9:.0f} cpu={v[1] / 1e9:.0f}"
                                               for k, v in peaks.items()))
    batches, masking_ms = make_batches(anchor_specs(), args.batch_size, 4)
    print(f"# masking: {masking_ms:.1f} ms per batch of {args.batch_size} (median, wall)")
    for preset in args.configs.split(","):
        for dtype in args.dtypes.split(","):
            for attention in args.attention.split(","):
                r = time_training(preset, attention, dtype, batches, args.warmup, args.steps, device,
                                  args.compile, args.checkpointing)
                wall_peak, cpu_peak = peaks[dtype]
                executed = r["flops"] / r["wall"] / wall_peak
                print(f"{preset}/{attention} {dtype} tokens/s={r['tokens'] / r['wall']:.0f} "
                      f"mfu={r['model_flops'] / r['wall'] / wall_peak:.2f} mfu_executed={executed:.2f}  "
                      f"cpu: tokens/s={r['tokens'] / r['cpu']:.0f} "
                      f"mfu={r['model_flops'] / r['cpu'] / cpu_peak:.2f} "
                      f"mfu_executed={r['flops'] / r['cpu'] / cpu_peak:.2f}  "
                      f"(step {r['wall'] * 1e3:.0f} ms wall, {r['params'] / 1e6:.1f}M params, "
                      f"{r['model_flops'] / 1e9:.0f} model / {r['flops'] / 1e9:.0f} executed GFLOP/step, "
                      + (f"peak memory {r['memory'] / 2**30:.2f} GiB, " if r["memory"] else "")
                      + f"load {os.getloadavg()[0]:.1f})", flush=True)
                if args.breakdown:
                    shares = time_breakdown(preset, attention, dtype, batches)
                    print("#   time shares: " + " ".join(f"{k}={v:.2f}" for k, v in shares.items())
                          + "; mfu_executed if only matmuls took time: "
                            f"{executed / max(shares['matmul'], 1e-9):.2f}",
                          flush=True)
    if args.rss:
        subprocess.run([sys.executable, __file__, "--rss-child", "64", "--threads", str(args.threads)],
                       check=True)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        print(f"# peak RSS training small bf16 at batch 64: {peak_kib / 2**20:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
