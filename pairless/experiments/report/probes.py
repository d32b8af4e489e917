"""The report's alignment-probe section: probe metrics per run, and whether they predict zero-shot quality.

For every zero-shot run and every direction between its withheld pair, the recovered fraction (against
the many-shot run with the same label, else the recipe's many-shot run) is set beside the run's probe
metrics for that pair (last encoder layer); across those points the Spearman rank correlation of each
metric with the recovered fraction is reported with a bootstrap interval. docs/evaluation.md states
beforehand which metric we expect to predict best (FOSCTTM, then recall@10).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless.experiments.report.markdown import arrow, number, plotted, pyplot, save_figure, table
from pairless.experiments.report.rows import LEARNED_RATIO, recovered_fraction
from pairless.experiments.results import Evaluation, ProbeResult, Results, RunRecord
from pairless.inference.probes import METRICS
from pairless.modalities import Pair

MIN_POINTS = 4  # fewer (run, direction) points than this: no correlation is computed
BOOTSTRAP = 2000


def _many_shot_for(runs: dict[str, RunRecord], info: RunRecord) -> str | None:
    """The many-shot run of the same seed with the zero-shot run's label (binding's matched control), else
    the many-shot run of that seed."""
    candidates = [name for name, other in runs.items()
                  if other.role == "many-shot" and other.seed == info.seed]
    same_label = [name for name in candidates if runs[name].label == info.label]
    return (same_label or candidates or [None])[0]


def _point(name: str, pair: Pair, probes: dict[str, ProbeResult] | None, evals: dict[str, Evaluation] | None,
           many_evals: dict[str, Evaluation] | None) -> list[dict]:
    """The points of one zero-shot model (final or a snapshot) for both directions of a withheld pair."""
    probe = next((value for key, value in (probes or {}).items()
                  if set(Pair.parse(key)) == set(pair) and value.summary is not None), None)
    out = []
    for direction in (f"{pair[0]}:{pair[1]}", f"{pair[1]}:{pair[0]}"):
        zero, ms = (evals or {}).get(direction), (many_evals or {}).get(direction)
        if probe is None or zero is None or ms is None:
            continue
        if ms.ce / ms.ce_unconditional > LEARNED_RATIO:
            continue  # the many-shot model did not learn it: no recovered fraction to predict
        recovered = recovered_fraction(zero.ce_unconditional, zero.ce, ms.ce)
        out.append({"run": name, "direction": direction, "recovered": recovered,
                    **{metric: probe.summary[metric] for metric in METRICS}})
    return out


def points(results: Results) -> list[dict]:
    """(zero-shot run, direction) points with a recovered fraction and the pair's probe metrics; a run's
    snapshots along training (against the many-shot run's snapshot at the same fraction) add points."""
    runs, snapshots = results.runs, results.snapshots
    out = []
    for name, info in runs.items():
        if info.role != "zero-shot":
            continue
        many = _many_shot_for(runs, info)
        many_evals = results.evals.get(many) if many else None
        for pair in info.withheld:
            out += _point(name, pair, results.probes.get(name), results.evals.get(name), many_evals)
            for tag, snapshot in (snapshots.get(name) or {}).items():
                matched = (snapshots.get(many) or {}).get(tag) if many else None
                if matched is not None:
                    out += _point(f"{name} at {tag}", pair, snapshot.probes, snapshot.evals, matched.evals)
    return out


def training_rows(results: Results) -> list[dict]:
    """Per zero-shot run with snapshots, per direction of its withheld pair: tokens seen, recovered fraction
    and probe metrics at each snapshot and at the end (the probes along training)."""
    rows = []
    found = {(p["run"], p["direction"]): p for p in points(results)}
    for name, per_fraction in results.snapshots.items():
        info = results.runs.get(name)
        if info is None or info.role != "zero-shot":
            continue
        stages = [(f"{name} at {tag}", float(tag), snapshot.tokens) for tag, snapshot in
                  sorted(per_fraction.items(), key=lambda item: float(item[0]))]
        seen = sum(info.tokens_per_modality.values()) or info.total_tokens
        stages.append((name, 1.0, seen))
        for pair in info.withheld:
            for direction in (f"{pair[0]}:{pair[1]}", f"{pair[1]}:{pair[0]}"):
                for label, fraction, tokens in stages:
                    point = found.get((label, direction))
                    if point is not None:
                        values = {key: point[key] for key in ("recovered", *METRICS)}
                        rows.append({"run": name, "direction": direction, "fraction": fraction,
                                     "tokens": tokens, **values})
    return rows


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""
    def ranks(values):
        values = np.asarray(values, dtype=float)
        order = values.argsort(kind="stable")
        ranked = np.empty(len(values))
        ranked[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):  # ties share their mean rank
            ranked[values == value] = ranked[values == value].mean()
        return ranked
    a, b = ranks(x), ranks(y)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def correlation(x, y, seed: int = 0) -> dict:
    """Spearman rho with a 95% percentile bootstrap interval over the points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    samples = [spearman(x[idx], y[idx]) for idx in rng.integers(0, len(x), (BOOTSTRAP, len(x)))]
    samples = np.asarray([s for s in samples if np.isfinite(s)])
    low, high = (np.percentile(samples, [2.5, 97.5]) if len(samples) else (float("nan"), float("nan")))
    return {"rho": spearman(x, y), "low": float(low), "high": float(high), "n": len(x)}


def probes_summary(results: Results) -> dict:
    found = points(results)
    correlations = ({metric: correlation([p[metric] for p in found], [p["recovered"] for p in found])
                     for metric in METRICS} if len(found) >= MIN_POINTS else {})
    return {"points": found, "correlations": correlations}


def markdown(results: Results) -> list[str]:
    rows = []
    for run, per_pair in results.probes.items():
        for pair, value in per_pair.items():
            if value.skipped is not None:
                rows.append([run, pair, *["–"] * (len(METRICS) + 1), _reason(pair, value.skipped)])
                continue
            rows.append([run, pair, *[number(value.summary[m]) for m in METRICS],
                         number(value.shuffled["foscttm"]), str(value.num_samples)])
    if not rows:
        return []
    parts = ["## Alignment probes (last encoder layer)", "",
             "Each modality of a pair encoded alone, mean-pooled; cross-modal retrieval recall@1/@10, "
             "FOSCTTM (0 = every sample's true match is nearest, 0.5 = chance), mutual k-NN and linear CKA "
             "(docs/evaluation.md). *shuffled* is FOSCTTM with the pairs permuted: the chance level.", "",
             table(["run", "pair", *METRICS, "shuffled foscttm", "samples"], rows), ""]
    along = training_rows(results)
    if along:
        parts += ["Along training: each zero-shot model's snapshots (and its end) against the many-shot "
                  "model's snapshot at the same fraction of its budget.", "",
                  table(["run", "direction", "fraction", "tokens", "recovered", *METRICS],
                         [[r["run"], arrow(r["direction"]), f"{r['fraction']:g}",
                           f"{r['tokens']:,}" if r["tokens"] else "–", number(r["recovered"]),
                           *[number(r[m]) for m in METRICS]] for r in along]), ""]
    result = probes_summary(results)
    if not result["correlations"]:
        tail = " and no scatter plot is drawn; the points:" if result["points"] else "."
        parts += [f"Does a shared latent predict zero-shot quality? {len(result['points'])} (zero-shot run, "
                  f"direction) points with a learned many-shot direction: fewer than {MIN_POINTS}, so no "
                  f"correlation is computed{tail}", ""]
        if result["points"]:
            parts += [table(["run", "direction", "recovered", *METRICS],
                             [[p["run"], arrow(p["direction"]), number(p["recovered"]),
                               *[number(p[m]) for m in METRICS]] for p in result["points"]]), ""]
        return parts
    corr_rows = [[metric, f"{c['rho']:+.2f}", f"[{c['low']:+.2f}, {c['high']:+.2f}]", str(c["n"])]
                 for metric, c in result["correlations"].items()]
    parts += ["Does a shared latent predict zero-shot quality? Spearman correlation of each metric with the "
              "recovered fraction across (zero-shot run, direction) points, 95% bootstrap interval. "
              "Expected beforehand: FOSCTTM (negative: lower is better aligned) and recall@10 predict best.",
              "", table(["metric", "Spearman rho", "95% interval", "points"], corr_rows), ""]
    count = len(result["points"])
    if count < 10:
        parts += [f"With {count} points a rank correlation takes few values and the bootstrap interval is "
                  "rough (resamples repeat points); read the sign, not the size. More runs (binding sets, "
                  "pairs-curve k, seeds) add points.", ""]
    return parts


def draw_training(results: Results, out: Path) -> bool:
    """Recovered fraction and FOSCTTM against training tokens, one line per (zero-shot run, direction)."""
    rows = [r for r in training_rows(results) if r["tokens"]]
    if len(rows) < 2:
        return False
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for key in sorted({(r["run"], r["direction"]) for r in rows}):
        line = sorted((r for r in rows if (r["run"], r["direction"]) == key), key=lambda r: r["tokens"])
        label = f"{key[0]} {arrow(key[1])}"
        axes[0].plot([r["tokens"] for r in line], [r["recovered"] for r in line], "o-", label=label)
        axes[1].plot([r["tokens"] for r in line], [r["foscttm"] for r in line], "o-", label=label)
    axes[0].set_ylabel("recovered fraction")
    axes[1].set_ylabel("FOSCTTM (0 = aligned, 0.5 = chance)")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for axis in axes:
        axis.set_xlabel("tokens seen")
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value / 1e6:g}M"))
        axis.xaxis.set_minor_formatter(NullFormatter())
    axes[0].legend(frameon=False, fontsize=7)
    save_figure(fig, out)
    return True


def draw(results: Results, out: Path) -> bool:
    """Each probe metric against the recovered fraction, one panel per metric; not drawn with fewer than
    MIN_POINTS points (a table of them in the report instead: two dots per panel say nothing)."""
    found = points(results)
    if len(found) < MIN_POINTS:
        return False
    plt = pyplot()

    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.0))
    recovered = [p["recovered"] for p in found]
    for axis, metric in zip(axes, METRICS, strict=True):
        axis.scatter([p[metric] for p in found], recovered)
        for p in found:
            axis.annotate(f"{p['run']} {p['direction']}", (p[metric], p["recovered"]), fontsize=5)
        axis.set_xlabel(metric)
        axis.set_ylabel("recovered fraction")
    save_figure(fig, out)
    return True

def plot(results: Results, folder: Path) -> dict[str, str]:
    """The figures this section draws into ``folder``: {title: file name}."""
    return {**plotted(draw_training, results, folder, "probes_training.png",
                      "recovered fraction and alignment along training"),
            **plotted(draw, results, folder, "probes.png", "recovered fraction vs alignment probes")}


def summary(results: Results) -> dict:
    return {"probes": probes_summary(results)}


def _reason(pair: str, skipped: str) -> str:
    """Why a pair was not probed, as its table cell: the pair is in its own column; the count and the
    number of samples the probes need stay (a cell cut at a fixed width lost them)."""
    reason = skipped.removeprefix(f"pair {pair}: ")
    return reason if len(reason) <= 160 else reason[:159] + "…"
