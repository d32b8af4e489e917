"""The plan (``pairless run RECIPE --dry-run``): per run its model, batch, budget, memory and checkpoint disk;
per stage a time from executed FLOPs over a device profile or this CPU's timings; the FLOP count against
torch's own counter; the stages against the runner's; the passes the inference stages make."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pairless.batch import TokenSpec
from pairless.commands.run import main
from pairless.experiments.estimate import Throughput
from pairless.experiments.plan import plan_stages
from pairless.experiments.recipes import get_recipe
from pairless.experiments.runner import Plan
from pairless.model import FourM, ModelConfig
from pairless.training.compute import GPU_PROFILES, forward_flops, training_flops
from pairless.training.masking import Masker, MaskingConfig
from pairless.utils.storage import read_json

SPECS = {**{name: TokenSpec(name, "image", 64, 256, grid=(8, 8)) for name in ("rgb", "depth", "normal")},
         "caption": TokenSpec("caption", "sequence", 32, 500, pad_id=0, bos_id=1, eos_id=2)}


# explicit: 0.3-0.5% under torch's count; the old two-matrix count of a SwiGLU MLP was 1.1%
# under. sdpa: torch counts its fused kernel's work, ~7.6% over.
@pytest.mark.parametrize(("attention", "tolerance"), [("explicit", 0.01), ("sdpa", 0.10)])
@pytest.mark.parametrize(("batch", "inputs", "targets"), [(32, 64, 64), (8, 48, 96)])
@pytest.mark.parametrize(("mlp", "context_projection"), [("swiglu", True), ("gelu", False)])
def test_flop_count_matches_torch_counter(attention, tolerance, batch, inputs, targets, mlp,
                                          context_projection):
    config = ModelConfig(preset="tiny", attention=attention, mlp=mlp, context_projection=context_projection)
    model = FourM(config, SPECS)
    generator = torch.Generator().manual_seed(0)
    tokens = {name: torch.randint(0, spec.vocab_size, (batch, spec.num_tokens), generator=generator)
              for name, spec in SPECS.items()}
    masked = Masker(SPECS, MaskingConfig(input_budget=inputs, target_budget=targets))(
        tokens, torch.ones(batch, len(SPECS), dtype=torch.bool), generator)
    with FlopCounterMode(display=False) as counter:
        loss, _ = model(masked)
        loss.backward()
    counted = counter.get_total_flops() / batch
    predicted = training_flops(config, SPECS, inputs, targets, batch)
    assert abs(predicted / counted - 1) <= tolerance, (predicted, counted)
    assert forward_flops(config, SPECS, inputs, targets, batch) == pytest.approx(predicted / 3)


def test_dry_run_prints_model_batch_budget_memory_and_disk_per_run(tmp_path, capsys):
    assert main(["demo", "--preset", "micro", "--out", str(tmp_path), "--dry-run", "--device-profile",
                 "h100"]) == 0
    printed = capsys.readouterr().out
    assert "device: NVIDIA H100 SXM: 989 TFLOP/s dense bf16 (stated) x assumed MFU 0.40" in printed
    assert re.search(r"train zs-rgb-depth \(zero-shot\)\s+GPU\s+~\d+ s", printed)
    # the kernel the H100 runs ("auto": sdpa there), though this plan is made on a CPU
    assert re.search(r"model tiny, 0\.\dM parameters, sdpa attention; images 32x32; batch 16 "
                     r"\(micro-batch 16\), 40,000 tokens \(96 per sample, ~417 samples\)", printed)
    assert re.search(r"memory: host \d+ MiB, device \d+ MiB; checkpoints \d+ MiB x 2 kept = \d+ MiB", printed)
    for stage in ("world ", "tokenizers ", "shards (tokenize)", "evaluation (CE)", "regions (object",
                  "probes (alignment)", "generation (figures, decoded)",
                  "estimated time for what is not cached"):
        assert stage in printed, stage
    assert not tmp_path.joinpath("demo").exists()  # a plan writes nothing


def test_dry_run_on_this_cpu_measures_its_throughput(tmp_path, capsys):
    assert main(["demo", "--preset", "micro", "--out", str(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "this CPU (" in printed and "timed at its shapes" in printed
    assert re.search(r"train many-shot \(many-shot\)\s+CPU\s+~\d", printed)
    assert "device -;" in printed


def test_paper_preset_fits_one_h100_and_says_when_a_run_does_not(tmp_path, capsys):
    """The larger run (large, batch 256, micro_batch_size=auto) on one H100 by the memory model: with sdpa,
    the kernel "auto" is on a GPU (one fp32 log-sum-exp per head and query kept for the backward, where
    explicit attention keeps fp32 probabilities and a bf16 copy per head, query and key), micro-batches of
    128 fit 80 GB (~59 GiB); 256 do not (~100 GiB). Before the plan resolved the kernel for the device it is
    for, a plan made on a CPU sized explicit attention and said 64."""
    assert main(["visual-pairs", "--preset", "paper", "--out", str(tmp_path), "--dry-run",
                 "--device-profile", "h100"]) == 0
    printed = capsys.readouterr().out
    larger = printed[printed.index("train larger"):]
    assert "model large, 724" in larger and "sdpa attention" in larger
    assert "batch 256 (micro-batch 128)" in larger
    assert "DOES NOT FIT" not in printed
    # the same run in one pass of 256 does not fit, and the plan says what to change
    assert main(["visual-pairs", "--preset", "paper", "--out", str(tmp_path), "--dry-run", "--device-profile",
                 "h100", "--set", "runs.4.train.micro_batch_size=null"]) == 0
    printed = capsys.readouterr().out
    assert "DOES NOT FIT: needs" in printed and "micro_batch_size=128" in printed
    assert GPU_PROFILES["h100"].memory_gb == 80.0


def test_inference_stages_count_the_passes_the_runner_makes(tmp_path):
    # demo at micro: 96 scenes, val = round(9.6) = 10 samples, eval_samples 16; per run two directions
    # (rgb:depth, depth:rgb), each a conditional pass, plus one no-input pass per destination
    config = get_recipe("demo", "micro")
    plan = Plan(config, tmp_path)
    rows, _ = plan_stages(plan, Throughput(GPU_PROFILES["h100"]))
    described = {row.key: row.details for row in rows}
    assert described["evaluation"] == ["80 sample passes, 0.00 TFLOP, 2 model loads"]
    assert described["regions"] == ["80 sample passes, 0.00 TFLOP, 2 model loads"]
    # probes: the pair rgb:depth once per run, the encoder over both modalities
    assert described["probes"] == ["40 sample passes, 0.00 TFLOP, 2 model loads"]
    # generation: two figures x two runs x (the translation + the no-input one) x max(figure rows 2, decoded
    # samples 4), one pass per ROAR step, x2 for guidance
    steps = {"rgb:depth": 2 * 1, "depth:rgb": 2 * 8}
    assert max(config.figures[0].num, config.decoded_samples) == 4
    passes = sum(2 * 2 * 4 * steps[f"{figure.src}:{figure.dst}"] for figure in config.figures)
    assert described["generation"][0].startswith(f"{passes:,} sample passes")
    assert "unpaired" not in described


def test_plan_rows_are_the_stages_the_runner_times(tmp_path):
    """Every stage the runner records a time for has a row of the plan under the same key, and no row is a
    stage the runner does not run (benchmarks/plan_estimate.py holds one against the other)."""
    from pairless.experiments.runner import run_experiment

    config = get_recipe("demo", "micro")
    planned, _ = plan_stages(Plan(config, tmp_path), Throughput(None, 0.2))
    recipe_dir = run_experiment(config, tmp_path)
    timed = set(read_json(recipe_dir / "results.json")["timings_seconds"])
    keys = {row.key for row in planned}
    assert timed - {"tokenizers+shards"} == keys - {"tokenizers", "shards"}
    assert all(row.seconds is not None and row.seconds > 0 for row in planned)
    # planned again, everything is cached: the runner skips every stage but the unpaired analyses (none
    # here), so the plan counts nothing: no evaluation, region, probe file or figure is made anew
    replanned, _ = plan_stages(Plan(config, tmp_path), Throughput(None, 0.2))
    assert all(row.cached for row in replanned if row.folder is not None)
    assert not {row.key for row in replanned} & {"evaluation", "regions", "probes", "generation"}
    # a figure whose request changed (more decoded samples) is drawn anew, and the plan counts it again
    changed = config.model_copy(update={"decoded_samples": config.decoded_samples + 1})
    replanned, _ = plan_stages(Plan(changed, tmp_path), Throughput(None, 0.2))
    assert {row.key for row in replanned} & {"evaluation", "generation"} == {"generation"}


def test_a_plan_counts_only_what_is_not_cached(tmp_path):
    """With some runs made before (CacheState's ``done``), their training, pseudo-pairs, evaluations, probes
    and the figures of only such runs are cached; the rest is counted."""
    from pairless.experiments.inference_work import CacheState

    config = get_recipe("transitive", "micro")
    plan = Plan(config, tmp_path)
    throughput = Throughput(GPU_PROFILES["h100"])
    fresh, _ = plan_stages(plan, throughput, CacheState(plan, set()))
    everything = {row.key for row in fresh}
    assert not any(row.cached for row in fresh)
    pseudo_runs = [run.name for run in config.expanded_runs() if run.pseudo is not None]
    assert pseudo_runs and {f"pseudo-pairs {name}" for name in pseudo_runs} <= everything
    done = {"world", "tokenizers", "shards", *(run.name for run in config.expanded_runs())}
    again, _ = plan_stages(plan, throughput, CacheState(plan, done))
    assert all(row.cached for row in again if row.folder is not None)
    assert not {row.key for row in again} & {"evaluation", "regions", "probes", "generation"}
    # one run trained anew: its pseudo-pairs, its evaluation and the figures it is in, nothing else
    retrained = pseudo_runs[0]
    partly, _ = plan_stages(plan, throughput, CacheState(plan, done - {retrained}))
    counted = {row.key: row for row in partly if not row.cached}
    assert {f"train {retrained}", f"pseudo-pairs {retrained}", "evaluation", "generation"} <= set(counted)
    assert not {f"train {name}" for name in done - {retrained}} & set(counted)
    one = [row.details[0] for row in partly if row.key == "evaluation"][0]
    every = [row.details[0] for row in fresh if row.key == "evaluation"][0]
    assert one.endswith(", 1 model loads") and not every.endswith(", 1 model loads")


def test_a_paired_only_run_brings_both_modalities_of_its_pair():
    """Per-sample tokens (what the budget counts): a zero-shot run on rgb and depth exposes one of them per
    sample, its paired-only baseline (the k allowed samples alone) both, and k allowed samples of N add
    k/N of the other side: the paired-only runs of pairs-curve were planned at twice their steps."""
    from pairless.experiments.estimate import sample_tokens
    from pairless.training.config import TrainConfig

    specs = {name: TokenSpec(name, "image", 64, 256, grid=(8, 8)) for name in ("rgb", "depth")}

    def tokens(samples: int = 1000, **fragment) -> float:
        config = TrainConfig.model_validate({
            "shards": ".", "out": ".", "masking": {"input_budget": 64, "target_budget": 64},
            "fragment": {"universe": ["rgb", "depth"], "withheld": [["rgb", "depth"]], **fragment}})
        return sample_tokens(config, specs, None, samples)

    assert tokens() == 64
    assert tokens(allow_pairs={"rgb:depth": 16}, only_paired=True) == 128
    assert tokens(allow_pairs={"rgb:depth": 250}) == pytest.approx(64 + 64 * 250 / 1000)
    # a user folder's listing: the allowance applies among the samples that have both
    present = {"rgb": [True, True, True, False], "depth": [True, True, False, True]}
    config = TrainConfig.model_validate({
        "shards": ".", "out": ".", "masking": {"input_budget": 64, "target_budget": 64},
        "fragment": {"withheld": [["rgb", "depth"]], "allow_pairs": {"rgb:depth": 1}, "only_paired": True}})
    assert sample_tokens(config, specs, present) == 128



def test_adapters_are_evaluated_probed_and_drawn_in_the_plan(tmp_path):
    """An adapter is evaluated, probed and drawn like a run (the runner's adapter_runs): with everything
    else made before, the plan still counts those stages for the adapter trained anew."""
    from pairless.experiments.inference_work import CacheState

    config = get_recipe("adapter", "micro")
    plan = Plan(config, tmp_path)
    done = {"world", "tokenizers", "shards", *(run.name for run in config.expanded_runs()),
            *(stage.name for stage in config.expanded_adapters())}
    adapter = config.expanded_adapters()[0].name
    rows, _ = plan_stages(plan, Throughput(GPU_PROFILES["h100"]), CacheState(plan, done - {adapter}))
    counted = {row.key: row.details for row in rows if not row.cached}
    assert {f"add normal {adapter}", "evaluation", "probes", "generation"} <= set(counted)
    assert counted["evaluation"][0].endswith(", 1 model loads")


def test_regions_of_a_run_without_semseg_are_counted(tmp_path):
    """The runner splits an image destination's tokens by the shards' semseg whether or not the run trained
    on it (region_directions): a run on rgb and depth alone has its regions evaluated, and planned."""
    from pairless.experiments.inference_work import CacheState

    config = get_recipe("binding-strength", "micro")
    plan = Plan(config, tmp_path)
    done = {"world", "tokenizers", "shards", *(run.name for run in config.expanded_runs())}
    rows, _ = plan_stages(plan, Throughput(GPU_PROFILES["h100"]), CacheState(plan, done - {"ms-bind0"}))
    counted = {row.key: row.details for row in rows if not row.cached}
    assert plan.expanded["ms-bind0"].universe == ["rgb", "depth"]
    assert counted["regions"][0].endswith(", 1 model loads")


def test_regions_repeat_the_no_input_pass_per_direction(tmp_path):
    """Evaluation shares one no-input pass per destination; region_ce makes one per direction."""
    from pairless.experiments.inference_work import CacheState, split_counts

    config = get_recipe("visual-pairs", "micro")
    plan = Plan(config, tmp_path)
    done = {"world", "tokenizers", "shards", *(run.name for run in config.expanded_runs())}
    rows, _ = plan_stages(plan, Throughput(GPU_PROFILES["h100"]), CacheState(plan, done - {"many-shot"}))
    counted = {row.key: row.details[0] for row in rows if not row.cached}
    directions = len(config.directions)
    destinations = len({direction.split(":")[1] for direction in config.directions})
    assert destinations < directions
    val = split_counts(config, "val", [])
    evaluation, regions = min(config.eval_samples, val), min(config.region_samples, val)
    assert counted["evaluation"].startswith(f"{(directions + destinations) * evaluation:,} sample passes")
    assert counted["regions"].startswith(f"{2 * directions * regions:,} sample passes")


def test_an_adapter_is_planned_from_its_flops():
    """An adapter step is the frozen base model's forward and its activations' gradients (two forward
    passes, no weight gradients), plus, with the structure term, the new modality's encoding with gradients
    and the anchor's without; the committed adapter-tiny run measured 45.8 and 85.7 s beside 277 s for its
    base (ratios 0.17 and 0.31), planned at 0.17 and 0.32 (it was a fixed 12,000 tokens/s: 167 s each)."""
    from pairless.experiments.estimate import estimate_adapter, estimate_run

    config = get_recipe("adapter", "tiny")
    plan = Plan(config, "/nonexistent")
    stages = {stage.name: stage for stage in config.expanded_adapters()}
    plain, structured = stages["adapter"], stages["adapter-structure"]
    base_run = plan.expanded[plain.base]
    base = base_run.config()
    specs = {name: spec for name, spec in SPECS.items() if name != "caption"}
    throughput = Throughput(GPU_PROFILES["h100"])
    flops, seconds = estimate_adapter(plain, base, specs, throughput)
    inputs, targets = base.masking.input_budget, base.masking.target_budget
    per_sample = 2 * forward_flops(base.model, specs, inputs, targets, base.batch_size)
    assert flops == pytest.approx(plain.total_tokens / (inputs + targets) * per_sample)
    with_structure, _ = estimate_adapter(structured, base, specs, throughput)
    assert 1.5 < with_structure / flops < 2.2
    trained = estimate_run(base, {name: specs[name] for name in specs if name != "normal"}, throughput)
    assert seconds / trained.seconds == pytest.approx(2 / 3 * plain.total_tokens / base.total_tokens, rel=0.1)
