"""Transitive pseudo-pairs: which samples get generated tokens, that no real Mb reaches them, the
consistency filter, the audit and training on them from the zero-shot run's weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pairless.cli import main as cli_main
from pairless.config import ConfigError, validate
from pairless.data.shards import ShardSplit, open_shards, write_shards
from pairless.experiments.pseudo_pairs import (
    PseudoPairsConfig,
    candidate_rows,
    consistency_scores,
    make_pseudo_pairs,
)
from pairless.inference.evaluate import load_run_model
from pairless.model import load_model
from pairless.training.config import TrainConfig
from pairless.training.data import load_training_data
from pairless.training.fragment import FragmentConfig, audit, fragment_samples
from pairless.training.train import train
from tests.train_helpers import SPECS, make_shards, tiny_config_data

pytestmark = pytest.mark.usefixtures("one_thread")

WITHHELD = FragmentConfig(withheld=[("rgb", "depth")], universe=["rgb", "depth", "normal"])


@pytest.fixture(scope="module")
def zero_shot(tmp_path_factory):
    """Token shards and a tiny run trained with rgb:depth withheld."""
    root = tmp_path_factory.mktemp("pseudo")
    shards = make_shards(root / "shards", count=64)
    config = validate(TrainConfig, tiny_config_data(
        shards, root / "run", fragment=dict(withheld=[["rgb", "depth"]], universe=["rgb", "depth", "normal"]),
        total_tokens=16 * 24 * 20))
    return root, shards, train(config)


def _pseudo(root, run, name: str, **changes) -> tuple[dict, object]:
    config = validate(PseudoPairsConfig, {"run": str(run), "out": str(root / name), "direction": "rgb:depth",
                                          "schedule": "greedy", "batch_size": 16, **changes})
    return make_pseudo_pairs(config), open_shards(root / name, "train")


def _every_score(root, shards, run, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows every sample of an unfiltered pseudo-pair folder filled, and their consistency scores."""
    _, every = _pseudo(root, run, name)
    rows = np.flatnonzero(every.pseudo["depth"])
    return rows, consistency_scores(load_run_model(run), open_shards(shards, "train"), rows, "rgb", "depth",
                                    np.asarray(every.tokens["depth"][rows]), batch_size=16)


def test_only_samples_showing_rgb_without_depth_get_generated_depth(zero_shot):
    root, shards, run = zero_shot
    summary, pseudo = _pseudo(root, run, "all")
    real = open_shards(shards, "train")
    rows = candidate_rows(real, WITHHELD, "rgb", "depth")
    present = np.stack([real.present[name] for name in real.specs], 1)
    views = fragment_samples(list(real.ids), present, list(real.specs), WITHHELD).views
    depth, rgb = list(real.specs).index("depth"), list(real.specs).index("rgb")
    assert np.array_equal(np.sort(rows), np.flatnonzero(views[:, rgb] & ~views[:, depth]))
    assert summary["candidates"] == summary["kept"] == len(rows) > 0
    assert np.array_equal(np.flatnonzero(pseudo.pseudo["depth"]), np.sort(rows))
    others = np.setdiff1d(np.arange(len(real.ids)), rows)
    assert np.array_equal(pseudo.tokens["depth"][others], real.tokens["depth"][others])
    for name in ("rgb", "normal", "caption"):  # nothing else changes, and val is a copy
        assert np.array_equal(pseudo.tokens[name], real.tokens[name]) and not pseudo.pseudo[name].any()
    assert np.array_equal(open_shards(root / "all", "val").tokens["depth"], open_shards(shards, "val").tokens[
        "depth"])


def test_the_real_depth_of_a_filled_sample_never_reaches_its_pseudo_depth(zero_shot):
    root, shards, run = zero_shot
    _, first = _pseudo(root, run, "reference")
    # The same shards with every real depth token scrambled: the generated depth must not change.
    real = open_shards(shards, "train")
    generator = np.random.default_rng(5)
    scrambled = {name: np.array(real.tokens[name]) for name in real.specs}
    scrambled["depth"] = generator.integers(0, SPECS["depth"].vocab_size, scrambled["depth"].shape)
    present = {name: np.array(real.present[name]) for name in real.specs}
    splits = {"train": ShardSplit(list(real.ids), scrambled, present)}
    val = open_shards(shards, "val")
    splits["val"] = ShardSplit(list(val.ids), {n: np.array(val.tokens[n]) for n in val.specs},
                               {n: np.array(val.present[n]) for n in val.specs})
    write_shards(root / "scrambled-shards", splits, real.specs, {"note": "depth scrambled"})
    _, second = _pseudo(root, run, "from-scrambled", shards=str(root / "scrambled-shards"))
    filled = first.pseudo["depth"]
    assert filled.any() and np.array_equal(second.pseudo["depth"], filled)
    assert np.array_equal(second.tokens["depth"][filled], first.tokens["depth"][filled])
    # and they are not the real depth maps copied over (the model generated them)
    assert not np.array_equal(first.tokens["depth"][filled], real.tokens["depth"][filled])


def test_the_consistency_filter_keeps_exactly_the_samples_at_or_above_the_threshold(zero_shot):
    root, shards, run = zero_shot
    rows, scores = _every_score(root, shards, run, "unfiltered")
    threshold = float(np.median(scores))
    summary, filtered = _pseudo(root, run, "filtered", threshold=threshold)
    assert np.array_equal(np.flatnonzero(filtered.pseudo["depth"]), rows[scores >= threshold])
    assert summary["kept"] == int((scores >= threshold).sum()) < summary["candidates"]
    assert summary["consistency_kept"]["p10"] >= threshold - 1e-9


def test_keep_fraction_keeps_the_most_consistent_samples(zero_shot):
    root, shards, run = zero_shot
    rows, scores = _every_score(root, shards, run, "unfiltered-2")
    summary, kept = _pseudo(root, run, "quarter", keep_fraction=0.25)
    chosen = np.isin(rows, np.flatnonzero(kept.pseudo["depth"]))
    assert chosen.sum() == summary["kept"] >= round(0.25 * len(rows))
    assert scores[chosen].min() >= scores[~chosen].max() and summary["threshold"] == scores[chosen].min()
    with pytest.raises(ValueError, match="not both"):
        validate(PseudoPairsConfig, {"run": str(run), "out": "x", "direction": "rgb:depth", "threshold": 0.1,
                                     "keep_fraction": 0.5})


def test_the_audit_and_training_see_no_real_pair_and_start_from_the_run(zero_shot, tmp_path):
    root, shards, run = zero_shot
    summary, pseudo = _pseudo(root, run, "for-training")
    text = audit(root / "for-training", "train", WITHHELD)
    assert f"withheld rgb:depth: co-occur in {summary['kept']} samples (0 with both real" in text
    assert f"pseudo depth: {summary['kept']} samples" in text
    data = load_training_data(root / "for-training", "train", WITHHELD)
    rgb, depth = data.modalities.index("rgb"), data.modalities.index("depth")
    together = data.views[:, rgb] & data.views[:, depth]
    assert np.array_equal(np.flatnonzero(together), np.flatnonzero(pseudo.pseudo["depth"]))
    config = validate(TrainConfig, tiny_config_data(
        root / "for-training", tmp_path / "continued", fragment=WITHHELD.model_dump(mode="json"),
        init_from=str(run), total_tokens=16 * 24 * 4))
    from pairless.training.distributed import setup
    from pairless.training.train import _start

    session = _start(config, setup("cpu"), tmp_path / "continued")
    for name, tensor in load_model(run / "model.safetensors").state_dict().items():
        assert torch.equal(session.model.state_dict()[name], tensor), name
    continued = train(config)
    assert json.loads((continued / "config.json").read_text())["init_from"] == str(run)


def test_init_from_a_run_of_other_modalities_is_an_error_naming_it(zero_shot, tmp_path):
    root, shards, run = zero_shot
    config = validate(TrainConfig, tiny_config_data(shards, tmp_path / "other", init_from=str(run),
                                                    fragment=dict(universe=["rgb", "depth"])))
    with pytest.raises(ConfigError, match="init_from"):
        train(config)


def test_a_finished_output_is_reused_only_for_the_same_request(zero_shot):
    root, _, run = zero_shot
    first, _ = _pseudo(root, run, "reused", threshold=0.0)
    again, _ = _pseudo(root, run, "reused", threshold=0.0)
    assert again == first
    with pytest.raises(FileExistsError, match="threshold=0.0"):
        _pseudo(root, run, "reused", threshold=0.5)


def test_the_command_refuses_a_pair_the_run_saw_together(zero_shot, capsys):
    root, _, run = zero_shot
    code = cli_main(["pseudo-pairs", str(run), "--direction", "rgb:normal", "--out", str(root / "bad")])
    assert code == 2 and "rgb:normal is not a pair" in capsys.readouterr().err
    code = cli_main(["pseudo-pairs", str(run), "--direction", "rgb:depth", "--out", str(root / "cli"),
                     "--schedule", "greedy", "--threshold", "-10"])
    out = capsys.readouterr().out
    assert code == 0 and "samples kept" in out and (root / "cli" / "COMPLETE.json").is_file()
