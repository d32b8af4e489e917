"""``pairless explore`` without a browser: finding runs, what each never saw together, samples, uploads,
translations side by side, and the page's callbacks (the browser test drives the page itself)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairless.commands.explore import main as explore_main
from pairless.config import ConfigError
from pairless.inference import explore_page as page
from pairless.inference.catalogue import RunInfo, chain_status, discover, link_status, never_together
from pairless.inference.explore import ExploreSession, picture, schedule_from_fields
from pairless.inference.generate import schedule_preset
from pairless.modalities import parse_chain

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def session(demo_results):
    return ExploreSession(discover([demo_results]), threads=1)


@pytest.fixture(scope="module")
def shards(session):
    return session.catalogue.runs["zs-rgb-depth"].shards


def _run(**fields) -> RunInfo:
    values = dict(name="zs", path=Path("runs/zs"), role="zero-shot", withheld=(("rgb", "depth"),),
                  universe=None, shards=Path("shards"), tokenizers=Path("tok"))
    return RunInfo(**{**values, **fields})


# ----------------------------------------------------------------------------- finding runs


def test_a_results_folder_gives_its_runs_report_and_figures(demo_results):
    catalogue = discover([demo_results])
    assert set(catalogue.runs) == {"zs-rgb-depth", "many-shot"}
    zero_shot, many_shot = catalogue.runs["zs-rgb-depth"], catalogue.runs["many-shot"]
    assert (zero_shot.role, zero_shot.withheld) == ("zero-shot", (("rgb", "depth"),))
    assert (many_shot.role, many_shot.withheld) == ("many-shot", ())
    assert zero_shot.universe == ("rgb", "depth", "normal", "semseg")
    assert (zero_shot.shards / "manifest.json").is_file() and zero_shot.tokenizers.is_dir()
    [results] = catalogue.results
    assert results.recipe == "demo" and results.report == demo_results / "report.md"
    captions = [caption for caption, _ in results.figures]
    assert "rgb → depth (roar1)" in captions and all(path.is_file() for _, path in results.figures)
    # the results root (OUT, holding demo/ and cache/) finds the same runs
    assert set(discover([demo_results.parent]).runs) == set(catalogue.runs)


def test_relative_paths_of_a_moved_results_root_are_found_again(demo_results, tmp_path, monkeypatch):
    """results.json records paths as given to `pairless run --out results` (relative to where it ran)."""
    moved = tmp_path / "elsewhere"
    (moved / "demo").mkdir(parents=True)
    (moved / "cache").symlink_to(demo_results.parent / "cache")
    data = json.loads((demo_results / "results.json").read_text())
    relative = {key: "results/cache/" + value.split("/cache/", 1)[1] for key, value in data["paths"].items()}
    data["paths"] = relative
    for info in data["runs"].values():
        info["path"] = "results/cache/" + info["path"].split("/cache/", 1)[1]
    (moved / "demo" / "results.json").write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)  # where results/cache/... does not exist
    catalogue = discover([moved / "demo"])
    found = catalogue.runs["many-shot"]
    assert found.path == moved / Path(data["runs"]["many-shot"]["path"]).relative_to("results")
    assert found.shards == moved / Path(relative["shards"]).relative_to("results")
    (moved / "cache").unlink()
    with pytest.raises(FileNotFoundError, match="results/cache/runs/.* does not exist"):
        discover([moved / "demo"])


def test_run_folders_and_folders_of_runs(demo_results):
    runs_folder = demo_results.parent / "cache" / "runs"
    catalogue = discover([runs_folder])
    assert len(catalogue.runs) == 2 and catalogue.results == []
    by_withheld = {run.withheld: run for run in catalogue.runs.values()}
    assert set(by_withheld) == {(("rgb", "depth"),), ()}
    assert all(run.role == "user" for run in catalogue.runs.values())
    one = by_withheld[(("rgb", "depth"),)].path
    assert list(discover([one]).runs) == [one.name]
    # a second run of the same name is told apart by its parent folder's name; a third is refused
    assert list(discover([one, one]).runs) == [one.name, f"runs/{one.name}"]
    with pytest.raises(ValueError, match="both called"):
        discover([one, one, one])


def test_what_holds_no_run_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}: holds no results.json"):
        discover([tmp_path])
    with pytest.raises(ValueError, match="nothing: does not exist"):
        discover([tmp_path / "nothing"])


# ----------------------------------------------------------------------------- what a run never saw


def test_zero_shot_trained_and_few_shot_links():
    zero_shot = _run()
    assert never_together(zero_shot) == ["rgb & depth: never in one training sample"]
    assert link_status(zero_shot, ["rgb"], "depth")[0] == "zero-shot"
    assert link_status(zero_shot, ["depth"], "rgb")[0] == "zero-shot"
    assert link_status(zero_shot, ["normal"], "depth")[0] == "trained"
    status, reason = link_status(zero_shot, ["rgb", "normal"], "depth")
    assert status == "partly zero-shot" and "rgb" in reason
    few_shot = _run(allow_pairs={"rgb:depth": 100})
    assert link_status(few_shot, ["rgb"], "depth") == ("few-shot", "saw rgb with depth in 100 samples only")
    assert never_together(few_shot) == ["rgb & depth: together in only 100 training samples"]
    assert never_together(_run(allow_pairs={"rgb:depth": 50}, only_paired=True)) == \
        ["rgb & depth: trained on 50 paired samples only"]
    assert link_status(_run(universe=("rgb", "depth")), ["rgb"], "caption")[0] == "not trained on"
    assert never_together(_run(withheld=())) == []


def test_a_chain_is_as_zero_shot_as_its_worst_link():
    chain = parse_chain("rgb:normal:depth")
    status, lines = chain_status(_run(), chain, "all")  # depth is conditioned on rgb and normal
    assert status == "partly zero-shot" and lines[0].startswith("rgb → normal: trained")
    assert chain_status(_run(), chain, "last")[0] == "trained"  # depth from normal alone
    assert chain_status(_run(), parse_chain("rgb:depth")) == \
        ("zero-shot", ["never saw rgb with depth in one training sample"])


# ----------------------------------------------------------------------------- samples and uploads


def test_a_held_out_sample_in_every_modality(session, shards):
    sample = session.sample(shards, 2)
    assert set(sample.values) == {"rgb", "depth", "normal", "semseg"} and "val sample 2" in sample.label
    assert sample.values["rgb"].shape == (32, 32, 3) and sample.values["rgb"].dtype == np.uint8
    assert sample.values["depth"].shape == (32, 32) and sample.tokens["rgb"].shape == (1, 64)
    with pytest.raises(ValueError, match="sample 99 is outside the val split's 10 samples"):
        session.sample(shards, 99)


def test_uploads_are_tokenized_or_refused_with_the_reason(session, shards, tmp_path):
    values = session.sample(shards, 0).values
    Image.fromarray(values["rgb"]).save(tmp_path / "scene.png")
    sample = session.upload(shards, "rgb", tmp_path / "scene.png")
    assert sample.tokens["rgb"].shape == (1, 64) and not sample.ground_truth
    assert sample.values["rgb"].shape == (32, 32, 3) and sample.label == "upload scene.png as rgb"
    np.save(tmp_path / "depth.npy", values["depth"][None])  # a batch of one is accepted too
    assert session.upload(shards, "depth", tmp_path / "depth.npy").tokens["depth"].shape == (1, 64)

    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ValueError, match=r"big.png as rgb: shape \(48, 48, 3\), expected \(32, 32, 3\).*"
                                         r"takes 32 x 32 x 3 uint8"):
        session.upload(shards, "rgb", tmp_path / "big.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "gray.png")
    with pytest.raises(ValueError, match="gray.png as rgb: image has 1 channel"):
        session.upload(shards, "rgb", tmp_path / "gray.png")
    (tmp_path / "note.txt").write_text("a red cube")
    with pytest.raises(ValueError, match=r"note.txt as rgb: a .txt file cannot be rgb.*upload .png, .jpg"):
        session.upload(shards, "rgb", tmp_path / "note.txt")
    np.save(tmp_path / "ints.npy", np.ones((32, 32), np.int64))
    with pytest.raises(ValueError, match="ints.npy as depth: dtype int64, expected floating point"):
        session.upload(shards, "depth", tmp_path / "ints.npy")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png as rgb: unreadable"):
        session.upload(shards, "rgb", tmp_path / "broken.png")


# ----------------------------------------------------------------------------- translations


def test_two_runs_side_by_side_with_status_and_metric(session, shards):
    sample = session.sample(shards, 1)
    runs = ["zs-rgb-depth", "many-shot"]
    first = session.translate(runs, sample, parse_chain("rgb:depth"), schedule_preset("roar8"), seed=3)
    assert [item.status for item in first] == ["zero-shot", "trained"]
    for item in first:
        assert item.error is None and item.value.shape == (32, 32) and item.tokens.shape == (1, 64)
        assert set(item.metrics) == {"abs_rel", "rmse", "delta_1.25"} and item.seconds > 0
    again = session.translate(runs, sample, parse_chain("rgb:depth"), schedule_preset("roar8"), seed=3)
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(first, again, strict=True))
    assert session.model("many-shot") is session.model("many-shot")  # loaded once per session
    assert session.tokenizer(shards, "rgb") is session.tokenizer(shards, "rgb")


def test_a_chain_and_an_upload_without_ground_truth(session, shards, tmp_path):
    chained = session.translate(["zs-rgb-depth"], session.sample(shards, 0), parse_chain("rgb:normal:depth"),
                                schedule_preset("roar1"))
    assert chained[0].status == "partly zero-shot" and chained[0].value.shape == (32, 32)
    Image.fromarray(session.sample(shards, 0).values["rgb"]).save(tmp_path / "scene.png")
    upload = session.upload(shards, "rgb", tmp_path / "scene.png")
    [item] = session.translate(["many-shot"], upload, parse_chain("rgb:semseg"), schedule_preset("roar1"))
    assert item.metrics is None and item.value.shape == (32, 32)
    with pytest.raises(ValueError, match="has no depth to translate from; it has rgb"):
        session.translate(["many-shot"], upload, parse_chain("depth:rgb"), schedule_preset("roar1"))


def test_schedule_fields_are_validated():
    schedule = schedule_from_fields(schedule_preset("roar8"), num_steps=4, temperature=None)
    assert (schedule.num_steps, schedule.temperature, schedule.guidance_scale) == (4, 0.01, 2.0)
    with pytest.raises(ConfigError, match="top_p"):
        schedule_from_fields(schedule_preset("roar8"), top_p=0.0)


def test_every_kind_of_value_is_drawn_as_an_image():
    for modality, value in [("depth", np.full((32, 32), 2.0, np.float32)),
                            ("semseg", np.ones((32, 32), np.uint8)), ("caption", "a red cube on the floor"),
                            ("embed", np.ones(16, np.float32))]:
        image = picture(modality, value, pixels=96)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and image.std() > 0, modality


# ----------------------------------------------------------------------------- the page's callbacks


def test_page_callbacks(session, shards):
    assert page.default_direction(session, shards) == (["rgb"], "depth")  # opens on the zero-shot pair
    assert "zs-rgb-depth** (zero-shot): rgb & depth: never in one training sample" in \
        page.never_seen_markdown(session.catalogue)
    assert "| **many-shot** | many-shot | — (every pair seen) |" in page.runs_markdown(session.catalogue)
    sample, gallery, text = page.show_sample(session, shards, 4.0)
    assert len(gallery) == 4 and gallery[0][0].shape[-1] == 3 and "val sample 4" in text
    with pytest.raises(ValueError, match="whole number"):
        page.show_sample(session, shards, 1.5)
    values = page.preset_values("roar8")
    runs = ["zs-rgb-depth", "many-shot"]
    images, table = page.translate(session, sample, runs, ["rgb"], [], "depth", "roar8", *values, 0)
    captions = [caption for _, caption in images]
    assert captions == ["ground truth", "ZERO-SHOT: zs-rgb-depth", "trained: many-shot"]
    assert "| zs-rgb-depth | zero-shot | **ZERO-SHOT**: never saw rgb with depth in one training sample | " \
        "abs_rel" in table
    with pytest.raises(ValueError, match="appears twice"):
        page.translate(session, sample, ["many-shot"], ["rgb"], ["depth"], "depth", "roar8", *values, 0)
    assert page.preset_for("caption", "roar8") == "ar-caption"  # the scheme follows the destination's kind
    assert page.preset_for("depth", "ar-caption") == "roar8" and page.preset_for("depth", "roar1") == "roar1"
    assert "Translation cross-entropy" in page.report_markdown(session.catalogue.results[0].report)
    assert "![" not in page.report_markdown(session.catalogue.results[0].report)


def test_the_page_builds(session, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # where gradio copies the report's figures
    app = page.build_app(session)
    ids = {component.get("props", {}).get("elem_id") for component in app.config["components"]}
    assert {"explore-sample-index", "explore-generate", "explore-outputs", "explore-never-seen"} <= ids


def test_once_translates_a_sample_with_every_run_as_the_page_does(session, demo_results, tmp_path, capsys,
                                                                  monkeypatch):
    """``pairless explore --once``: the page built, the opening direction generated by every run through the
    page's callbacks, printed and written; no server."""
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)  # the page's cache: a folder removed with it
    sample, inputs, outputs, text = page.translate_once(session)
    assert sample.label.startswith("val sample 0") and [label for _, label in inputs][:2] == ["rgb", "depth"]
    labels = [label for _, label in outputs]  # the ground truth, then the runs in the catalogue's order
    assert labels[0] == "ground truth"
    assert set(labels[1:]) == {"ZERO-SHOT: zs-rgb-depth", "trained: many-shot"}
    assert "**rgb → depth** on val sample 0" in text and "| many-shot | many-shot | trained" in text
    out = tmp_path / "once"
    assert explore_main([str(demo_results), "--once", "--threads", "1", "--from", "rgb", "--to",
                         "normal:depth", "--sample", "3", "--schedule", "roar1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "**rgb → normal → depth** on val sample 3" in printed and "ROAR 1 steps" in printed
    assert "| zs-rgb-depth | zero-shot | **PARTLY ZERO-SHOT**" in printed and "abs_rel" in printed
    written = sorted(path.name for path in out.glob("*.png"))
    assert "output-0-ground-truth.png" in written and "input-0-rgb.png" in written
    [zero_shot] = [name for name in written if name.endswith("-PARTLY-ZERO-SHOT-zs-rgb-depth.png")]
    [many_shot] = [name for name in written if name.endswith("-trained-many-shot.png")]
    assert f"wrote {out}/explore.md and {len(written)} images" in printed
    assert f"![output: trained: many-shot]({many_shot})" in (out / "explore.md").read_text()
    assert f"![output: PARTLY ZERO-SHOT: zs-rgb-depth]({zero_shot})" in (out / "explore.md").read_text()
    assert "GRADIO_TEMP_DIR" not in os.environ


def test_once_refuses_what_it_cannot_translate(demo_results, tmp_path, capsys):
    once = [str(demo_results), "--once", "--threads", "1"]
    assert explore_main([*once, "--from", "rgb", "--to", "thermal"]) == 2
    assert "thermal: not in the val split of" in capsys.readouterr().err
    assert explore_main([*once, "--from", "rgb", "--to", "depth", "--sample", "100000"]) == 2
    assert "sample 100000 is outside the val split's" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        explore_main([str(demo_results), "--to", "depth"])  # --to without --once
    assert "go with --once" in capsys.readouterr().err


def test_the_command_names_a_bad_path(tmp_path, capsys):
    assert explore_main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_copied_run_folder_is_explored_from_anywhere(demo_results, tmp_path):
    """A run folder copied elsewhere still names its shards (absolute in config.json)."""
    run = discover([demo_results]).runs["many-shot"].path
    shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns("checkpoints", "tb"))
    [info] = discover([tmp_path / "copy"]).runs.values()
    assert info.name == "copy" and info.shards.is_dir()


def test_pairs_the_training_data_never_holds_together_count_as_never_seen(tmp_path):
    from pairless.batch import TokenSpec
    from pairless.data.shards import ShardSplit, write_shards
    from pairless.inference.catalogue import RunInfo, _add, chain_status, never_in_data, never_together

    specs = {name: TokenSpec(name, "image", num_tokens=4, vocab_size=8)
             for name in ("rgb", "depth", "normal")}
    present = {"rgb": np.array([True, True, True, True]), "depth": np.array([True, True, False, False]),
               "normal": np.array([False, False, True, True])}  # depth and normal never in one sample
    tokens = {name: np.ones((4, 4), np.int32) for name in specs}
    split = ShardSplit(ids=["a", "b", "c", "d"], tokens=tokens, present=present)
    write_shards(tmp_path / "shards", {"train": split, "val": split}, specs, {"tokenizers": str(tmp_path)})
    assert never_in_data(tmp_path / "shards") == (("depth", "normal"),)
    runs = {}
    _add(runs, RunInfo("all-data", tmp_path, "many-shot", (("rgb", "depth"),), None, tmp_path / "shards",
                       tmp_path))
    run = runs["all-data"]
    assert run.withheld == (("rgb", "depth"), ("depth", "normal"))  # the run's own, then the data's
    assert never_together(run)[1] == "depth & normal: never in one training sample"
    assert chain_status(run, [["normal"], ["depth"]])[0] == "zero-shot"
    assert chain_status(run, [["rgb"], ["normal"]])[0] == "trained"
