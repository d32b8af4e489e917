"""ml-4m's WordPiece as a pairless tokenizer (pairless/tokenizers/ml4m_text.py), on a tokenizer.json built
here with the tokenizers library in ml-4m's id layout."""

from __future__ import annotations

import pytest
import torch
from ml4m_layout_helpers import build_vocabulary, write_vocabulary

from pairless.tokenizers import available_modalities, load_tokenizer
from pairless.tokenizers.ml4m_text import (
    Ml4mTextConfig,
    Ml4mTextTokenizer,
    check_vocabulary,
    detection_text,
    read_vocabulary,
    save_vocabulary,
)
from pairless.tokenizers.text import train_vocabulary
from pairless.utils.storage import mark_complete


def _tokenizer(num_tokens: int = 12, form: str = "text", bins: int = 8) -> Ml4mTextTokenizer:
    return Ml4mTextTokenizer(Ml4mTextConfig(modality="caption" if form == "text" else "det",
                                            num_tokens=num_tokens, form=form), build_vocabulary(bins))


def test_spec_has_ml4m_special_ids():
    tokenizer = _tokenizer()
    spec = tokenizer.spec
    assert (spec.pad_id, spec.eos_id, spec.bos_id, spec.vocab_size) == (0, 3, 5, 256)  # BOS = [S_1]
    assert tokenizer.tokenizer.token_to_id("[S_1]") == 5 and tokenizer.tokenizer.token_to_id("[S_199]") == 203
    assert tokenizer.bins == 8 and tokenizer.tokenizer.token_to_id("v0=0") == 204


def test_encode_lowercases_appends_eos_pads_and_decode_is_not_exact():
    tokenizer = _tokenizer()
    ids = tokenizer.encode(["A RED Cube on the floor.", "two spheres"])
    words = tokenizer.tokenizer.encode("a red cube on the floor.").ids
    assert ids[0, :len(words)].tolist() == words
    assert ids[0, len(words)] == 3 and (ids[0, len(words) + 1:] == 0).all()
    assert tokenizer.tokenizer.id_to_token(int(ids[1, 1])) == "sphere" and \
        tokenizer.tokenizer.id_to_token(int(ids[1, 2])) == "##s"
    assert tokenizer.decode(ids) == ["a red cube on the floor.", "two spheres"]  # lowercased: no exact trip
    assert tokenizer.decode(torch.tensor([[5, 240, 3, 241]])) == ["cube"]  # sentinels dropped, stops at EOS


def test_long_text_is_cut_like_ml4m_and_counted():
    tokenizer = _tokenizer(num_tokens=4)
    ids, cut = tokenizer.encode_counting(["a red cube on the floor", "a cube"])
    assert cut == 1
    assert 3 not in ids[0].tolist()  # cut as ml-4m cuts: its [EOS] is lost
    assert ids[1].tolist()[2:] == [3, 0]


def test_detection_text_threshold_order_bins_and_crop():
    record = {"instances": [
        {"boxes": [0.5, 0.5, 1.0, 1.0], "class_name": "cone", "score": 0.95},
        {"boxes": [0.0, 0.0, 0.2, 0.2], "class_name": "cube", "score": 0.7},
        {"boxes": [0.0, 0.0, 0.1, 0.1], "class_name": "sphere", "score": 0.5}]}  # under ml-4m's 0.6
    assert detection_text(record, 1000) == "v0=0 v1=0 v2=200 v3=200 cube v0=500 v1=500 v2=999 v3=999 cone"
    # crop 0 (top, left, height, width) of a 100 x 200 image: its right half; the cube falls outside
    assert detection_text(record, 1000, crop=(0, 100, 100, 100), image_size=(100, 200)) == \
        "v0=0 v1=500 v2=999 v3=999 cone"
    assert detection_text("v0=1 v1=2 v2=3 v3=4 cube", 8) == "v0=1 v1=2 v2=3 v3=4 cube"
    with pytest.raises(ValueError, match="instance 0"):
        detection_text({"instances": [{"boxes": [0, 0, 1], "class_name": "a", "score": 1}]}, 8)
    det = _tokenizer(form="det")
    ids = det.encode([record])
    assert det.decode(ids) == ["v0=0 v1=0 v2=1 v3=1 cube v0=4 v1=4 v2=7 v3=7 cone"]  # 8 bins: 0.2 -> 1


def test_vocabulary_with_other_special_ids_is_refused(tmp_path):
    ours = train_vocabulary(["a red cube"], 64)  # pairless's own: [BOS] at 2, 16 sentinels
    with pytest.raises(ValueError, match=r"\[SOS\] is None \(ml-4m: 2\)"):
        check_vocabulary(ours)
    path = tmp_path / "tokenizer.json"
    ours.save(str(path))
    with pytest.raises(ValueError, match="tokenizer.json: not ml-4m's text vocabulary"):
        read_vocabulary(path)
    with pytest.raises(ValueError, match="no coordinate tokens"):
        _tokenizer(form="det", bins=0)


def test_saved_folder_loads_through_load_tokenizer(tmp_path):
    vocabulary = read_vocabulary(write_vocabulary(tmp_path / "ml4m" / "tokenizer.json"))
    save_vocabulary(vocabulary, tmp_path / "tokdir" / "ml4m_text", {"source": "test"})
    for name, form in (("caption", "text"), ("det", "det")):
        folder = tmp_path / "tokdir" / name
        folder.mkdir()
        Ml4mTextTokenizer(Ml4mTextConfig(modality=name, num_tokens=12, form=form), vocabulary).save(folder)
        mark_complete(folder)
    assert available_modalities(tmp_path / "tokdir") == ["caption", "det"]
    loaded = load_tokenizer(tmp_path / "tokdir", "det")
    assert isinstance(loaded, Ml4mTextTokenizer) and loaded.config.form == "det" and loaded.spec.bos_id == 5
    assert load_tokenizer(tmp_path / "tokdir", "caption").decode(
        _tokenizer().encode(["Blue cone"])) == ["blue cone"]
