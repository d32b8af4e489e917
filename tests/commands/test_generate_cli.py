"""End to end: `pairless generate` / generate_and_score and `pairless eval` on a tiny real pipeline.

World (a few scenes) -> tokenizers trained for two steps -> shards -> two
untrained tiny models saved as runs. Quality is meaningless here; the test
checks the outputs' layout, shapes, metric keys, caching and determinism.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pairless.utils.storage import atomic_write_json, is_complete


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from pairless.commands.tokenize import main as tokenize_main
    from pairless.commands.tokenizers import main as tokenizers_main
    from pairless.commands.world import main as world_main
    from pairless.data.shards import open_shards
    from pairless.model import FourM, ModelConfig, save_model

    root = tmp_path_factory.mktemp("pipeline")
    assert world_main(["--out", str(root / "data"), "--num-scenes", "24", "--size", "32", "--val-fraction",
                       "0.5"]) == 0
    assert tokenizers_main(["train", "--data", str(root / "data"), "--out", str(root / "tok"), "--preset",
                            "micro",
                            "--modalities", "rgb", "depth", "caption", "--set", "steps=2",
                            "--set", "text.length_margin=32", "--no-report"]) == 0
    assert tokenize_main(["--data", str(root / "data"), "--tokenizers", str(root / "tok"),
                          "--out", str(root / "shards")]) == 0
    specs = open_shards(root / "shards", "val").specs
    runs = {}
    for seed, name in enumerate(["zs", "ms"]):
        torch.manual_seed(seed)
        model = FourM(ModelConfig(dim=32, encoder_layers=1, decoder_layers=1, heads=2), specs)
        run = root / name
        run.mkdir()
        save_model(run / "model.safetensors", model)
        atomic_write_json(run / "config.json", {"data": {"shards": str(root / "shards")}})
        runs[name] = run
    return root, runs


def test_generate_and_score_writes_outputs_metrics_and_figure(pipeline):
    from pairless.inference.translations import generate_and_score

    root, runs = pipeline
    out = root / "figures" / "rgb-to-depth"
    result = generate_and_score(runs, "rgb", "depth", "roar8", num=3, tokenizers=root / "tok",
                                shards=root / "shards", out=out, figure_rows=2)
    assert is_complete(out) and (out / "figure.png").stat().st_size > 1000
    assert set(result["metrics"]) >= {"zs", "ms"}
    assert {"abs_rel", "rmse", "delta_1.25"} <= set(result["metrics"]["zs"])
    for name in runs:
        depth = np.load(out / name / "depth.npy")
        assert depth.shape == (3, 32, 32) and depth.dtype == np.float32
        tokens = np.load(out / name / "depth.tokens.npy")
        assert tokens.shape == (3, 64) and tokens.max() < 1000
    assert np.load(out / "ground_truth" / "depth.npy").shape == (3, 32, 32)
    assert len(list((out / "input").glob("rgb_*.png"))) == 3
    # the same request again is served from the folder, even when the weights file was touched since
    # (the request records a hash of the weights, not their modification time)
    marker_written = (out / "COMPLETE.json").stat().st_mtime_ns
    for run in runs.values():
        os.utime(run / "model.safetensors", ns=(1, 1))
    again = generate_and_score(runs, "rgb", "depth", "roar8", num=3, tokenizers=root / "tok",
                               shards=root / "shards", out=out, figure_rows=2)
    assert again["metrics"] == json.loads((out / "metrics.json").read_text())
    assert (out / "COMPLETE.json").stat().st_mtime_ns == marker_written
    assert "weights sha256" in json.dumps(json.loads((out / "request.json").read_text())["runs"])


def test_generate_cli_caption(pipeline, capsys):
    from pairless.commands.generate import main

    root, runs = pipeline
    code = main([str(runs["zs"]), "--from", "rgb", "--to", "caption", "--num", "2", "--schedule",
                 "ar-caption",
                 "--set", "top_k=5", "--out", str(root / "caption"), "--tokenizers", str(root / "tok")])
    assert code == 0
    assert len((root / "caption" / "zs" / "caption.txt").read_text().splitlines()) == 2
    request = json.loads((root / "caption" / "request.json").read_text())
    assert request["schedule"]["top_k"] == 5 and request["schedule"]["scheme"] == "ar"
    metrics = json.loads((root / "caption" / "metrics.json").read_text())
    assert {"bleu4", "fact_accuracy"} <= set(metrics["zs"])
    assert "wrote" in capsys.readouterr().out


def test_generate_cli_reports_bad_requests(pipeline, capsys):
    from pairless.commands.generate import main

    root, runs = pipeline
    assert main([str(runs["zs"]), "--from", "rgb", "--to", "depth", "--schedule", "roar99",
                 "--out", str(root / "bad")]) == 2
    assert "roar99" in capsys.readouterr().err


def test_eval_cli_writes_eval_json(pipeline, capsys):
    from pairless.commands.eval import main

    root, runs = pipeline
    assert main([str(runs["zs"]), "--directions", "rgb:depth,rgb+caption:depth", "--num-samples", "5"]) == 0
    results = json.loads((runs["zs"] / "eval.json").read_text())
    assert set(results) == {"rgb:depth", "rgb+caption:depth"}
    for row in results.values():
        assert row["num_samples"] == 5 and row["num_tokens"] == 5 * 64
        # untrained (token embeddings at std 1): below a uniform guess, but not by far
        assert np.log(1000) - 3 < row["ce_unconditional"] < np.log(1000) + 1
    assert main([str(runs["zs"]), "--directions", "rgb:caption", "--num-samples", "5"]) == 0
    assert set(json.loads((runs["zs"] / "eval.json").read_text())) == {"rgb:depth", "rgb+caption:depth",
                                                                       "rgb:caption"}
    assert "rgb:caption" in capsys.readouterr().out


def test_eval_regions_without_semseg_says_so_and_still_records(pipeline, capsys):
    from pairless.commands.eval import main

    root, runs = pipeline  # these shards hold rgb, depth, caption: no semseg for an object mask
    assert main([str(runs["zs"]), "--directions", "caption:depth", "--num-samples", "3", "--regions"]) == 0
    assert "no direction into an image modality with semseg" in capsys.readouterr().err
    row = json.loads((runs["zs"] / "eval.json").read_text())["caption:depth"]
    assert row["num_samples"] == 3 and "regions" not in row


def test_chained_generation_saves_every_link(pipeline):
    from pairless.inference.translations import generate_and_score

    root, runs = pipeline
    out = root / "chain"
    result = generate_and_score({"zs": runs["zs"]}, "rgb", "caption:depth", "roar1", num=2,
                                tokenizers=root / "tok", shards=root / "shards", out=out)
    request = json.loads((out / "request.json").read_text())
    assert request["chain"] == [["rgb"], ["caption"], ["depth"]]
    assert len((out / "zs" / "caption.txt").read_text().splitlines()) == 2  # the text link used AR
    assert np.load(out / "zs" / "depth.npy").shape == (2, 32, 32)
    assert "abs_rel" in result["metrics"]["zs"]  # metrics are for the last link
