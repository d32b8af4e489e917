"""pairless.training.fragment: deterministic views, no withheld pair, maximal views, the audit."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from train_helpers import make_shards

from pairless.commands.audit import main
from pairless.config import ConfigError
from pairless.training.fragment import (
    FragmentConfig,
    assign_views,
    check_no_withheld,
    cooccurrence,
    maximal_views,
)
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
