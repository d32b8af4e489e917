"""``pairless eval``'s table says in words what a bare pair of numbers would hide (issue 29): a CE above the
no-input CE is "worse than no input", a ratio above 0.90 "not learned"."""

from __future__ import annotations

from pairless.inference.evaluate import format_table


def test_a_direction_worse_than_no_input_is_said_in_words():
    # the numbers issue 29 met: caption:depth 1.9531 against 1.8505 with no input, printed without a word
    rows = {"caption:depth": {"ce": 1.9531, "ce_unconditional": 1.8505, "num_samples": 26,
                              "num_tokens": 1664},
            "rgb:depth": {"ce": 1.80, "ce_unconditional": 1.85, "num_samples": 26, "num_tokens": 1664},
            "rgb:thermal": {"ce": 0.90, "ce_unconditional": 1.85, "num_samples": 29, "num_tokens": 1856}}
    lines = format_table(rows).splitlines()
    assert lines[1].startswith("caption:depth") and lines[1].endswith("worse than no input")
    assert lines[2].endswith("not learned (ratio > 0.90)") and lines[3].endswith("1856")
    assert lines[4].startswith("caption:depth: the CE is more than 1% above the CE with no input")
