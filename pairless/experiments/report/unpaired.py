"""The own-data report's section on the pairs never recorded together.

For a pair with no sample holding both modalities in training there is no ground truth for its
translation (unless paired samples were put in val/ only, where they are evaluated like any direction).
The section says so first, then gives what can be measured (pairless.inference.unpaired), each labelled
for what it is, with a plain verdict where a baseline shows the measure says nothing.
"""

from __future__ import annotations

from pairless.experiments.report.markdown import arrow, number, table
from pairless.experiments.report.quality import compare, learned_directions, main_metric
from pairless.experiments.report.rows import CHAIN_MARGIN
from pairless.experiments.results import Results
from pairless.modalities import Pair

# A verdict of the unpaired section needs this many held-out samples: at 4 a difference of 5% is noise.
MIN_VERDICT_SAMPLES = 16


def metric_for(modality: str, metrics: dict) -> tuple[str | None, str]:
    """(metric name, "lower"/"higher" better) to show for ``modality`` among ``metrics``."""
    return main_metric(modality, set(metrics))


def _refusal(subject: str, samples: int | None, rests_on: list[str], learned: dict | None,
             run: str | None) -> str | None:
    """Why no verdict may be given (too few samples, a direction it rests on not learned), or None."""
    if samples is not None and samples < MIN_VERDICT_SAMPLES:
        return (f"{subject} **no verdict**: {samples} held-out samples, fewer than the "
                f"{MIN_VERDICT_SAMPLES} a verdict needs.")
    for direction in rests_on:
        row = (learned or {}).get((direction, run))
        name = arrow(direction)
        if row is None:
            return (f"{subject} **no verdict**: it rests on {name}, which has no measured quality (no "
                    "held-out sample with both).")
        if not row["learned"]:
            why = row["reason"] if row["reason"] != "CE ratio" else f"CE ratio {row['ratio']:.2f}"
            return f"{subject} **no verdict**: it rests on {name}, which the run has not learned ({why})."
    return None


def unpaired_lines(direction: str, entry: dict, learned: dict | None = None) -> list[str]:
    """The verdicts of one direction's measures, in words, each naming the directions it rests on; a
    verdict resting on a direction not learned (``learned``: :func:`learned_directions`), or on fewer than
    MIN_VERDICT_SAMPLES samples, is refused."""
    src, dst = Pair.parse(direction)
    run = entry.get("run")
    lines = []
    for bridge, values in (entry.get("bridges") or {}).items():
        if "direct" not in values:
            lines.append(f"No held-out sample has both {src} and {bridge}: no proxy through {bridge}.")
            continue
        metric, better = metric_for(dst, values["direct"])
        if metric is None:
            continue
        subject = f"Through {bridge} (rests on {bridge} → {dst}, the proxy; {values['num_samples']} samples):"
        refused = _refusal(subject, values.get("num_samples"), [f"{bridge}:{dst}"], learned, run)
        lines.append(refused or _verdict(
            f"{subject} the direct {src} → {dst} is", "closer to the proxy than a generation "
            "with no input", metric, better, values["direct"][metric], values["no_input"][metric],
            f"it uses its input, as far as {bridge} → {dst} can tell", "it may ignore its input"))
    cycle = entry.get("cycle") or {}
    metric, better = metric_for(src, cycle.get("metrics", {}))
    if metric is not None:
        subject = (f"Cycle {src} → {dst} → {src} (rests on {src} → {dst} and {dst} → {src}, neither with "
                   f"ground truth; {entry.get('num_samples')} samples):")
        refused = _refusal(subject, entry.get("num_samples"), [], learned, run)
        lines.append(refused or _verdict(
            subject, f"closer to the real {src} than to another sample's", metric,
            better, cycle["metrics"][metric], cycle["shuffled"][metric],
            f"some of the input survives the trip through {dst}",
            f"nothing of the input is shown to be carried through {dst}"))
    return lines


def _verdict(subject: str, claim: str, metric: str, better: str, value: float, baseline: float,
             if_better: str, if_not: str) -> str:
    """``subject claim (metric a vs b): if_better`` or, within the margin or worse, the claim negated."""
    if compare(value, baseline, better) == "better":
        return f"{subject} {claim} ({metric} {value:.3f} vs {baseline:.3f}): {if_better}."
    return (f"{subject} **no {claim}** ({metric} {value:.3f} vs {baseline:.3f}; a difference within "
            f"{CHAIN_MARGIN:.0%} counts as none): {if_not}.")


def markdown(results: Results) -> list[str]:
    unpaired = results.unpaired
    if not unpaired:
        return []
    evaluated = set(results.directions)
    learned = learned_directions(results)
    parts = ["## Pairs never recorded together", "",
             "No training sample has both modalities of these pairs, so the model never saw them together. "
             "Where no held-out sample has both either, **there is no ground truth for the translation**: no "
             "cross-entropy and no decoded metric can be computed. What can be measured instead, on held-out "
             "samples that have the source, each for what it is:", "",
             "- *proxy through a bridge*: the destination predicted from a sample's real bridge modality (a "
             "pair the model saw) stands in for the missing ground truth. Direct, chained and no-input "
             "predictions are scored against it in the destination's own metric. It is only as good as the "
             "bridge → destination translation, and blind to what the source knows that the bridge does not.",
             "- *no input*: the destination generated from nothing; a direct translation no closer to the "
             "proxy than this ignores its input.",
             "- *cycle*: source → destination → source, against the real source and against another "
             "sample's (shuffled control).", ""]
    for direction, entry in unpaired.items():
        src, dst = Pair.parse(direction)
        title = f"### {src} → {dst}"
        if "skipped" in entry:
            parts += [title, "", f"Not measured: {entry['skipped']}", ""]
            continue
        parts += [title, "", f"Run `{entry['run']}`, {entry['num_samples']} held-out samples with {src}."]
        if direction in evaluated:
            parts += [f"Held-out samples with both exist: {src} → {dst} is also evaluated with ground truth "
                      "in the tables above (a true zero-shot measurement)."]
        parts += [""]
        rows = []
        for bridge, values in (entry.get("bridges") or {}).items():
            if "direct" not in values:
                continue
            metric, better = metric_for(dst, values["direct"])
            rows.append([bridge, str(values["num_samples"]), f"{metric} ({better} is better)",
                         number(values["direct"].get(metric)), number(values["chained"].get(metric)),
                         number(values["no_input"].get(metric))])
        if rows:
            parts += [table(["bridge (proxy from the real one)", "samples", "metric", "direct",
                              "chained via the bridge", "no input"], rows), ""]
        else:
            parts += [f"No bridge: no modality was seen with both {src} and {dst}, so there is no proxy.", ""]
        cycle = entry.get("cycle") or {}
        metric, better = metric_for(src, cycle.get("metrics", {}))
        if metric is not None:
            parts += [table(["cycle", "metric", "against the real source", "against another sample's"],
                             [[f"{src} → {dst} → {src}", f"{metric} ({better} is better)",
                               number(cycle["metrics"][metric]), number(cycle["shuffled"][metric])]]), ""]
        parts += [f"- {line}" for line in unpaired_lines(direction, entry, learned)]
        figure = entry.get("figure")  # relative to the recipe folder, where report.md is
        if figure:
            parts += ["", f"![{src} → {dst}, no ground truth]({figure})"]
        parts += [""]
    parts += ["**What would settle it.** Record some samples with both modalities and put them in `val/` "
              "only: this recipe then evaluates the translation against them (every direction with at least "
              "2 held-out samples that have both is evaluated), while training still never sees the pair. "
              "How many to record: the `pairs-curve` recipe measures how many paired training samples "
              "zero-shot translation is worth on the built-in world (docs/study.md in pairless).", ""]
    return parts
