"""A plan is for the device it names, not the machine it is made on: a GPU plan made on this CPU resolves
``model.attention="auto"`` to the GPU's kernel (sdpa), sizes memory and ``micro_batch_size=auto`` with it,
counts the host copy of an asynchronous checkpoint, and keys the runs as the GPU will; CPU plans stay as
they were. And the FLOPs of autoregressive (caption) generation with the KV cache, counted by hand and by
torch's counter on the sampler itself."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pairless.batch import TokenSpec
from pairless.commands.run import main, planned_profile
from pairless.experiments.estimate import Throughput, estimate_run
from pairless.experiments.inference_work import InferenceWork
from pairless.experiments.plan import plan_stages
from pairless.experiments.recipes import get_recipe
from pairless.experiments.runner import Plan
from pairless.inference.generate import ar_generate, schedule_preset
from pairless.model import FourM, ModelConfig
from pairless.training import memory
from pairless.training.compute import GPU_PROFILES, ar_generation_flops, forward_flops, gpu_profile

SPECS = {**{name: TokenSpec(name, "image", 64, 256, grid=(8, 8)) for name in ("rgb", "depth")},
         "caption": TokenSpec("caption", "sequence", 12, 50, pad_id=0, bos_id=1, eos_id=2)}


def _attention_lines(printed: str) -> list[str]:
    return re.findall(r"(\w+) attention; images", printed)


def test_a_gpu_plan_made_on_this_cpu_plans_the_gpu_kernel_and_its_memory(tmp_path):
    """On this CPU-only machine ``auto`` is explicit attention; the H100 plan's runs use sdpa (what they
    will run there), and their memory and time are those of sdpa runs."""
    assert not torch.cuda.is_available()
    config = get_recipe("demo", "micro")
    run = config.expanded_runs()[0]
    here, for_gpu = run.config(), run.config(device_type="cuda")
    assert here.model.attention == "explicit" and for_gpu.model.attention == "sdpa"
    assert run.config(device_type="cpu") == here  # a CPU plan: the config it always had
    throughput = Throughput(GPU_PROFILES["h100"])
    specs = {name: spec for name, spec in SPECS.items() if name != "caption"}
    planned = estimate_run(for_gpu, specs, throughput)
    sdpa = memory.estimate(memory.workload_of(for_gpu, specs, device_type="cuda"))
    explicit = memory.estimate(memory.workload_of(here, specs, device_type="cuda"))
    assert planned.memory.activations == sdpa.activations < explicit.activations
    rows, _ = plan_stages(Plan(config, tmp_path, "cuda"), throughput)
    trained = [row for row in rows if row.key.startswith("train ")]
    assert trained and all("sdpa attention" in row.details[0] for row in trained)


def test_paper_plan_for_one_h100_and_this_cpu(tmp_path, capsys):
    """The paper preset planned for an H100 from this CPU: sdpa everywhere; the larger run (large, batch
    256) fits in micro-batches of 128 by the memory model (explicit attention's fp32 probabilities made it
    64 before the plan resolved the kernel for the GPU). The same plan with --device cuda on a machine
    without a GPU is the H100's, said to be assumed."""
    assert main(["visual-pairs", "--preset", "paper", "--out", str(tmp_path), "--dry-run",
                 "--device", "cuda"]) == 0
    printed = capsys.readouterr().out
    assert "device: NVIDIA H100 SXM (assumed for --device cuda: no GPU here" in printed
    assert set(_attention_lines(printed)) == {"sdpa"}
    larger = printed[printed.index("train larger"):]
    assert "batch 256 (micro-batch 128)" in larger


def test_a_cpu_plan_is_unchanged(tmp_path):
    """Planned for the CPU (the default here), runs keep explicit attention and their keys: the folders of
    Plan(config, out) (this machine) and Plan(config, out, "cpu") are the same, a GPU's differ."""
    config = get_recipe("demo", "micro")
    here, cpu, gpu = Plan(config, tmp_path), Plan(config, tmp_path, "cpu"), Plan(config, tmp_path, "cuda")
    assert here.runs == cpu.runs
    assert all(gpu.runs[name] != here.runs[name] for name in here.runs)
    rows, _ = plan_stages(cpu, Throughput(None, 0.2))
    assert all("explicit attention" in row.details[0] for row in rows if row.key.startswith("train "))


def test_a_cpu_run_on_a_gpu_machine_keeps_the_cpu_kernel(monkeypatch):
    """``pairless run --device cpu`` on a machine with a GPU: the runs train (and are keyed) with the CPU's
    kernel, not the one ``auto`` would pick from the machine."""
    run = get_recipe("demo", "micro").expanded_runs()[0]
    key_here = Plan(get_recipe("demo", "micro"), "out").runs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run.config().model.attention == "sdpa"  # "auto" on a GPU machine
    assert run.config(device_type="cpu").model.attention == "explicit"
    assert Plan(get_recipe("demo", "micro"), "out", "cpu").runs == key_here


def test_the_device_a_dry_run_plans_for(monkeypatch):
    assert planned_profile(None, None) is None  # this CPU, measured
    assert planned_profile(None, "cpu") is None
    assert planned_profile("h200", None) == GPU_PROFILES["h200"]
    assert planned_profile("a100", "cuda") == GPU_PROFILES["a100"]
    assumed = planned_profile(None, "cuda:1")
    assert assumed.peak_tflops == GPU_PROFILES["h100"].peak_tflops and "no GPU here" in assumed.name
    for profile, device in (("h100", "cpu"), ("cpu", "cuda")):
        with pytest.raises(ValueError, match="name different devices"):
            planned_profile(profile, device)
    # a machine with a GPU: its own name and memory, the stated peak of its model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: SimpleNamespace(name="NVIDIA H200", total_memory=141 * 10**9))
    detected = planned_profile(None, None)
    assert (detected.name, detected.device_type, detected.memory_gb) == ("NVIDIA H200", "cuda", 141.0)
    assert detected.flops_per_second == GPU_PROFILES["h200"].flops_per_second
    unknown = gpu_profile("Tesla V100-SXM2-32GB", 32 * 10**9)
    assert "no stated peak known" in unknown.name and unknown.memory_gb == 32.0


def test_an_asynchronous_checkpoint_holds_a_host_copy_of_the_training_state():
    """checkpoint_writes "auto" writes in the background on a GPU: a save copies the weights and both AdamW
    moments to the host first (12 bytes per parameter); on a CPU, or with "sync", one tensor at a time."""
    run = get_recipe("demo", "micro").expanded_runs()[0]
    config = run.config(device_type="cuda")
    specs = {name: spec for name, spec in SPECS.items() if name != "caption"}
    on_gpu = memory.estimate(memory.workload_of(config, specs, device_type="cuda"))
    assert on_gpu.save == on_gpu.checkpoint_file == 12 * on_gpu.parameters
    assert on_gpu.host == on_gpu.runtime + on_gpu.checkpoint_file
    synchronous = config.model_copy(update={"checkpoint_writes": "sync"})
    for workload in (memory.workload_of(synchronous, specs, device_type="cuda"),
                     memory.workload_of(run.config(), specs, device_type="cpu")):
        assert memory.estimate(workload).save < on_gpu.save / 10


def test_ar_generation_flops_by_hand():
    """dim 8, one encoder and one decoder layer, GELU MLP (hidden 32), a null token, 4 input tokens (5
    encoder slots), 3 generated tokens over a 10-word vocabulary."""
    model = ModelConfig(dim=8, encoder_layers=1, decoder_layers=1, heads=2, mlp="gelu",
                        context_projection=False)
    encoder = (2 * 5 * 8 * 24 + 2 * 5 * 8 * 8  # qkv, output projection
               + 2 * 5 * 8 * 32 * 2  # MLP, two matrices
               + 2 * (2 * 5 * 5 * 8))  # scores and weighted sum over 5 x 5 slots
    cross_keys = 2 * 5 * 8 * 16  # the decoder layer's keys and values of the 5 encoder slots, once
    per_token = (2 * 8 * 24 + 2 * 8 * 8  # self-attention qkv and output of one query
                 + 2 * 8 * 8 + 2 * 8 * 8  # cross-attention query and output
                 + 2 * (2 * 5 * 8)  # cross-attention over the 5 slots
                 + 2 * 8 * 32 * 2  # MLP
                 + 2 * 8 * 10)  # the head
    self_attention = sum(2 * (2 * keys * 8) for keys in (1, 2, 3))  # over 1, 2, 3 cached tokens
    hand = encoder + cross_keys + 3 * per_token + self_attention
    assert hand == 16288
    assert ar_generation_flops(model, 4, 10, 3) == hand
    assert ar_generation_flops(model, 4, 10, 3, guided=True) == 2 * hand


@pytest.mark.parametrize("guided", [False, True])
def test_ar_generation_flops_match_torch_counter_on_the_sampler(guided):
    """The count against torch's FLOP counter over ``ar_generate`` itself (KV cache, SwiGLU, the context
    projection, explicit attention), at the steps it ran before every row ended."""
    config = ModelConfig(dim=32, encoder_layers=2, decoder_layers=2, heads=2, attention="explicit")
    specs = {"rgb": SPECS["rgb"], "caption": SPECS["caption"]}
    torch.manual_seed(0)
    model = FourM(config, specs).eval()
    batch = 3
    source = {"rgb": torch.randint(0, 256, (batch, 64), generator=torch.Generator().manual_seed(1))}
    scale = 2.0 if guided else 1.0
    schedule = schedule_preset("greedy-ar").model_copy(update={"guidance_scale": scale,
                                                               "guidance_scale_final": scale})
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        output = ar_generate(model, source, ["rgb"], "caption", specs, model.modalities, schedule,
                             torch.Generator().manual_seed(0))
    spec = specs["caption"]
    ended = output == spec.eos_id
    steps = int(ended.float().argmax(1).max()) + 1 if bool(ended.any(1).all()) else spec.num_tokens
    counted = counter.get_total_flops() / batch
    assert ar_generation_flops(config, 64, spec.vocab_size, steps, guided) == pytest.approx(counted, rel=1e-6)


def test_caption_generation_is_planned_with_the_kv_cache():
    """A caption destination is generated with AR (the figure's schedule where it fits, the default where
    it does not), counted as above; an image destination asked for with an AR schedule gets ROAR 8 steps,
    as the runner generates it."""
    model = ModelConfig(preset="tiny")
    caption = SPECS["caption"]
    for name in ("ar-caption", "roar8"):  # roar8 cannot make text: the runner uses ar-caption
        work = InferenceWork()
        work.add_generation(model, SPECS, 64, "caption", name, samples=10)
        (_, _, flops), = work.flops.values()
        assert flops == pytest.approx(10 * ar_generation_flops(model, 64, caption.vocab_size,
                                                              caption.num_tokens))
        assert work.samples == 10 * caption.num_tokens
    # far below the former count: every token a full forward over all inputs and targets
    assert flops < 0.2 * 10 * caption.num_tokens * forward_flops(model, SPECS, 64, caption.num_tokens, 10)
    image = InferenceWork()
    image.add_generation(model, SPECS, 64, "depth", "ar-caption", samples=10)
    (_, _, flops), = image.flops.values()
    assert flops == pytest.approx(10 * 2 * 8 * forward_flops(model, SPECS, 64, 64, 10))  # guided roar8
