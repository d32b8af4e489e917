"""Bad configs at every command line: unknown keys, wrong types, impossible budgets, withheld pairs
outside the universe. Each is refused before any work, with an error naming the field.

The typed configs themselves are tested next to their stages (test_train.py,
test_fragment.py, test_masking.py, test_config.py); this file checks that
every ``pairless`` verb with a config turns the same mistakes into exit
code 2 and a message naming the field, and writes nothing.
"""

from __future__ import annotations

import json

import pytest
from train_helpers import make_shards

from pairless.cli import main


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("bad-configs") / "shards", count=16)


def _refused(capsys, argv, *expected, code=2):
    assert main(argv) == code
    error = capsys.readouterr().err
    for text in expected:
        assert text in error, f"{text!r} not in: {error}"


@pytest.mark.parametrize(("overrides", "expected"), [
    (["model.wings=2"], ["unknown key 'wings'", "allowed:"]),
    (["model.dim=wide"], ["model.dim"]),
    (["batch_size=-3"], ["batch_size"]),
    (["masking.input_budget=1000"], ["masking.input_budget + masking.target_budget", "exceeds"]),
    (["fragment.universe=[\"rgb\",\"caption\"]"],
     ["fragment.withheld", "outside fragment.universe", "'depth'"]),
    (["nosuch.section=1"], ["no config section 'nosuch'"]),
])
def test_train_command_names_the_bad_field(shards, tmp_path, capsys, overrides, expected):
    out = tmp_path / "run"
    argv = ["train", "--shards", str(shards), "--out", str(out), "--withhold", "rgb:depth",
            "--total-tokens", "100", "--batch-size", "8", "--set", "model.dim=32", "--set", "model.heads=2"]
    for item in overrides:
        argv += ["--set", item]
    # Budgets are checked against the shards once they are opened (exit 1); the rest at parse time (2).
    code = 1 if "masking" in overrides[0] else 2
    _refused(capsys, argv, *expected, code=code)
    assert not (out / "checkpoints").exists() and not (out / "model.safetensors").exists()


def test_train_refuses_a_withheld_modality_missing_from_the_shards(shards, tmp_path, capsys):
    _refused(capsys, ["train", "--shards", str(shards), "--out", str(tmp_path / "run"), "--withhold",
                      "rgb:embed",
                      "--total-tokens", "100"], "embed", code=1)


@pytest.mark.parametrize("order", ["global", "shards"])
def test_train_refuses_a_batch_larger_than_the_data_naming_the_shards_and_the_fix(shards, tmp_path, capsys,
                                                                                   order):
    out = tmp_path / "run"
    _refused(capsys, ["train", "--shards", str(shards), "--out", str(out), "--total-tokens", "100",
                      "--batch-size", "32", "--set", "model.dim=32", "--set", "model.heads=2", "--set",
                      f"data_order={order}"],
             "batch_size: 32 is larger than the 16 training samples", f"{shards}/train",
             "--batch-size 16", code=1)
    assert "Traceback" not in capsys.readouterr().err and not (out / "model.safetensors").exists()


def test_tokenizers_command_names_the_bad_field(tmp_path, capsys):
    out = tmp_path / "tok"
    base = ["tokenizers", "train", "--data", str(tmp_path / "none"), "--out", str(out), "--preset", "micro"]
    _refused(capsys, [*base, "--set", "spatial.depth_of_field=3"], "unknown key 'depth_of_field'")
    _refused(capsys, [*base, "--set", "steps=many"], "steps")
    _refused(capsys, [*base, "--set", "steps=0"], "steps")
    assert not out.exists()


def test_generate_schedule_override_names_the_field(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"shards": "%s"}' % (tmp_path / "shards"))
    argv = ["generate", str(run), "--from", "rgb", "--to", "depth", "--out", str(tmp_path / "gen"),
            "--tokenizers", str(tmp_path / "tok"), "--shards", str(tmp_path / "shards")]
    _refused(capsys, [*argv, "--set", "temperature=hot"], "temperature")
    _refused(capsys, [*argv, "--set", "top_p=0"], "top_p")
    _refused(capsys, [*argv, "--set", "sampler=roar"], "unknown key 'sampler'")
    assert not (tmp_path / "gen").exists()


def test_run_recipe_override_names_the_field(tmp_path, capsys):
    base = ["run", "demo", "--preset", "micro", "--out", str(tmp_path / "results"), "--dry-run"]
    with pytest.raises(SystemExit) as exited:
        main([*base, "--set", "world.num_scenes=few"])
    assert exited.value.code == 2
    assert "world.num_scenes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--set", "runs.7.train.total_tokens=5"])
    assert "runs.7" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_world_and_audit_name_the_field(tmp_path, shards, capsys):
    _refused(capsys, ["world", "--out", str(tmp_path / "w"), "--val-fraction", "1.5"], "world.val_fraction")
    _refused(capsys, ["world", "--out", str(tmp_path / "w"), "--num-scenes", "0"], "world.num_scenes")
    assert not (tmp_path / "w").exists()
    assert main(["audit", "--shards", str(shards), "--withhold", "rgb:depth", "--universe",
                 "rgb,normal"]) != 0
    assert "fragment.withheld" in capsys.readouterr().err


def test_train_preset_does_not_silently_replace_a_config_files_model(shards, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"shards": str(shards), "out": str(tmp_path / "run"),
                                  "model": {"dim": 64, "heads": 2}}))
    _refused(capsys, ["train", "--config", str(config), "--preset", "small"], "--preset small",
             "model section")
    _refused(capsys, ["train", "--shards", str(shards), "--out", str(tmp_path / "run"), "--set",
                      "model.preset=small"],
             "--set model.preset", "--preset NAME")
    assert not (tmp_path / "run").exists()


def test_a_model_section_naming_a_preset_gets_its_shape():
    from pairless.model import PRESETS, ModelConfig

    for name in PRESETS:
        assert ModelConfig.model_validate({"preset": name}) == ModelConfig.from_preset(name)
    assert ModelConfig.model_validate({"preset": "small", "dim": 128}).dim == 128  # a given field wins
    with pytest.raises(ValueError, match="model.preset: unknown preset 'huge'"):
        ModelConfig.model_validate({"preset": "huge"})
