"""Every committed report under docs/results renders from its results.json exactly as it did before the
report was restructured (issue 28): report.md, results.csv and summary.json have the digests recorded from
the old code (tests/fixtures/report_digests.json, written by report_digests.py beside this file)."""

from __future__ import annotations

import json

import pytest
from report_digests import FIXTURE, RESULTS, WRITTEN, committed_results, report_digests

EXPECTED = json.loads(FIXTURE.read_text())


def test_every_committed_result_has_recorded_digests():
    assert committed_results() == sorted(EXPECTED), (
        "docs/results gained or lost a results.json: rewrite the fixture (python "
        "tests/experiments/report_digests.py) from code whose report is known to be right")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_report_renders_as_recorded(name):
    found = report_digests(name)
    assert found["results.json"] == EXPECTED[name]["results.json"], (
        f"{RESULTS / name}/results.json was replaced: rewrite the fixture (python "
        "tests/experiments/report_digests.py)")
    changed = [file for file in WRITTEN if found[file] != EXPECTED[name][file]]
    assert not changed, f"{name}: {', '.join(changed)} render differently from the recorded digests"
