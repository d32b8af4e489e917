"""``--threads`` and ``--device`` on every command that runs a model or a tokenizer, on the CPU.

Each command accepts ``--device cpu`` / ``auto`` and ``--threads N``, refuses a CUDA device where torch sees
none with a message naming it (before it reads or writes anything), and records the count and device it
used with its outputs. A tiny real pipeline (world -> tokenizers -> shards -> two runs) feeds them.
"""

from __future__ import annotations

import argparse
import importlib

import pytest
import torch

from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.utils.runtime import Runtime, resolve_device
from pairless.utils.storage import read_json
from pairless.utils.threads import torch_threads

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--set", "model.dim=32", "--set", "model.heads=2", "--set", "model.encoder_layers=1",
        "--set", "model.decoder_layers=1", "--set", "masking.input_budget=16",
        "--set", "masking.target_budget=16",
        "--batch-size", "8", "--total-tokens", "800", "--set", "precision=fp32"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from pairless.cli import main

    root = tmp_path_factory.mktemp("runtime")
    with torch_threads(1):  # the module's fixture runs before one_thread: the default is then 1
        assert main(["world", "--out", str(root / "data"), "--num-scenes", "24", "--size", "32",
                     "--val-fraction", "0.5"]) == 0
        assert main(["tokenizers", "train", "--data", str(root / "data"), "--out", str(root / "tok"),
                     "--preset", "micro", "--modalities", "rgb", "depth", "caption", "--set", "steps=2",
                     "--no-report", "--device", "cpu", "--threads", "1"]) == 0
        assert main(["tokenize", "--data", str(root / "data"), "--tokenizers", str(root / "tok"),
                     "--out", str(root / "shards"), "--device", "auto", "--threads", "1"]) == 0
        shards = str(root / "shards")
        assert main(["train", "--shards", shards, "--out", str(root / "zs"), "--withhold", "rgb:depth", *TINY,
                     "--device", "cpu", "--threads", "1"]) == 0
        assert main(["train", "--shards", shards, "--out", str(root / "base"), "--universe", "rgb,caption",
                     *TINY, "--device", "auto"]) == 0
    return root


def test_tokenizers_tokenize_and_train_record_the_count_and_device(pipeline):
    training = read_json(pipeline / "tok" / "training.json")["modalities"]
    assert training["rgb"]["threads"] == 1 and training["rgb"]["device"] == "cpu"
    manifest = read_json(pipeline / "shards" / "manifest.json")
    assert manifest["threads"] == 1 and manifest["device"] == "cpu"
    config = read_json(pipeline / "zs" / "config.json")
    assert config["num_threads"] == 1 and config["device"] == "cpu"
    complete = read_json(pipeline / "zs" / "COMPLETE.json")
    assert complete["threads"] == 1 and complete["device"] == "cpu"
    # no --threads: the fixed default (one thread under this test's fixture), recorded all the same
    assert read_json(pipeline / "base" / "config.json")["num_threads"] == 1


def test_eval_generate_probe_pseudo_pairs_and_add_modality_record_what_they_used(pipeline, capsys):
    from pairless.cli import main

    run = str(pipeline / "zs")
    assert main(["eval", run, "--directions", "rgb:depth", "--num-samples", "4", "--device", "cpu",
                 "--threads", "1"]) == 0
    row = read_json(pipeline / "zs" / "eval.json")["rgb:depth"]
    assert row["threads"] == 1 and row["device"] == "cpu"
    assert main(["generate", run, "--from", "rgb", "--to", "depth", "--num", "2", "--out",
                 str(pipeline / "gen"), "--device", "auto", "--threads", "1"]) == 0
    request = read_json(pipeline / "gen" / "request.json")
    assert request["threads"] == 1 and request["device"] == "cpu"
    assert main(["probe", run, "--pair", "rgb:caption", "--num-samples", "12", "--batch-size", "4",
                 "--device", "cpu", "--threads", "1"]) == 0
    probe = read_json(pipeline / "zs" / "probes.json")["rgb:caption"]
    assert probe["threads"] == 1 and probe["device"] == "cpu"
    assert main(["pseudo-pairs", run, "--direction", "rgb:depth", "--out", str(pipeline / "pseudo"),
                 "--max-samples", "2", "--device", "cpu", "--threads", "1"]) == 0
    summary = read_json(pipeline / "pseudo" / "manifest.json")
    summary = next(value for value in summary.values() if isinstance(value, dict) and "kept" in value)
    assert summary["threads"] == 1 and summary["device"] == "cpu"
    assert main(["add-modality", str(pipeline / "base"), "--modality", "depth", "--anchor", "rgb",
                 "--out", str(pipeline / "added"), "--set", "total_tokens=200", "--set", "batch_size=4",
                 "--device", "cpu", "--threads", "1"]) == 0
    added = read_json(pipeline / "added" / "config.json")
    assert added["threads"] == 1 and added["device"] == "cpu"


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# every command that runs a model or a tokenizer, with the arguments it needs to get as far as the device
COMMANDS = {
    "tokenizers": ["tokenizers", "train", "--data", "{root}/data", "--out", "{root}/never-tok"],
    "tokenize": ["tokenize", "--data", "{root}/data", "--tokenizers", "{root}/tok", "--out", "{root}/never"],
    "train": ["train", "--shards", "{root}/shards", "--out", "{root}/never-run", *TINY],
    "eval": ["eval", "{root}/zs", "--directions", "rgb:depth"],
    "generate": ["generate", "{root}/zs", "--from", "rgb", "--to", "depth", "--out", "{root}/never-gen"],
    "probe": ["probe", "{root}/zs", "--pair", "rgb:depth"],
    "pseudo-pairs": ["pseudo-pairs", "{root}/zs", "--direction", "rgb:depth", "--out", "{root}/never-pp"],
    "add-modality": ["add-modality", "{root}/base", "--modality", "depth", "--anchor", "rgb",
                     "--out", "{root}/never-add"],
    "explore": ["explore", "{root}/zs", "--port", "1"],
    "run": ["run", "demo", "--preset", "micro", "--out", "{root}/never-results"],
}


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_cuda_device_without_cuda_is_refused_by_name(pipeline, monkeypatch, capsys, command, device):
    from pairless.cli import main

    _no_cuda(monkeypatch)
    arguments = [item.format(root=pipeline) for item in COMMANDS[command]]
    code = main([*arguments, "--device", device])
    error = capsys.readouterr().err
    assert code != 0
    assert f"'{device}'" in error and "CUDA" in error, error
    assert not any(path.name.startswith("never") for path in pipeline.iterdir())  # nothing written


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_threads_and_device(command):
    module = {"tokenizers": "tokenizers", "pseudo-pairs": "pseudo_pairs",
              "add-modality": "add_modality"}.get(command, command)
    parser = importlib.import_module(f"pairless.commands.{module}").build_parser()
    if command == "tokenizers":
        parser = parser._subparsers._group_actions[0].choices["train"]
    options = {option for action in parser._actions for option in action.option_strings}
    assert {"--threads", "--device"} <= options


def test_resolution(monkeypatch):
    _no_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu' is not one of"):
        resolve_device("gpu")
    with pytest.raises(ValueError, match="'cuda:0' was requested but"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"'cuda:1' was requested but only 1 CUDA device"):
        resolve_device("cuda:1")
    parser = argparse.ArgumentParser()
    add_runtime_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--threads", "0"])
    assert resolve_runtime(parser.parse_args(["--threads", "3", "--device", "cpu"])) == \
        Runtime(3, torch.device("cpu"))
    assert resolve_runtime(parser.parse_args([]), threads=2).threads == 2  # a config's, without --threads
    assert Runtime(2, torch.device("cpu")).record() == {"threads": 2, "device": "cpu"}
