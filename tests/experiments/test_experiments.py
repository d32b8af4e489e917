"""The runner end to end at the micro preset: every recipe's report is complete; caching; resumption."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pairless.commands.run import main
from pairless.experiments.experiment import ExperimentConfig
from pairless.experiments.recipes import DATA_RECIPES, RECIPES, get_recipe
from pairless.experiments.runner import Plan, run_experiment
from pairless.utils.storage import flatten, is_complete


def _micro(recipe: str):
    return get_recipe(recipe, "micro")


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    """One shared results root: recipes reuse each other's cached stages, as they do for users."""
    return tmp_path_factory.mktemp("results")


def _read_report(folder):
    return (folder / "report.md").read_text(), json.loads((folder / "results.json").read_text())


def test_demo_micro_end_to_end(results_root):
    folder = run_experiment(_micro("demo"), results_root)
    report, results = _read_report(folder)
    assert "rgb → depth" in report and "depth → rgb" in report
    for run in ("zs-rgb-depth", "many-shot"):
        for direction in ("rgb:depth", "depth:rgb"):
            entry = results["evals"][run][direction]
            assert entry["num_samples"] > 0 and entry["ce"] > 0 and entry["ce_unconditional"] > 0
    assert "Do the study's findings hold here?" in report
    assert (folder / "results.csv").is_file() and (folder / "summary.json").is_file()
    assert results["generation"]["figures"], "generation figures missing"
    for path in results["generation"]["figures"].values():
        assert os.path.getsize(path) > 1000


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["visual-pairs", "binding", "binding-exposure", "binding-strength",
                                    "caption"])
def test_every_recipe_micro_report_is_complete(results_root, recipe):
    folder = run_experiment(_micro(recipe), results_root)
    report, results = _read_report(folder)
    config = _micro(recipe)
    for run in config.expanded_runs():
        assert run.name in results["evals"], f"{run.name} was not evaluated"
    if recipe == "visual-pairs":
        for direction in config.directions:
            assert direction.replace(":", " → ") in report
        assert "Table I" in report
        _check_chained_baseline(folder, report, results)
        assert "## Alignment probes" in report
        assert "## What is predictable" in report
        for run in config.expanded_runs():  # every direction has an image destination here
            assert set(results["regions"][run.name]) == set(config.directions)
            for split in results["regions"][run.name].values():
                assert split["groups"] == ["objects", "background"]
                assert split["objects"]["num_tokens"] + split["background"]["num_tokens"] == \
                    split["num_samples"] * 64
        for run in config.expanded_runs():  # every run probed on each pair of the directions
            assert set(results["probes"][run.name]) == {"rgb:normal", "rgb:depth", "rgb:semseg"}
            for value in results["probes"][run.name].values():
                assert 0.0 <= value["summary"]["foscttm"] <= 1.0 and value["num_samples"] > value["k"]
    if recipe == "binding":
        assert "Table II" in report and (folder / "binding.png").is_file()
        for count in ("0", "1", "3", "5"):
            assert f"| {count} | rgb → depth |" in report
    if recipe == "binding-exposure":  # every run saw the same rgb + depth tokens, within one global batch
        seen = [info["tokens_per_modality"]["rgb"] + info["tokens_per_modality"]["depth"]
                for info in results["runs"].values()]
        run = config.runs[0]
        assert min(seen) >= run.total_tokens
        assert max(seen) - min(seen) < run.batch_size * (run.input_budget + run.target_budget)
        assert "| 5 | rgb → depth |" in report
    if recipe == "binding-strength":  # one binder each, with its matched control; the plot
        assert "## Binding strength" in report and (folder / "binding_strength.png").is_file()
        for binder in ("none", "normal", "semseg", "embed"):
            assert f"| {binder} | rgb → depth |" in report
        universes = {info["label"]: info["universe"] for info in results["runs"].values()}
        assert universes["binder:semseg"] == ["rgb", "depth", "semseg"]
    if recipe == "caption":
        assert "rgb → caption" in report and "caption → rgb" in report
        # caption -> rgb splits objects / background, rgb -> caption content / template words
        for per_direction in results["regions"].values():
            assert set(per_direction) == {"caption:rgb", "rgb:caption"}
            words = per_direction["rgb:caption"]
            assert words["groups"] == ["content", "template"] and words["content"]["num_tokens"] > 0
            assert 0 < words["focus_fraction"] < 1
        # the recipe says in words that a CPU preset cannot learn captions, with the budget it would take
        assert "**Note**: Captions are not expected to be learned at this preset" in report
        assert "40,000 tokens over seven modalities" in report


def _check_chained_baseline(folder, report, results):
    """rgb -> normal -> depth is scored on the same samples and ground truth as direct rgb -> depth."""
    import numpy as np

    from pairless.experiments.recipes import CHAIN_VIA

    chained = results["generation"]["chained"]
    assert set(chained) == {f"rgb:{other}" for other in CHAIN_VIA}
    assert "## Chained through a binding modality" in report
    for other, via in CHAIN_VIA.items():
        direct_dir = folder / "figures" / f"rgb-to-{other}"
        chain_dir = folder / "figures" / f"rgb-to-{via}-to-{other}"
        assert (chain_dir / "figure.png").is_file()
        direct, chain = (json.loads((d / "metrics.json").read_text()) for d in (direct_dir, chain_dir))
        assert direct["_num_samples"] == chain["_num_samples"] > 0
        truths = [sorted((d / "ground_truth").iterdir()) for d in (direct_dir, chain_dir)]
        assert [p.name for p in truths[0]] == [p.name for p in truths[1]] and truths[0]
        for a, b in zip(*truths, strict=True):
            if a.suffix == ".npy":
                np.testing.assert_array_equal(np.load(a), np.load(b))
        run = f"zs-rgb-{other}"
        assert set(chained[f"rgb:{other}"]["metrics"]) >= {run}
        assert f"rgb → {via} → {other}" in report


def test_pairs_curve_micro_end_to_end(results_root):
    """k = 0 and k = all reuse visual-pairs' runs (cached above); the few-shot runs record their k pairs."""
    config = _micro("pairs-curve")
    plan = Plan(config, results_root)
    assert main(["pairs-curve", "--preset", "micro", "--out", str(results_root)]) == 0
    folder = results_root / "pairs-curve"
    report, results = _read_report(folder)
    for k in (16, 64):
        paired = json.loads((plan.runs[f"pairs-k{k}"] / "paired_ids.json").read_text())["rgb:depth"]
        assert len(paired) == k
        alone = json.loads((plan.runs[f"paired-only-k{k}"] / "paired_ids.json").read_text())["rgb:depth"]
        assert alone == paired  # the baseline trains on the same k samples
    for run in config.expanded_runs():
        assert results["evals"][run.name]["rgb:depth"]["ce"] > 0
        assert "abs_rel" in results["generation"]["metrics"]["rgb:depth"][run.name]
    assert "## Pairs curve" in report and "Exchange rate (rgb → depth): " in report
    assert "| 64 | rgb → depth |" in report and "| all | depth → rgb |" in report
    assert (folder / "pairs_curve.png").stat().st_size > 1000
    assert len(results["generation"]["figures"]) == 1  # the grid of k = 0, the middle k and all


def test_second_run_trains_nothing(results_root, capsys):
    config = _micro("demo")
    run_experiment(config, results_root)  # reuses the first test's stages (or makes them)
    plan = Plan(config, results_root)
    assert all(is_complete(path) for path in plan.runs.values())
    mtimes = {name: (path / "model.safetensors").stat().st_mtime for name, path in plan.runs.items()}
    capsys.readouterr()
    assert main(["demo", "--preset", "micro", "--out", str(results_root)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("cached") >= 2 + len(plan.runs)  # world, tokenizers, shards, every run
    assert "pairless train: done" not in printed
    assert mtimes == {name: (path / "model.safetensors").stat().st_mtime for name, path in plan.runs.items()}


def test_evaluations_are_cached_for_the_weights_they_were_computed_from(results_root):
    """A cached evaluation counts only for the weights it was computed from: a run trained again (say after
    a fix in the training code, with the same config) is evaluated again, not reported with old numbers."""
    config = _micro("demo")
    run_experiment(config, results_root)
    plan = Plan(config, results_root)
    cache_file = plan.eval_file("zs-rgb-depth")
    original = json.loads(cache_file.read_text())
    assert original["_weights"]  # stamped with the weights' hash
    doctored = {direction: {**value, "ce": 123.0} for direction, value in original.items()
                if direction != "_weights"}
    try:
        cache_file.write_text(json.dumps({**doctored, "_weights": original["_weights"]}))
        _, results = _read_report(run_experiment(config, results_root))
        assert results["evals"]["zs-rgb-depth"]["rgb:depth"]["ce"] == 123.0  # same weights: the cache holds
        cache_file.write_text(json.dumps({**doctored, "_weights": "other weights"}))
        _, results = _read_report(run_experiment(config, results_root))
        assert results["evals"]["zs-rgb-depth"]["rgb:depth"]["ce"] == original["rgb:depth"]["ce"]
    finally:
        cache_file.write_text(json.dumps(original))


def test_changed_setting_recomputes_only_dependants(results_root):
    base = _micro("demo")
    changed = base.model_copy(update={"runs": [base.runs[0].with_train(total_tokens=30_000), base.runs[1]]})
    before, after = Plan(base, results_root), Plan(changed, results_root)
    assert before.world == after.world and before.shards == after.shards
    assert before.runs["many-shot"] == after.runs["many-shot"]
    assert before.runs["zs-rgb-depth"] != after.runs["zs-rgb-depth"]


def test_cache_keys_follow_resolved_configs_not_names(tmp_path, monkeypatch):
    """A changed model or tokenizer preset trains anew; spelling out a default or relabelling does not.

    The keys once hashed the recipe's description (a preset's name, the overrides), so a run or tokenizer
    trained before a default changed was silently reused afterwards.
    """
    from pairless.model import config as model_config
    from pairless.tokenizers import neural_training as tokenizer_train

    base = _micro("demo")
    before = Plan(base, tmp_path)
    run = base.runs[0]
    spelled = base.model_copy(update={"runs": [run.model_copy(update={
        "train": {**run.train, "weight_decay": 0.05}, "label": "renamed"}), base.runs[1]]})
    assert Plan(spelled, tmp_path).runs == before.runs

    preset = run.model_preset
    monkeypatch.setitem(model_config.PRESETS, preset, {**model_config.PRESETS[preset], "token_init_std": 0.5})
    changed_model_preset = Plan(base, tmp_path)
    assert changed_model_preset.tokenizers == before.tokenizers
    assert all(changed_model_preset.runs[name] != before.runs[name] for name in before.runs)
    monkeypatch.undo()
    assert Plan(base, tmp_path).runs == before.runs

    name = base.tokenizers.preset
    preset_settings = tokenizer_train.PRESETS[name]
    monkeypatch.setitem(tokenizer_train.PRESETS, name, {
        **preset_settings, "spatial": {**preset_settings["spatial"], "modality_levels": {}}})
    changed_preset = Plan(base, tmp_path)
    assert changed_preset.tokenizers != before.tokenizers and changed_preset.shards != before.shards
    assert all(changed_preset.runs[name] != before.runs[name] for name in before.runs)


def test_interrupted_run_continues(tmp_path):
    """SIGKILL `pairless run` mid-way, run it again: it finishes, reusing what was complete."""
    command = [sys.executable, "-c",
               "import sys; from pairless.cli import main; sys.exit(main(sys.argv[1:]))",
               "run", "demo", "--preset", "micro", "--out", str(tmp_path)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    plan = Plan(_micro("demo"), tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and not is_complete(plan.shards) and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # now inside training
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert is_complete(plan.world), "the world stage should have completed before the kill"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "world" in again.stdout and "cached" in again.stdout
    assert (tmp_path / "demo" / "report.md").is_file()


def test_unknown_recipe_and_bad_override_are_named(capsys):
    with pytest.raises(SystemExit):
        main(["nope"])
    with pytest.raises(SystemExit):
        main(["demo", "--set", "world.num_scenez=3", "--dry-run"])
    assert "num_scenez" in capsys.readouterr().err


def test_train_set_reaches_every_run_over_its_own_settings(tmp_path, capsys):
    written = tmp_path / "config.json"
    assert main(["visual-pairs", "--preset", "quick", "--train-set", "model.mlp=gelu", "--train-set",
                 "base_lr=0.002", "--config-out", str(written)]) == 0
    config = ExperimentConfig.model_validate(json.loads(written.read_text()))
    before = {run.name: run.config() for run in get_recipe("visual-pairs", "quick").runs}
    assert len(config.runs) == len(before) > 1
    assert before["larger"].model.preset != before["many-shot"].model.preset  # small against tiny
    for run in config.runs:
        resolved = run.config()
        assert resolved.model.mlp == "gelu" and resolved.base_lr == 0.002
        # each run's own settings stay: its model preset (the larger run's differs), withheld pairs, budget
        assert resolved.model.preset == before[run.name].model.preset
        assert resolved.fragment.withheld == before[run.name].fragment.withheld
        assert resolved.total_tokens == before[run.name].total_tokens
    with pytest.raises(SystemExit):
        main(["demo", "--train-set", "model.mlpx=gelu", "--dry-run"])
    assert "train.model.mlpx" in capsys.readouterr().err


def test_dry_run_lists_every_stage(tmp_path, capsys):
    for recipe in set(RECIPES) - DATA_RECIPES:  # own-data: tests/experiments/test_own_data.py
        assert main([recipe, "--preset", "tiny", "--out", str(tmp_path), "--dry-run", "--seeds", "3"]) == 0
        printed = capsys.readouterr().out
        config = get_recipe(recipe, "tiny")
        assert printed.count("train ") == 3 * len(config.runs)
        assert "estimated time" in printed


def test_caption_recipe_states_the_budget_captions_take_on_the_cpu_presets():
    assert "trains 8,000,000 tokens over seven modalities" in get_recipe("caption", "tiny").notes[0]
    assert get_recipe("caption", "paper").notes == []  # the GPU preset's budget is not measured


@pytest.mark.parametrize("preset", ["micro", "tiny"])
def test_recipes_share_the_runs_they_have_in_common(tmp_path, preset):
    # visual-pairs, binding (its 5-binding set is the full universe) and caption train the same many-shot
    # model; binding's 5-binding zero-shot model is visual-pairs' rgb+depth one; caption reuses the larger
    # model. One folder each, whatever label the report gives them.
    plans = {name: Plan(get_recipe(name, preset), tmp_path)
             for name in ("visual-pairs", "binding", "caption")}
    assert plans["binding"].runs["many-shot"] == plans["visual-pairs"].runs["many-shot"] \
        == plans["caption"].runs["many-shot"]
    assert plans["binding"].runs["zs-rgb-depth"] == plans["visual-pairs"].runs["zs-rgb-depth"]
    assert plans["caption"].runs["larger"] == plans["visual-pairs"].runs["larger"]
    # ... while runs that differ in what they train do not collide.
    assert len({plans["binding"].runs[f"zs-bind{c}"] for c in (0, 1, 3)}) == 3


@pytest.mark.parametrize("recipe", ["binding", "caption"])
def test_stages_build_the_train_config_the_train_command_built(tmp_path, recipe):
    # The runner used to call `pairless train` with these arguments; run folders it trained must still be
    # found and resumed (train compares RUN/config.json field by field), so the config must be the same.
    from pairless.commands.train import build_parser, config_from_args
    from pairless.experiments import stages

    for run in get_recipe(recipe, "micro").expanded_runs():
        shards, out = tmp_path / "shards", tmp_path / run.name
        argv = ["--shards", str(shards), "--out", str(out), "--preset", run.model_preset,
                "--total-tokens", str(run.total_tokens), "--batch-size", str(run.batch_size),
                "--set", f"masking.input_budget={run.input_budget}",
                "--set", f"masking.target_budget={run.target_budget}",
                "--set", f"seed={run.seed}", "--set", f"fragment.seed={run.seed}"]
        for a, b in run.withheld:
            argv += ["--withhold", f"{a}:{b}"]
        if run.universe:
            argv += ["--universe", ",".join(run.universe)]
        shown = {"model.preset", "total_tokens", "batch_size", "masking.input_budget",
                 "masking.target_budget", "seed", "fragment.seed", "fragment.withheld", "fragment.universe"}
        for key, value in flatten(run.train).items():  # the rest: the preset's scale (the micro model)
            if key not in shown:
                argv += ["--set", f"{key}={json.dumps(value)}"]
        expected = config_from_args(build_parser().parse_args(argv))
        assert stages.train_config(run, shards, out).model_dump() == expected.model_dump()


def test_options_left_out_of_cache_keys_default_to_their_neutral_value():
    """An added option (ADDED_OPTIONS) leaves a run's key only at a value that trains as before it existed:
    that value must be the option's default, or runs that never set it would share keys with runs that did."""
    from pathlib import Path

    from pairless.experiments import stages
    from pairless.training.run import ADDED_OPTIONS

    run = _micro("demo").runs[0]
    assert run.withheld == [("rgb", "depth")]
    dumped = stages.train_config(run, Path("."), Path(".")).model_dump(mode="json")
    keyed = stages.run_key_fields(run)
    # three options' defaults changed results on purpose (2026-12-07): runs cached before masked with the
    # batch stream and had GELU and no context projection, and keep their keys; every run on the new
    # defaults gets a new one
    assert keyed["masking_stream"] == "sample" and ADDED_OPTIONS["masking_stream"] == "batch"
    assert keyed["model"]["mlp"] == "swiglu" and ADDED_OPTIONS["model.mlp"] is None
    assert keyed["model"]["context_projection"] is True and ADDED_OPTIONS["model.context_projection"] is None
    for dotted, neutral in ADDED_OPTIONS.items():
        if dotted in ("masking_stream", "model.mlp", "model.context_projection"):
            continue
        *sections, name = dotted.split(".")
        full, kept = dumped, keyed
        for section in sections:
            full, kept = full[section], kept[section]
        assert full[name] == neutral, dotted
        assert name not in kept, dotted
    changed = run.with_train(fragment={"only_paired": True, "allow_pairs": {"rgb:depth": 4}})
    assert stages.run_key_fields(changed)["fragment"]["only_paired"] is True


def test_transitive_micro_end_to_end(results_root):
    """Pseudo-pairs from the zero-shot run, the continued runs start from it, the report compares them."""
    config = _micro("transitive")
    folder = run_experiment(config, results_root)
    report, results = _read_report(folder)
    plan = Plan(config, results_root)
    stage = results["pseudo_pairs"]["pp-pseudo"]
    assert stage["direction"] == "rgb:depth" and 0 < stage["kept"] == stage["candidates"]
    pseudo_shards = plan.pseudo_shards(config.runs[2])
    assert json.loads((plan.runs["pp-pseudo"] / "config.json").read_text())["shards"] == str(pseudo_shards)
    for name in ("pp-pseudo", "pp-control"):
        saved = json.loads((plan.runs[name] / "config.json").read_text())
        assert saved["init_from"] == str(plan.runs["zs-rgb-depth"])
        assert set(results["evals"][name]) == {"rgb:depth", "depth:rgb"}
    assert json.loads((plan.runs["pp-control"] / "config.json").read_text())["shards"] == str(plan.shards)
    filtered, sampled = results["pseudo_pairs"]["pp-filtered"], results["pseudo_pairs"]["pp-sampled"]
    assert filtered["keep_fraction"] == 0.5 and filtered["kept"] >= filtered["candidates"] // 2
    assert sampled["schedule"] == "sample8" and sampled["kept"] == sampled["candidates"]
    assert "## Transitive pseudo-pairs" in report and "equal-budget control" in report
    assert "continued on pseudo-pairs: pp-sampled" in report
    assert (folder / "transitive.png").is_file()
    # the control's key differs from the pseudo run's only by the data: both depend on the base run's key
    assert plan.run_key(config.runs[2]) != plan.run_key(config.runs[3])


def test_adapter_micro_end_to_end(results_root):
    """The base never sees normal; both adapters add it with the base frozen; evaluated like runs."""
    config = _micro("adapter")
    folder = run_experiment(config, results_root)
    report, results = _read_report(folder)
    plan = Plan(config, results_root)
    base = json.loads((plan.runs["base-no-normal"] / "COMPLETE.json").read_text())
    assert "normal" not in base["tokens_per_modality"]
    for name in ("adapter", "adapter-structure"):
        info = results["runs"][name]
        assert info["role"] == "adapter" and info["frozen_hash"] == info["base_hash"]
        assert set(results["evals"][name]) == set(config.directions)
        assert (plan.runs[name] / "model.safetensors").is_file()
    assert results["runs"]["adapter-structure"]["structure_weight"] > 0
    assert ["normal", "depth"] in results["runs"]["adapter"]["withheld"]  # what the explorer marks unseen
    assert ["normal", "rgb"] not in results["runs"]["adapter"]["withheld"]
    assert "## Adding a modality through an adapter" in report and (folder / "adapter.png").is_file()
    assert "| normal → depth | no |" in report and "| rgb → normal | yes (anchor) |" in report


def test_probe_curve_micro_evaluates_and_probes_every_snapshot(results_root):
    config = _micro("probe-curve")
    folder = run_experiment(config, results_root)
    _, results = _read_report(folder)
    for run in config.runs:
        per_fraction = results["snapshots"][run.name]
        assert [float(tag) for tag in per_fraction] == run.snapshots
        tokens = [entry["tokens"] for entry in per_fraction.values()]
        assert tokens == sorted(tokens) and tokens[-1] < run.total_tokens
        for entry in per_fraction.values():
            assert set(entry["evals"]) == set(config.directions) and "rgb:depth" in entry["probes"]


@pytest.mark.slow
def test_every_recipe_leaves_no_lock_behind(results_root):
    """Last in this module: every recipe but own-data (tests/commands/test_own_folder.py checks that one) at
    micro, through the command, in the results root the tests above filled (their stages are cached, so this
    costs the evaluations and reports); no ``.lock`` file may be left anywhere under it."""
    for recipe in sorted(set(RECIPES) - set(DATA_RECIPES)):
        assert main([recipe, "--preset", "micro", "--out", str(results_root)]) == 0, recipe
    assert sorted(path.relative_to(results_root) for path in results_root.rglob("*.lock")) == []
