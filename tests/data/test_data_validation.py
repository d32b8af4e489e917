"""Bad input: every class of malformed data gives a DataError naming the file and the problem.

Each case corrupts one file of a hand-made folder (no manifest) and checks the
message; skip mode then loads the same damage, drops exactly the bad values
and counts them.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from data_helpers import make_split
from PIL import Image

from pairless.data import MAX_TEXT_LENGTH, DataError, open_dataset, write_dataset


def user_folder(tmp_path, count=5):
    """A folder-form dataset without the pairless manifest, as a user would make it."""
    root = write_dataset(tmp_path / "data", {"train": make_split(count)}, form="folder")
    (root / "manifest.json").unlink()
    (root / "COMPLETE.json").unlink()
    return root / "train"


def png_bytes(array, mode=None):
    buffer = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def damaged_header(path, offset, flip):
    """The .npy with one header byte flipped; numpy then raises TokenError, SyntaxError or TypeError
    (not only ValueError: the fuzz test found these)."""
    content = bytearray(path.read_bytes())
    content[offset] ^= flip
    return bytes(content)


# (relative file, content, message pattern): each is one bad value of sample s001 or s003.
CASES = {
    "truncated_png": ("rgb/s001.png", lambda split: (split / "rgb/s001.png").read_bytes()[:60],
                      "unreadable, truncated or corrupt image"),
    "garbage_png": ("normal/s003.png", lambda split: b"\x89PNG not really",
                    "unreadable, truncated or corrupt image"),
    "wrong_size": ("rgb/s003.png", lambda split: png_bytes(np.zeros((6, 6, 3), np.uint8)),
                   r"shape \(6, 6, 3\), expected \(8, 8, 3\).*the size comes from"),
    "not_square": ("semseg/s003.png", lambda split: png_bytes(np.zeros((8, 7), np.uint8)),
                   r"shape \(8, 7\), expected \(8, 8\)"),
    "gray_rgb": ("rgb/s001.png", lambda split: png_bytes(np.zeros((8, 8), np.uint8)),
                 r"image has 1 channel\(s\) \(mode L\), 'rgb' expects 3"),
    "rgba_normal": ("normal/s001.png", lambda split: png_bytes(np.zeros((8, 8, 4), np.uint8)),
                    r"image has 4 channel\(s\) \(mode RGBA\), 'normal' expects 3"),
    "sixteen_bit_semseg": ("semseg/s001.png", lambda split: png_bytes(np.full((8, 8), 300, np.uint16)),
                           "16/32-bit"),
    "integer_depth": ("depth/s003.npy", lambda split: npy_bytes(np.ones((8, 8), np.int64)),
                      "dtype int64, expected floating point"),
    "nan_depth": ("depth/s003.npy", lambda split: npy_bytes(np.full((8, 8), np.nan, np.float32)),
                  "NaN or inf"),
    "inf_embed": ("embed/s001.npy", lambda split: npy_bytes(np.full(64, np.inf, np.float32)), "NaN or inf"),
    "negative_depth": ("depth/s003.npy", lambda split: npy_bytes(-np.ones((8, 8), np.float64)),
                       r"non-positive depth \(minimum -1\)"),
    "wrong_embed_dim": ("embed/s003.npy", lambda split: npy_bytes(np.zeros(10, np.float32)),
                        r"shape \(10,\), expected \(64,\)"),
    "pickled_npy": ("embed/s003.npy", lambda split: npy_bytes(np.array([{"a": 1}], dtype=object)),
                    r"unreadable \.npy"),
    "npy_header_token_error": ("embed/s001.npy",
                               lambda split: damaged_header(split / "embed/s001.npy", 10, 1),
                               r"unreadable \.npy \(TokenError"),
    "npy_header_syntax_error": ("embed/s001.npy",
                                lambda split: damaged_header(split / "embed/s001.npy", 21, 16),
                                r"unreadable \.npy \(SyntaxError"),
    "npy_header_type_error": ("embed/s001.npy",
                              lambda split: damaged_header(split / "embed/s001.npy", 26, 66),
                              r"unreadable \.npy \(TypeError"),
    "class_out_of_range": ("semseg/s003.png", lambda split: png_bytes(np.full((8, 8), 9, np.uint8)),
                           r"class id 9 out of range \[0, 6\)"),
    "empty_caption": ("caption/s001.txt", lambda split: b"  \n", "empty text"),
    "long_caption": ("caption/s003.txt", lambda split: b"a" * (MAX_TEXT_LENGTH + 1),
                     f"over the maximum length {MAX_TEXT_LENGTH}"),
    "not_utf8": ("det/s001.txt", lambda split: b"\xff\xfe caption", "not valid UTF-8"),
    "nul_in_text": ("det/s003.txt", lambda split: b"a\x00b", "NUL character"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_names_file_and_problem(tmp_path, case):
    relative, content, pattern = CASES[case]
    split = user_folder(tmp_path)
    (split / relative).write_bytes(content(split))
    with pytest.raises(DataError, match=rf"{relative}: .*{pattern}"):
        open_dataset(split.parent, "train")
    dataset = open_dataset(split.parent, "train", on_bad_sample="skip")
    assert len(dataset.bad_samples) == 1 and dataset.bad_samples[0][0].endswith(relative)
    modality, name = relative.split("/")
    assert modality not in dataset[dataset.index_of(name.split(".")[0])]
    assert len(dataset) == 5


def test_skip_mode_counts_every_bad_value(tmp_path):
    split = user_folder(tmp_path)
    chosen = ["truncated_png", "integer_depth", "empty_caption", "inf_embed", "not_square", "rgba_normal"]
    for case in chosen:
        relative, content, _ = CASES[case]
        (split / relative).write_bytes(content(split))
    (split / "depth" / "s009.png").write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    with pytest.raises(DataError):
        open_dataset(split.parent, "train")
    dataset = open_dataset(split.parent, "train", on_bad_sample="skip")
    assert len(dataset.bad_samples) == len(chosen) + 1
    assert any("wrong extension '.png' for modality 'depth'" in reason for _, reason in dataset.bad_samples)
    assert len(dataset) == 5  # every sample still has other modalities
    assert dataset.column("rgb")[1].sum() == 4 and dataset.column("depth")[1].sum() == 3


def test_sample_with_only_bad_values_is_dropped(tmp_path):
    split = user_folder(tmp_path, count=2)
    for path in split.rglob("s001.*"):
        path.write_bytes(b"")
    dataset = open_dataset(split.parent, "train", on_bad_sample="skip")
    # s001 has no depth and no caption in make_split: 5 bad values plus its scene file.
    assert dataset.ids == ["sub/s000"] and len(dataset.bad_samples) == 6


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (lambda split: (split / "depth" / "s001.png").write_bytes(b"x"),
         r"depth/s001\.png: wrong extension '\.png'"),
        (lambda split: (split / "lidar").mkdir(),
         r"lidar: folder 'lidar' is not a registered modality.*modalities\.yaml"),
        (lambda split: [p.unlink() for p in (split / "embed").rglob("*.npy")],
         r"embed: modality folder 'embed' has no samples"),
        (lambda split: (split / "rgb" / "s003.jpg").write_bytes(b"x"),
         r"rgb/s003.png: a second file for sample 's003'"),
    ],
)
def test_structural_problems(tmp_path, damage, pattern):
    split = user_folder(tmp_path)
    damage(split)
    with pytest.raises(DataError, match=pattern):
        open_dataset(split.parent, "train")


def test_ignored_and_empty(tmp_path):
    split = user_folder(tmp_path)
    (split / "_notes").mkdir()
    (split / ".cache").mkdir()
    (split / "rgb" / ".DS_Store").write_bytes(b"junk")
    assert len(open_dataset(split.parent, "train")) == 5
    (split.parent / "val").mkdir()
    with pytest.raises(DataError, match=r"val: zero samples in split 'val'"):
        open_dataset(split.parent, "val")
    with pytest.raises(DataError, match=r"no split 'test'; splits found: train, val"):
        open_dataset(split.parent, "test")


def test_packed_bad_rows(tmp_path):
    root = write_dataset(tmp_path / "data", {"train": make_split(5)}, form="packed")
    depth = np.load(root / "train" / "depth.npy")
    depth[3, 2, 2] = np.nan
    np.save(root / "train" / "depth.npy", depth)
    with pytest.raises(DataError, match=r"train/depth\.npy: row 3 \(id 's003'\): contains NaN or inf"):
        open_dataset(root, "train")
    dataset = open_dataset(root, "train", on_bad_sample="skip")
    assert len(dataset.bad_samples) == 1 and "depth" not in dataset[3] and "rgb" in dataset[3]
    np.save(root / "train" / "depth.npy", np.ones((5, 8, 8), np.int32))
    with pytest.raises(DataError, match=r"depth\.npy: dtype int32, expected floating point"):
        open_dataset(root, "train", on_bad_sample="skip")
    np.save(root / "train" / "depth.npy", np.ones((5, 6, 6), np.float32))
    with pytest.raises(DataError, match=r"depth\.npy: shape \(6, 6\), expected \(8, 8\)"):
        open_dataset(root, "train")
    np.save(root / "train" / "caption.npy", np.array(["ok", "", "ok", "ok", "ok"]))
    np.save(root / "train" / "depth.npy", np.ones((5, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"caption\.npy: row 1 \(id 's001'\): empty text"):
        open_dataset(root, "train")


def test_packed_checks_every_chunk(tmp_path):
    """Row checks run in chunks (memory-mapped columns); a bad row past the first chunk is still found."""
    from pairless.data import SplitData

    count = 5000
    depth = np.ones((count, 2, 2), np.float32)
    root = write_dataset(tmp_path / "big", {"train": SplitData(ids=[f"{i}" for i in range(count)],
                                                             columns={"depth": depth})})
    depth[[3, 4097, 4999], 1, 1] = [np.inf, 0.0, -2.0]
    np.save(root / "train" / "depth.npy", depth)
    dataset = open_dataset(root, "train", on_bad_sample="skip")
    assert sorted(location.split(" row ")[1].split(" ")[0] for location, _ in dataset.bad_samples) == \
        ["3", "4097", "4999"]
    assert dataset.column("depth")[1].sum() == count - 3


def test_jpeg_and_palette_inputs_are_read(tmp_path):
    split = user_folder(tmp_path)
    rgb = np.full((8, 8, 3), 200, np.uint8)
    (split / "rgb" / "s001.png").unlink()
    Image.fromarray(rgb).save(split / "rgb" / "s001.jpg", quality=95)
    labels = Image.fromarray(np.full((8, 8), 4, np.uint8)).convert("P")
    labels.putpalette([value for index in range(256) for value in (index, 0, 0)])
    labels.save(split / "semseg" / "s003.png")
    dataset = open_dataset(split.parent, "train")
    assert np.abs(dataset[dataset.index_of("s001")]["rgb"].astype(int) - 200).max() <= 3
    assert (dataset[dataset.index_of("s003")]["semseg"] == 4).all()
