"""The own-data report's first section: what the user's folder holds (samples per modality and per pair in
each split, as used after bad files were skipped) and the bad files skipped."""

from __future__ import annotations

from pairless.experiments.report.markdown import table
from pairless.experiments.results import Inspection, Results

BAD_SHOWN = 10  # bad files listed by name in the report (all of them are in results.json)


def markdown(results: Results) -> list[str]:
    inspection = results.inspection
    if not inspection:
        return []
    used = inspection.used
    source = ("the samples used (the token shards, after the bad files below were skipped)" if used else
              "the file listing (files that proved unreadable are listed below)")
    parts = ["## Your data", "", f"`{results.data}`, counted from {source}.", ""]
    skipped = _skipped_per_modality(inspection)
    for split, listed in inspection.splits.items():
        counts = used.get(split) or listed
        names = list(counts["modalities"])
        dropped = skipped.get(split) or {}
        listed_bad = ", ".join(f"{name} {count}" for name, count in sorted(dropped.items()))
        note = f"; bad files skipped: {listed_bad}" if dropped else "; no file skipped"
        parts += [f"**{split}**: {counts['num_samples']} samples used ({listed['num_samples']} in the listing"
                  f"{note}). Samples with both modalities (diagonal: with the modality):", ""]
        rows = []
        for a in names:
            row = [a]
            for b in names:
                if a == b:
                    row.append(str(counts["modalities"][a]))
                else:
                    row.append(str(counts["pairs"].get(f"{a}:{b}", counts["pairs"].get(f"{b}:{a}", 0))))
            rows.append(row)
        parts += [table([""] + names, rows), ""]
    bad = inspection.bad_samples
    total = sum(len(items) for items in bad.values())
    if total:
        parts += [f"**{total} bad file(s) skipped** (their samples keep their other modalities); the first "
                  f"{min(total, BAD_SHOWN)}:", ""]
        shown = [(split, path, reason) for split, items in bad.items() for path, reason in items][:BAD_SHOWN]
        parts += [table(["split", "file", "reason"], [[s, f"`{p}`", r] for s, p, r in shown]), ""]
    else:
        parts += ["No bad file was found.", ""]
    return parts


def _skipped_per_modality(inspection: Inspection) -> dict[str, dict[str, int]]:
    """{split: {modality: bad files skipped}}, from the listed paths (``SPLIT/MODALITY/...``)."""
    out: dict[str, dict[str, int]] = {}
    for split, items in inspection.bad_samples.items():
        for path, _ in items:
            parts = path.replace("\\", "/").split("/")
            modality = parts[parts.index(split) + 1] if split in parts[:-1] else "?"
            out.setdefault(split, {})[modality] = out.setdefault(split, {}).get(modality, 0) + 1
    return out
