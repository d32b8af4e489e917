"""Tokenizers: encode/decode round trips, exact text, determinism, save/load, input checks, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairless import metrics
from pairless.tokenizers import load_tokenizer, text
from pairless.tokenizers.base import ENCODE_CHUNK
from pairless.tokenizers.neural_training import (
    build_spatial,
    build_vector,
    preset_config,
    torch_threads,
    train_neural,
)
from pairless.utils.storage import staged_dir

SIZE = 16


def synthetic_images(count: int, size: int = SIZE, seed: int = 0) -> dict[str, np.ndarray]:
    """Discs of random colour/depth/class on a plain background, in every image modality's natural form."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.zeros((count, size, size, 3), np.uint8)
    rgb[:] = rng.integers(0, 256, (count, 1, 1, 3))
    depth = np.full((count, size, size), 20.0, np.float32)
    semseg = np.zeros((count, size, size), np.uint8)
    normal = np.zeros((count, size, size, 3), np.float32)
    normal[..., 2] = 1.0
    for i in range(count):
        for _ in range(rng.integers(1, 3)):
            cx, cy = rng.uniform(2, size - 2, 2)
            radius = rng.uniform(2, size / 3)
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
            rgb[i][inside] = rng.integers(0, 256, 3)
            depth[i][inside] = rng.uniform(2, 10)
            semseg[i][inside] = rng.integers(1, 6)
            vector = rng.normal(size=3)
            normal[i][inside] = vector / np.linalg.norm(vector)
    normal_uint8 = np.round((normal + 1) / 2 * 255).astype(np.uint8)
    return {"rgb": rgb, "depth": depth, "normal": normal_uint8, "semseg": semseg}


def synthetic_vectors(count: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(count, 6))
    return (latent @ rng.normal(size=(6, dim))).astype(np.float32)


TEXTS = ["a red cube left of a small blue sphere.", "two green cones, one big cylinder.",
         "12 30 40 55 cube 3 4 20 20 sphere", "an orange sphere on the floor, near a cube.",
         "0 0 31 31 floor", "a cube, a sphere, a cone."]


def tiny_config():
    config = preset_config("micro")
    config.spatial.width = 16
    config.vector.hidden = 32
    return config


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def images():
    return synthetic_images(40)


@pytest.fixture(scope="module")
def image_tokenizers(images):
    return {name: build_spatial(name, values, tiny_config()) for name, values in images.items()}


@pytest.fixture(scope="module")
def vocabulary():
    return text.train_vocabulary(TEXTS * 3, vocab_size=200)


def test_spatial_round_trip_shapes_and_dtypes(images, image_tokenizers):
    for name, values in images.items():
        tokenizer = image_tokenizers[name]
        spec = tokenizer.spec
        assert spec.kind == "image" and spec.grid == (SIZE // 4, SIZE // 4) and spec.num_tokens == 16
        levels = tiny_config().spatial.modality_levels.get(name, [8, 5, 5, 5])  # the preset's codebook
        assert spec.vocab_size == int(np.prod(levels))
        ids = tokenizer.encode(values[:5])
        assert ids.dtype == torch.long and ids.shape == (5, spec.num_tokens)
        assert int(ids.min()) >= 0 and int(ids.max()) < spec.vocab_size
        decoded = tokenizer.decode(ids)
        assert decoded.shape == values[:5].shape and decoded.dtype == values.dtype
    depth = image_tokenizers["depth"].decode(image_tokenizers["depth"].encode(images["depth"][:3]))
    assert (depth > 0).all()
    semseg = image_tokenizers["semseg"].decode(image_tokenizers["semseg"].encode(images["semseg"][:3]))
    assert semseg.max() < 6


def test_vector_round_trip_shapes():
    vectors = synthetic_vectors(30)
    tokenizer = build_vector("embed", vectors, tiny_config())
    ids = tokenizer.encode(vectors)
    assert ids.shape == (30, 16) and tokenizer.spec.kind == "vector"
    decoded = tokenizer.decode(ids)
    assert decoded.shape == (30, 64) and decoded.dtype == np.float32


def test_text_round_trip_is_exact_and_padded(vocabulary):
    tokenizer = text.TextTokenizer(text.TextConfig(modality="caption",
                                                   num_tokens=text.padded_length(vocabulary, TEXTS)),
                                   vocabulary)
    assert tokenizer.spec.num_tokens % 4 == 0
    ids = tokenizer.encode(TEXTS)
    assert tokenizer.decode(ids) == TEXTS
    for row, sentence in zip(ids.tolist(), TEXTS, strict=True):
        length = len(vocabulary.encode(sentence).ids)
        assert row[length] == text.EOS_ID and all(token == text.PAD_ID for token in row[length + 1:])
        assert text.PAD_ID not in row[:length] and text.EOS_ID not in row[:length]
    assert [vocabulary.token_to_id(token)
            for token in ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[S_0]", "[S_15]")] \
        == [0, 1, 2, 3, 4, 19]
    # Unseen recombinations of known words still round-trip exactly.
    novel = ["a blue cube, a red cone.", "sphere 30 12"]
    assert text.TextTokenizer(text.TextConfig(modality="det", num_tokens=32), vocabulary).decode(
        text.TextTokenizer(text.TextConfig(modality="det", num_tokens=32), vocabulary).encode(novel)) == novel


def test_text_too_long_raises_or_truncates(vocabulary):
    long_text = " ".join(["a red cube"] * 20)
    strict = text.TextTokenizer(text.TextConfig(modality="caption", num_tokens=8), vocabulary)
    with pytest.raises(ValueError, match="caption.*num_tokens=8"):
        strict.encode([long_text])
    lenient = text.TextTokenizer(text.TextConfig(modality="caption", num_tokens=8, truncate=True), vocabulary)
    ids = lenient.encode([long_text])
    assert ids.shape == (1, 8) and ids[0, -1] == text.EOS_ID
    with pytest.raises(TypeError, match="caption.*list of str"):
        strict.encode("not a list")


def test_encoding_is_deterministic_and_independent_of_batch_size(image_tokenizers):
    values = synthetic_images(ENCODE_CHUNK + 7, seed=3)["rgb"]
    tokenizer = image_tokenizers["rgb"]
    full = tokenizer.encode(values)
    assert torch.equal(full, tokenizer.encode(values))
    pieces = torch.cat([tokenizer.encode(values[start:start + 5]) for start in range(0, len(values), 5)])
    assert torch.equal(full, pieces)
    assert torch.equal(full[-1:], tokenizer.encode(values[-1:]))
    with torch_threads(1):
        assert torch.equal(full, tokenizer.encode(values))


def test_save_load_gives_identical_tokens(tmp_path, images, image_tokenizers, vocabulary):
    for name, tokenizer in image_tokenizers.items():
        with staged_dir(tmp_path / name) as staging:
            tokenizer.save(staging)
        loaded = load_tokenizer(tmp_path, name)
        assert torch.equal(loaded.encode(images[name]), tokenizer.encode(images[name]))
        ids = tokenizer.encode(images[name][:4])
        np.testing.assert_array_equal(loaded.decode(ids), tokenizer.decode(ids))
    vectors = synthetic_vectors(20)
    vector = build_vector("embed", vectors, tiny_config())
    with staged_dir(tmp_path / "embed") as staging:
        vector.save(staging)
    assert torch.equal(load_tokenizer(tmp_path, "embed").encode(vectors), vector.encode(vectors))
    with staged_dir(tmp_path / "text") as staging:
        text.save_vocabulary(vocabulary, staging, {})
    caption = text.TextTokenizer(text.TextConfig(modality="caption", num_tokens=20), vocabulary)
    with staged_dir(tmp_path / "caption") as staging:
        caption.save(staging)
    loaded_caption = load_tokenizer(tmp_path, "caption")
    assert loaded_caption.spec == caption.spec
    assert torch.equal(loaded_caption.encode(TEXTS), caption.encode(TEXTS))
    with pytest.raises(FileNotFoundError, match="det"):
        load_tokenizer(tmp_path, "det")


def test_wrong_inputs_raise_clear_errors(images, image_tokenizers):
    rgb = image_tokenizers["rgb"]
    with pytest.raises(ValueError, match=r"rgb: expected shape \[N, 16, 16, 3\], got \[2, 16, 16\]"):
        rgb.encode(images["semseg"][:2])
    with pytest.raises(TypeError, match="rgb: expected dtype uint8, got float32"):
        rgb.encode(images["rgb"][:2].astype(np.float32))
    with pytest.raises(TypeError, match="depth: expected a numpy array"):
        image_tokenizers["depth"].encode(images["depth"][:2].tolist())
    with pytest.raises(ValueError, match=r"semseg: expected token ids of shape \[N, 16\]"):
        image_tokenizers["semseg"].decode(torch.zeros(2, 15, dtype=torch.long))
    with pytest.raises(ValueError, match="normal: token ids must lie in"):
        image_tokenizers["normal"].decode(torch.full((1, 16), 1000, dtype=torch.long))


@pytest.mark.parametrize("modality", ["rgb", "semseg"])
def test_short_training_reduces_reconstruction_loss(modality):
    values = synthetic_images(256, seed=1)[modality]
    config = tiny_config()
    tokenizer = build_spatial(modality, values, config)
    result = train_neural(tokenizer, values, config.spatial, steps=60, seed=0)
    losses = result["losses"]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])


def test_vector_training_improves_cosine():
    vectors = synthetic_vectors(512)
    config = tiny_config()
    tokenizer = build_vector("embed", vectors, config)
    before = metrics.cosine_similarity(tokenizer.decode(tokenizer.encode(vectors)), vectors)
    config.vector.lr = 3e-3
    train_neural(tokenizer, vectors, config.vector, steps=150, seed=0)
    after = metrics.cosine_similarity(tokenizer.decode(tokenizer.encode(vectors)), vectors)
    assert after > max(before, 0.0) + 0.3 and after > 0.8


def test_training_is_seeded():
    values = synthetic_images(64, seed=2)["depth"]
    runs = []
    for _ in range(2):
        config = tiny_config()
        tokenizer = build_spatial("depth", values, config)
        train_neural(tokenizer, values, config.spatial, steps=5, seed=7)
        runs.append(tokenizer.encode(values))
    assert torch.equal(runs[0], runs[1])


def test_steps_precedence_and_config_errors():
    config = preset_config("tiny")
    config.modality_steps = {"rgb": 5}
    assert config.steps_for("rgb", config.spatial) == 5
    assert config.steps_for("depth", config.spatial) == config.spatial.steps
    config.steps = 3
    assert config.steps_for("rgb", config.spatial) == 3
    with pytest.raises(ValueError, match="unknown tokenizer preset 'huge'"):
        preset_config("huge")


def test_a_local_encoder_gives_each_token_a_function_of_its_own_patch_only(images):
    # encoder_kernel=1: changing the pixels of one 4x4 patch changes that patch's token and no other
    config = tiny_config().model_copy(deep=True)
    config.spatial.encoder_kernel = 1
    tokenizer = build_spatial("rgb", images["rgb"], config)
    values = images["rgb"][:1].copy()
    changed = values.copy()
    changed[0, :4, :4] = 255 - changed[0, :4, :4]
    before, after = tokenizer.encode(values), tokenizer.encode(changed)
    assert bool((before[0, 1:] == after[0, 1:]).all())
    # the encoder's latents (before rounding) show it exactly: only position 0 moves
    latent_before = tokenizer.encoder(tokenizer.prepare(values)[0]).flatten(2)
    latent_after = tokenizer.encoder(tokenizer.prepare(changed)[0]).flatten(2)
    moved = (latent_before - latent_after).abs().amax(1)[0]  # (h*w,)
    assert moved[0] > 0 and bool((moved[1:] == 0).all())
    # with today's 3x3 encoder the neighbours' latents move too
    wide = build_spatial("rgb", images["rgb"], tiny_config())
    difference = wide.encoder(wide.prepare(values)[0]) - wide.encoder(wide.prepare(changed)[0])
    moved = difference.abs().flatten(2).amax(1)[0]
    assert bool((moved[1:] > 0).any())
