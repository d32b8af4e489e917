"""Alignment probes (pairless.inference.probes): the metrics against hand computations and chance levels,
and the encoding of one modality alone."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pairless.batch import TokenSpec
from pairless.inference.probes import (
    METRICS,
    alignment_metrics,
    format_table,
    foscttm,
    linear_cka,
    mutual_knn,
    nearest_neighbours,
    pooled_encodings,
    probe_model,
    retrieval_recall,
)
from pairless.inference.translation_batch import pack_batch
from pairless.model import FourM, ModelConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


PERFECT = {"recall_at_1": 1.0, "recall_at_10": 1.0, "foscttm": 0.0, "mutual_knn": 1.0, "cka": 1.0}


def gaussian(num: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(num, dim))


# ----------------------------------------------------------------------------- perfect alignment


def test_identical_embeddings_are_perfectly_aligned():
    embeddings = gaussian(300, 16, seed=0)
    metrics = alignment_metrics(embeddings, embeddings)
    assert metrics == pytest.approx(PERFECT)


def test_a_per_modality_offset_and_scale_do_not_change_the_metrics():
    # the Ma-only and Mb-only encodings differ by a constant offset (the modality embedding): not a mismatch
    embeddings = gaussian(200, 8, seed=1)
    metrics = alignment_metrics(embeddings, 3.0 * embeddings + 5.0)
    assert metrics == pytest.approx(PERFECT)


# ----------------------------------------------------------------------------- chance levels


def test_independent_embeddings_score_chance():
    # N = 1,000, D = 8. Standard deviations of the two-direction averages (seeded, so these are margins, not
    # flakiness): recall@1 hits ~ Binomial(N, 1/N) per direction -> sd 0.0007; recall@10 ~ Binomial(N,
    # 0.01) -> sd 0.0022; FOSCTTM: each sample's fraction ~ uniform (sd 0.29) -> sd of the mean <= 0.009;
    # mutual kNN overlaps ~ hypergeometric, mean k^2 / (N - 1) -> sd of the mean / k ~ 0.001. Every
    # tolerance is >= 4 sd.
    num = 1000
    metrics = alignment_metrics(gaussian(num, 8, seed=2), gaussian(num, 8, seed=3))
    assert metrics["recall_at_1"] == pytest.approx(1 / num, abs=0.004)
    assert metrics["recall_at_10"] == pytest.approx(10 / num, abs=0.009)
    assert metrics["foscttm"] == pytest.approx(0.5, abs=0.04)
    assert metrics["mutual_knn"] == pytest.approx(10 / (num - 1), abs=0.005)
    # linear CKA of independent isotropic data is about sqrt(D_a D_b / ((N + D_a)(N + D_b))) = 0.008 here
    assert metrics["cka"] < 0.03


def test_shuffled_rows_score_chance():
    # the same embeddings with the correspondence broken: only the pairing carries the signal
    num = 1000
    embeddings = gaussian(num, 8, seed=4)
    shuffled = embeddings[np.random.default_rng(5).permutation(num)]
    metrics = alignment_metrics(embeddings, shuffled)
    assert metrics["recall_at_1"] == pytest.approx(1 / num, abs=0.004)  # fixed points of a permutation: ~1
    assert metrics["foscttm"] == pytest.approx(0.5, abs=0.04)
    assert metrics["mutual_knn"] == pytest.approx(10 / (num - 1), abs=0.005)
    assert metrics["cka"] < 0.03


def test_linear_cka_is_biased_upwards_when_dimension_is_large_against_samples():
    # why the probes report a shuffled control. Independent isotropic data: E||B^T A||^2 = N D_a D_b and
    # E||A^T A||^2 ~ N D_a (N + D_a), so CKA ~ sqrt(D_a D_b / ((N + D_a)(N + D_b))) = 100 / 600 here
    independent = linear_cka(gaussian(500, 100, seed=6), gaussian(500, 100, seed=7))
    assert independent == pytest.approx(1 / 6, abs=0.02)


def test_a_collapsed_encoder_scores_chance_not_perfect():
    # every encoding the same: all similarities tie, and a tie must not count as a retrieved match
    constant = np.ones((50, 4))
    metrics = alignment_metrics(constant, constant)
    assert metrics["recall_at_1"] == pytest.approx(1 / 50)
    assert metrics["recall_at_10"] == pytest.approx(10 / 50)
    assert metrics["foscttm"] == pytest.approx(0.5)
    assert metrics["mutual_knn"] == pytest.approx(10 / 49, abs=0.03)
    assert metrics["cka"] == 0.0


# ----------------------------------------------------------------------------- hand computations


def test_foscttm_and_recall_by_hand():
    # unit vectors at these angles; cosine similarity = cos(angle difference); no centring
    first = np.array([unit(0), unit(90), unit(180)])
    second = np.array([unit(10), unit(150), unit(80)])
    # first -> second, closer than the true match (of the 2 others):
    #   0 deg: true 10 (cos 10), others 150, 80 -> none closer            0
    #  90 deg: true 150 (cos 60), 10 (cos 80) farther, 80 (cos 10) closer 1/2
    # 180 deg: true 80 (cos 100), 10 (cos 170) farther, 150 (cos 30) closer 1/2  -> mean 1/3
    # second -> first:
    #  10 deg: true 0 (cos 10), nearest                                    0
    # 150 deg: true 90 (cos 60), 0 (cos 150) farther, 180 (cos 30) closer  1/2
    #  80 deg: true 180 (cos 100), 0 (cos 80) and 90 (cos 10) both closer  1    -> mean 1/2
    assert foscttm(first, second, center=False) == pytest.approx((1 / 3 + 1 / 2) / 2)
    # recall@1: only sample 0's true match is the nearest, in both directions
    assert retrieval_recall(first, second, 1, center=False) == pytest.approx(1 / 3)
    assert retrieval_recall(first, second, 2, center=False) == pytest.approx((1 + 1 + 1 + 1 + 1 + 0) / 6)


def test_foscttm_counts_ties_half():
    # second has two equal rows: sample 0's true match ties with sample 1's
    first = np.array([unit(0), unit(90), unit(200)])
    second = np.array([unit(0), unit(0), unit(200)])
    # first -> second: 0 deg: tie with row 1 -> 1/2 / 2; 90 deg: true 0 (cos 90), row 0 ties, row 2 (cos 110)
    # farther -> 1/2 / 2; 200 deg: nearest -> 0. second -> first: row 0 nearest -> 0; row 1 (0 deg): true
    # 90 (cos 90), 0 deg closer, 200 deg (cos 200) farther -> 1/2; row 2 nearest -> 0.
    expected = ((0.25 + 0.25 + 0) / 3 + (0 + 0.5 + 0) / 3) / 2
    assert foscttm(first, second, center=False) == pytest.approx(expected)


def test_mutual_knn_by_hand():
    # k = 1. First: 0, 30, 100, 180 deg -> nearest 30, 0, 30, 100 (rows 1, 0, 1, 2).
    # Second: 0, 50, 60, 200 deg -> nearest 50, 60, 50, 60 (rows 1, 2, 1, 2). Agree for rows 0, 2, 3: 3/4.
    first = np.array([unit(0), unit(30), unit(100), unit(180)])
    second = np.array([unit(0), unit(50), unit(60), unit(200)])
    assert nearest_neighbours(first, 1, center=False)[:, 0].tolist() == [1, 0, 1, 2]
    assert nearest_neighbours(second, 1, center=False)[:, 0].tolist() == [1, 2, 1, 2]
    assert mutual_knn(first, second, k=1, center=False) == pytest.approx(3 / 4)


def test_linear_cka_by_hand_and_its_invariances():
    # one feature each: linear CKA is the squared Pearson correlation
    x = np.array([[1.0], [2.0], [3.0], [5.0]])
    y = np.array([[2.0], [1.0], [4.0], [4.0]])
    assert linear_cka(x, y) == pytest.approx(np.corrcoef(x[:, 0], y[:, 0])[0, 1] ** 2)
    a = gaussian(200, 12, seed=8)
    b = a[:, :6] @ gaussian(6, 9, seed=9) + gaussian(200, 9, seed=10)  # partly a linear function of a
    rotation, _ = np.linalg.qr(np.random.default_rng(11).normal(size=(12, 12)))
    reference = linear_cka(a, b)
    assert 0.05 < reference < 0.95
    assert linear_cka(a @ rotation, b) == pytest.approx(reference, rel=1e-9)
    assert linear_cka(a, 7.5 * b) == pytest.approx(reference, rel=1e-9)
    assert linear_cka(a, b) == pytest.approx(linear_cka(b, a), rel=1e-12)
    # not invariant to an anisotropic scaling: a different similarity
    assert linear_cka(a * np.linspace(0.1, 3, 12), b) != pytest.approx(reference, rel=1e-3)


def test_alignment_grows_with_shared_signal():
    shared = gaussian(500, 16, seed=12)
    weak = alignment_metrics(shared + 3 * gaussian(500, 16, 13), shared + 3 * gaussian(500, 16, 14))
    strong = alignment_metrics(shared + 0.3 * gaussian(500, 16, 15), shared + 0.3 * gaussian(500, 16, 16))
    for metric in ("recall_at_1", "recall_at_10", "mutual_knn", "cka"):
        assert strong[metric] > weak[metric], metric
    assert strong["foscttm"] < weak["foscttm"]


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="same N"):
        alignment_metrics(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="more than k"):
        mutual_knn(gaussian(10, 2, 0), gaussian(10, 2, 1), k=10)


# ----------------------------------------------------------------------------- encoding a modality alone

SPECS = {
    "rgb": TokenSpec("rgb", "image", 16, 24, grid=(4, 4)),
    "depth": TokenSpec("depth", "image", 16, 24, grid=(4, 4)),
    "caption": TokenSpec("caption", "sequence", 8, 20, pad_id=0, bos_id=1, eos_id=2),
}


def fake_shards(num: int, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    tokens = {name: rng.integers(3, spec.vocab_size, (num, spec.num_tokens)) for name, spec in SPECS.items()}
    for row, used in enumerate(rng.integers(1, 9, num)):
        tokens["caption"][row, used - 1] = 2
        tokens["caption"][row, used:] = 0
    tokens["depth"] = tokens["rgb"].copy()
    present = {name: np.ones(num, dtype=bool) for name in SPECS}
    present["depth"][:3] = False  # the first eligible samples are 3, 4, ...
    return SimpleNamespace(specs=SPECS, tokens=tokens, present=present)


def small_model(seed: int = 0, layers: int = 2) -> FourM:
    torch.manual_seed(seed)
    return FourM(ModelConfig(dim=32, encoder_layers=layers, decoder_layers=1, heads=2), SPECS).eval()


def test_pooling_averages_the_valid_input_tokens_without_the_null_token():
    model, shards = small_model(), fake_shards(12)
    indices = np.arange(12)
    with torch.inference_mode():
        batched = pooled_encodings(model, shards, "caption", indices, 5, model.modalities)
        one_by_one = pooled_encodings(model, shards, "caption", indices, 1, model.modalities)
        tokens = torch.from_numpy(shards.tokens["caption"][:1]).long()
        states, _ = model.encode_layers(pack_batch({"caption": (tokens, torch.ones_like(tokens).bool())}, {},
                                                   SPECS, model.modalities))
    assert len(batched) == 3 and batched[0].shape == (12, 32)  # input embeddings + 2 blocks
    used = int((shards.tokens["caption"][0] != 0).sum())
    assert np.allclose(batched[-1][0], states[-1][0, 1 : 1 + used].mean(0).numpy(), atol=1e-6)
    for layer_batched, layer_single in zip(batched, one_by_one, strict=True):  # padding never leaks in
        assert np.allclose(layer_batched, layer_single, atol=1e-5)


def test_probe_of_a_model_that_encodes_both_modalities_identically_is_perfect_at_every_layer():
    # depth tokens = rgb tokens, the same embedding rows and no modality embedding: the depth-only encoding
    # of each sample equals its rgb-only encoding, so the probe must pair rows right at every layer
    model, shards = small_model(layers=3), fake_shards(40)
    with torch.no_grad():
        offset = SPECS["rgb"].vocab_size
        model.token_embedding.weight[offset : 2 * offset] = model.token_embedding.weight[:offset]
        model.modality_embedding.zero_()
    result = probe_model(model, shards, "rgb", "depth", num_samples=30, batch_size=8, threads=1)
    assert result["pair"] == "rgb:depth" and result["num_samples"] == 30 and result["k"] == 10
    assert [row["layer"] for row in result["layers"]] == [0, 1, 2, 3]
    for row in result["layers"]:
        assert row["recall_at_1"] == 1.0 and row["foscttm"] == 0.0 and row["mutual_knn"] == 1.0, row
        assert row["cka"] == pytest.approx(1.0)
    assert result["summary"] == result["layers"][-1]
    assert result["shuffled"]["recall_at_1"] < 0.2 and result["shuffled"]["foscttm"] > 0.25
    table = format_table(result)
    assert "3 (output)" in table and "shuffled" in table and "FOSCTTM" in table


def test_probe_of_an_untrained_model_is_not_perfect_and_restores_threads():
    model, shards = small_model(), fake_shards(40, seed=1)
    before = torch.get_num_threads()
    result = probe_model(model, shards, "rgb", "caption", num_samples=30, batch_size=8, threads=1)
    assert torch.get_num_threads() == before
    assert result["summary"]["recall_at_1"] < 1.0 and result["summary"]["foscttm"] > 0.0
    assert set(result["summary"]) == {"layer", *METRICS}


def test_probe_errors_name_the_value():
    shards = fake_shards(40)
    with pytest.raises(ValueError, match="unknown modality 'nosuch'"):
        probe_model(small_model(), shards, "rgb", "nosuch", num_samples=20)
    with pytest.raises(ValueError, match="'normal': the run was not trained on it; it was trained on rgb"):
        probe_model(small_model(), shards, "normal", "depth", num_samples=20)
    with pytest.raises(ValueError, match="only 7 samples of the 'val' split have both 'rgb' and 'depth'"):
        probe_model(small_model(), SimpleNamespace(**vars(fake_shards(10)), split="val"), "rgb", "depth",
                    num_samples=100)
