"""pairless.training.fragment: deterministic views, no withheld pair, maximal views, the audit."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from train_helpers import make_shards, tiny_config_data

from pairless.commands.audit import main
from pairless.config import ConfigError, validate
from pairless.data.shards import open_shards
from pairless.training.config import TrainConfig
from pairless.training.data import load_training_data
from pairless.training.fragment import (
    FragmentConfig,
    allowed_pair_ids,
    assign_views,
    check_no_withheld,
    cooccurrence,
    maximal_views,
    read_presence,
)
from pairless.training.run import check_same_run
from pairless.training.train import train
from pairless.utils.storage import COMPLETE_MARKER

MODALITIES = ["rgb", "depth", "normal", "semseg", "det", "caption", "embed"]


def _ids(count: int) -> list[str]:
    return [f"scene/{index:05d}" for index in range(count)]


def test_one_pair_gives_two_half_views_fixed_by_seed_and_id():
    ids = _ids(2000)
    present = np.ones((len(ids), len(MODALITIES)), dtype=bool)
    config = FragmentConfig(withheld=[("rgb", "depth")], seed=3)
    views = assign_views(ids, present, MODALITIES, config)
    assert np.array_equal(views, assign_views(ids, present, MODALITIES, config))  # another "epoch"
    without_depth = views[:, 0] & ~views[:, 1]
    without_rgb = views[:, 1] & ~views[:, 0]
    assert np.all(without_depth | without_rgb)
    assert np.all(views[:, 2:])  # every other modality is always exposed
    assert 0.45 < without_depth.mean() < 0.55
    other_seed = assign_views(ids, present, MODALITIES, FragmentConfig(withheld=[("rgb", "depth")], seed=4))
    assert not np.array_equal(views, other_seed)


def test_views_do_not_depend_on_order_or_rank_sharding():
    ids = _ids(300)
    present = np.random.default_rng(0).random((300, 7)) < 0.8
    config = FragmentConfig(withheld=[("rgb", "depth"), ("caption", "det")], seed=1)
    full = assign_views(ids, present, MODALITIES, config)
    order = np.random.default_rng(1).permutation(300)
    shuffled = assign_views([ids[i] for i in order], present[order], MODALITIES, config)
    assert np.array_equal(shuffled, full[order])
    for rank in range(2):  # two ranks each see every other sample
        rows = np.arange(rank, 300, 2)
        assert np.array_equal(assign_views([ids[i] for i in rows], present[rows], MODALITIES, config),
                              full[rows])


def test_universe_and_presence_restrict_views():
    ids = _ids(400)
    present = np.ones((400, 7), dtype=bool)
    present[:100, 1] = False  # these samples lack depth: they keep rgb
    config = FragmentConfig(universe=["rgb", "depth", "normal"], withheld=[("rgb", "depth")])
    views = assign_views(ids, present, MODALITIES, config)
    assert not views[:, 3:].any()
    assert views[:100, 0].all() and not views[:100, 1].any()
    assert not (views & ~present).any()
    assert cooccurrence(views, MODALITIES)[0, 1] == 0


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (FragmentConfig(universe=["rgb", "sonar"]), "fragment.universe"),
        (FragmentConfig(withheld=[("rgb", "sonar")]), "fragment.withheld"),
        (FragmentConfig(universe=["rgb", "normal"], withheld=[("rgb", "depth")]), "fragment.withheld"),
        (FragmentConfig(withheld=[("rgb", "rgb")]), "fragment.withheld"),
    ],
)
def test_invalid_config_names_the_field(config, field):
    with pytest.raises(ConfigError, match=field):
        assign_views(_ids(2), np.ones((2, 7), dtype=bool), MODALITIES, config)


def test_check_no_withheld_raises_on_a_leak():
    views = np.ones((3, 7), dtype=bool)
    with pytest.raises(ValueError, match="rgb:depth co-occurs in 3"):
        check_no_withheld(views, MODALITIES, [("rgb", "depth")])


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(2, 7),
    pair_bits=st.lists(st.booleans(), min_size=21, max_size=21),
    seed=st.integers(0, 1000),
    presence_seed=st.integers(0, 1000),
)
def test_no_withheld_pair_cooccurs_and_views_are_maximal(size, pair_bits, seed, presence_seed):
    universe = MODALITIES[:size]
    all_pairs = list(combinations(universe, 2))
    withheld = [pair for pair, on in zip(all_pairs, pair_bits, strict=False) if on]
    ids = _ids(64)
    present = np.random.default_rng(presence_seed).random((64, 7)) < 0.8
    config = FragmentConfig(universe=universe, withheld=withheld, seed=seed)
    views = assign_views(ids, present, MODALITIES, config)
    check_no_withheld(views, MODALITIES, withheld)
    assert not (views & ~present).any()
    assert not views[:, size:].any()
    conflicts = {frozenset(pair) for pair in withheld}
    for view, has in zip(views, present, strict=True):
        exposed = [MODALITIES[i] for i in np.flatnonzero(view)]
        # Maximal: every present universe modality left out conflicts with something exposed.
        for name in universe:
            if name not in exposed and has[MODALITIES.index(name)]:
                assert any(frozenset((name, other)) in conflicts for other in exposed), (name, exposed)
    for view in maximal_views(universe, withheld):
        assert not any(frozenset(pair) in conflicts for pair in combinations(view, 2))


def test_audit_command_prints_cooccurrence(tmp_path, capsys):
    shards = make_shards(tmp_path / "shards", count=50)
    assert main(["--shards", str(shards), "--withhold", "rgb:depth"]) == 0
    out = capsys.readouterr().out
    assert "withheld rgb:depth: co-occur in 0 samples" in out
    assert "normal=50" in out
    assert main(["--shards", str(shards), "--withhold", "rgb:sonar"]) == 2
    assert "fragment.withheld" in capsys.readouterr().err


def test_audit_refuses_an_incomplete_shards_folder(tmp_path, capsys):
    shards = make_shards(tmp_path / "shards", count=20)
    (shards / COMPLETE_MARKER).unlink()  # a tokenize killed before it published the folder
    assert main(["--shards", str(shards)]) == 2
    assert "incomplete" in capsys.readouterr().err


# Allowed pairs (fragment.allow_pairs): exactly k samples keep both modalities of a withheld pair.


def _allowing(count: int, **changes) -> FragmentConfig:
    return FragmentConfig(withheld=[("rgb", "depth")], seed=2, allow_pairs={"rgb:depth": count}, **changes)


def test_exactly_k_samples_keep_both_and_the_others_keep_their_views():
    ids = _ids(500)
    present = np.random.default_rng(3).random((500, 7)) < 0.9
    plain = assign_views(ids, present, MODALITIES, FragmentConfig(withheld=[("rgb", "depth")], seed=2))
    views = assign_views(ids, present, MODALITIES, _allowing(40))
    chosen = allowed_pair_ids(ids, present, MODALITIES, _allowing(40))["rgb:depth"]
    together = views[:, 0] & views[:, 1]
    assert together.sum() == 40 == len(chosen)
    assert sorted(ids[row] for row in np.flatnonzero(together)) == chosen
    rows = np.flatnonzero(together)
    assert np.array_equal(views[rows], present[rows])  # one pair withheld: the chosen see all they have
    assert np.array_equal(views[~together], plain[~together])  # the rest: the zero-shot views
    check_no_withheld(views, MODALITIES, [("rgb", "depth")], {"rgb:depth": together})
    assert _allowing(0).allow_pairs == {}  # k = 0 is no allowance: the same config as the zero-shot run
    assert np.array_equal(assign_views(ids, present, MODALITIES, _allowing(0)), plain)


def test_chosen_ids_are_stable_independent_of_order_and_nested():
    ids = _ids(300)
    present = np.random.default_rng(4).random((300, 7)) < 0.8
    chosen = allowed_pair_ids(ids, present, MODALITIES, _allowing(64))["rgb:depth"]
    assert chosen == allowed_pair_ids(ids, present, MODALITIES, _allowing(64))["rgb:depth"]
    order = np.random.default_rng(5).permutation(300)
    shuffled = allowed_pair_ids([ids[i] for i in order], present[order], MODALITIES, _allowing(64))
    assert shuffled["rgb:depth"] == chosen
    eligible = {ids[row] for row in np.flatnonzero(present[:, 0] & present[:, 1])}
    assert set(chosen) <= eligible
    assert set(allowed_pair_ids(ids, present, MODALITIES, _allowing(16))["rgb:depth"]) < set(chosen)
    other_seed = FragmentConfig(withheld=[("rgb", "depth")], seed=3, allow_pairs={"rgb:depth": 64})
    assert allowed_pair_ids(ids, present, MODALITIES, other_seed)["rgb:depth"] != chosen


def test_too_many_allowed_samples_and_wrong_keys_are_errors_naming_the_key():
    ids = _ids(50)
    present = np.ones((50, 7), dtype=bool)
    present[:10, 1] = False  # 40 samples have both rgb and depth
    assert len(allowed_pair_ids(ids, present, MODALITIES, _allowing(40))["rgb:depth"]) == 40
    with pytest.raises(ConfigError, match=r"fragment.allow_pairs: rgb:depth = 41 .* the 40 samples"):
        assign_views(ids, present, MODALITIES, _allowing(41))
    with pytest.raises(ValueError, match="fragment.allow_pairs: rgb:normal is not a withheld pair"):
        FragmentConfig(withheld=[("rgb", "depth")], allow_pairs={"rgb:normal": 4})
    with pytest.raises(ValueError, match="fragment.allow_pairs: rgb:depth = -1"):
        _allowing(-1)
    with pytest.raises(ValueError, match="fragment.only_paired"):
        FragmentConfig(withheld=[("rgb", "depth")], only_paired=True)
    assert FragmentConfig(withheld=[("rgb", "depth")], allow_pairs={"depth:rgb": 4}).allow_pairs == {
        "rgb:depth": 4}


def test_the_leakage_check_allows_exactly_the_allowed_samples():
    views = np.ones((5, 7), dtype=bool)
    allowed = np.array([True, True, False, False, False])
    views[2:, 1] = False
    check_no_withheld(views, MODALITIES, [("rgb", "depth")], {"rgb:depth": allowed})
    with pytest.raises(ValueError, match="rgb:depth co-occurs in 2 training views"):
        check_no_withheld(views, MODALITIES, [("rgb", "depth")])
    views[3, 1] = True  # one more than allowed
    with pytest.raises(ValueError, match="1 training views outside the 2 allowed"):
        check_no_withheld(views, MODALITIES, [("rgb", "depth")], {"rgb:depth": allowed})


def test_a_sample_allowed_two_pairs_keeps_both_pairs():
    ids = _ids(200)
    present = np.ones((200, 7), dtype=bool)
    config = FragmentConfig(withheld=[("rgb", "depth"), ("caption", "det")], seed=1,
                            allow_pairs={"rgb:depth": 120, "caption:det": 120})
    views = assign_views(ids, present, MODALITIES, config)
    counts = cooccurrence(views, MODALITIES)
    assert counts[0, 1] == 120 and counts[4, 5] == 120
    both = set(allowed_pair_ids(ids, present, MODALITIES, config)["rgb:depth"]) & set(
        allowed_pair_ids(ids, present, MODALITIES, config)["caption:det"])
    assert both and all(views[ids.index(sample_id)].all() for sample_id in both)


def test_audit_reports_the_allowed_cooccurrence(tmp_path, capsys):
    shards = make_shards(tmp_path / "shards", count=50)
    assert main(["--shards", str(shards), "--withhold", "rgb:depth", "--allow-pair", "rgb:depth=7"]) == 0
    assert "withheld rgb:depth: co-occur in 7 samples (allowed: 7)" in capsys.readouterr().out
    assert main(["--shards", str(shards), "--withhold", "rgb:depth", "--allow-pair", "rgb:depth=7",
                 "--only-paired"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("7 samples") and "only_paired: 7 of the 50 samples" in out
    assert main(["--shards", str(shards), "--withhold", "rgb:depth", "--allow-pair", "rgb:depth=51"]) == 2
    assert "rgb:depth = 51 is more than the 50 samples" in capsys.readouterr().err
    assert main(["--shards", str(shards), "--withhold", "rgb:depth", "--allow-pair", "rgb:normal=3"]) == 2
    assert "rgb:normal is not a withheld pair" in capsys.readouterr().err


def test_only_paired_trains_on_exactly_the_allowed_samples(tmp_path):
    shards = make_shards(tmp_path / "shards", count=60)
    fragment = dict(withheld=[["rgb", "depth"]], allow_pairs={"rgb:depth": 16}, only_paired=True,
                    universe=["rgb", "depth"])
    config = validate(TrainConfig, tiny_config_data(shards, tmp_path / "run", fragment=fragment,
                                                    total_tokens=16 * 24 * 3))
    data = load_training_data(shards, "train", config.fragment)
    ids, modalities, present, _ = read_presence(shards, "train")
    chosen = allowed_pair_ids(ids, present, modalities, config.fragment)["rgb:depth"]
    assert data.ids == chosen and len(data) == 16 and data.modalities == ["rgb", "depth"]
    assert data.views.all()  # every one keeps rgb and depth
    open_split = open_shards(shards, "train")
    rows = [list(open_split.ids).index(sample_id) for sample_id in chosen]
    assert np.array_equal(data.tokens["rgb"], np.asarray(open_split.tokens["rgb"])[rows])
    run = train(config)
    assert json.loads((run / "paired_ids.json").read_text()) == {"rgb:depth": chosen}
    few_shot = {**fragment, "only_paired": False, "universe": None}
    data = load_training_data(shards, "train", validate(TrainConfig, tiny_config_data(
        shards, tmp_path / "other", fragment=few_shot)).fragment)
    assert len(data) == 60 and int((data.views[:, 0] & data.views[:, 1]).sum()) == 16


def test_a_run_saved_before_allow_pairs_existed_is_the_same_run(tmp_path):
    config = validate(TrainConfig, tiny_config_data(tmp_path / "shards", tmp_path / "run"))
    saved = json.loads(config.model_dump_json())
    del saved["fragment"]["allow_pairs"], saved["fragment"]["only_paired"]  # a config.json of before
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    check_same_run(tmp_path / "run", config)  # no error: it trained without an allowance
    allowing = config.model_copy(update={"fragment": _allowing(4)})
    with pytest.raises(ValueError, match="fragment.allow_pairs"):
        check_same_run(tmp_path / "run", allowing)
