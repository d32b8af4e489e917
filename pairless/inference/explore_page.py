"""The page of ``pairless explore`` (Gradio): what it says, the callbacks of its buttons and its layout.

It lists the runs (role, withheld pairs, universe) and says which pairs each one never saw together;
shows a held-out sample in every modality, or an uploaded file; translates it with several runs at once
(sources, a destination or a chain through binders, a schedule) beside the ground truth and each output's
decoded metric; and shows the recipe's report with its figures. The page is served from this machine with
analytics off, so nothing is fetched from the network. The library side (finding runs, the session that
loads every model once, translating, drawing) is :mod:`pairless.inference.explore`; the callbacks below are
plain functions of it, tested without a browser; the command (arguments, serving) is
:mod:`pairless.commands.explore`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from pairless import modalities as registry
from pairless.config import ConfigError
from pairless.inference.catalogue import Catalogue, never_together
from pairless.inference.explore import ExploreSession, Sample, picture, schedule_from_fields
from pairless.inference.generate import PRESETS, schedule_preset
from pairless.modalities import parse_chain

# Set before gradio is imported: no analytics, no version check, no Hugging Face calls.
OFFLINE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "GRADIO_SSR_MODE": "False"}
# The schedule fields the page exposes, in the order the callbacks take them.
FIELDS = ("scheme", "num_steps", "temperature", "top_k", "top_p", "guidance_scale", "chain_condition")
CSS = "#explore-never-seen {border: 2px solid #d97706; border-radius: 8px; padding: 8px 14px; " \
      "background: #fffbeb;} #explore-never-seen * {color: #78350f !important;}"


# ----------------------------------------------------------------------------- what the page says


def runs_markdown(catalogue: Catalogue) -> str:
    """The table of runs: role, what it never saw together, its universe, where it is."""
    lines = ["| run | role | never seen together in training | modalities | folder |",
             "|---|---|---|---|---|"]
    for name, run in catalogue.runs.items():
        never = "; ".join(never_together(run)) or "— (every pair seen)"
        universe = ", ".join(run.universe) if run.universe else "all in its shards"
        lines.append(f"| **{name}** | {run.role} | {never} | {universe} | `{run.path}` |")
    return "\n".join(lines)


def never_seen_markdown(catalogue: Catalogue) -> str:
    """The warning at the top of the page: which model never saw which pairs together."""
    lines = [f"- **{name}** ({run.role}): " + "; ".join(never_together(run))
             for name, run in catalogue.runs.items() if run.withheld]
    if not lines:
        return "Every run saw every pair of its modalities together in training: no output here is zero-shot."
    return ("### ⚠ Pairs these models never saw together\nAn output between such a pair is a **zero-shot** "
            "translation, marked **ZERO-SHOT** below, never a trained one.\n\n" + "\n".join(lines))


def default_direction(session: ExploreSession, shards: Path) -> tuple[list[str], str]:
    """The first withheld pair of any run (the page opens on a zero-shot direction), else the first two
    modalities of the data."""
    names = list(session.data(shards).specs)
    for run in session.catalogue.runs.values():
        for a, b in run.withheld:
            if a in names and b in names:
                return [a], b
    return names[:1], names[1] if len(names) > 1 else names[0]


def datasets(session: ExploreSession) -> dict[str, Path]:
    """{label: shards folder} of the runs' data, in catalogue order."""
    out: dict[str, Path] = {}
    for name, run in session.catalogue.runs.items():
        if run.shards not in out.values():
            out[f"{run.shards.name} (data of {name})"] = run.shards
    return out


# ----------------------------------------------------------------------------- callbacks


def sample_gallery(sample: Sample) -> list[tuple[np.ndarray, str]]:
    """(image, caption) for every modality of the sample."""
    background = sample.values.get("rgb")
    return [(picture(name, value, background=background), name) for name, value in sample.values.items()]


def show_sample(session: ExploreSession, shards: Path, index) -> tuple[Sample, list, str]:
    """The sample at ``index``: (the sample, its gallery, its description)."""
    if index is None or float(index) != int(index):
        raise ValueError(f"sample index {index!r}: a whole number, please")
    sample = session.sample(shards, int(index))
    return sample, sample_gallery(sample), _describe(sample)


def show_upload(session: ExploreSession, shards: Path, modality: str, path) -> tuple[Sample, list, str]:
    """An uploaded file as ``modality``: (the sample, its gallery, its description)."""
    if not path:
        raise ValueError("choose a file to upload first (.png/.jpg image, .npy array or .txt text)")
    if not modality:
        raise ValueError("choose which modality the uploaded file is")
    sample = session.upload(shards, modality, path)
    return sample, sample_gallery(sample), _describe(sample)


def _describe(sample: Sample) -> str:
    truth = "" if sample.ground_truth else " No ground truth: the outputs are not scored."
    return (f"**{sample.label}**: {', '.join(sample.values)} (as the model sees them: tokenized and decoded)."
            + truth)


def preset_values(name: str) -> list:
    """The page's schedule fields (:data:`FIELDS`) filled from a preset."""
    schedule = schedule_preset(name)
    return [getattr(schedule, field) for field in FIELDS]


def preset_for(destination: str, preset: str) -> str:
    """The preset to show for a new destination: the current one if its scheme fits the kind, else the
    study's default for the kind (AR for text, ROAR 8 otherwise)."""
    text = registry.get(destination).is_text if destination else False
    if (schedule_preset(preset).scheme == "ar") == text:
        return preset
    return "ar-caption" if text else "roar8"


def translate(session: ExploreSession, sample: Sample | None, runs: list[str], sources: list[str],
              via: list[str] | None, destination: str, preset: str, *values) -> tuple[list, str]:
    """Generate with every chosen run: (gallery of ground truth + outputs, markdown of status and metrics).

    ``values``: the schedule fields (:data:`FIELDS`) then the seed.
    """
    if sample is None:
        raise ValueError("show a sample or upload a file first")
    if not runs:
        raise ValueError("tick at least one run")
    if not sources or not destination:
        raise ValueError("tick at least one source modality and choose a destination")
    chain = parse_chain("+".join(sources) + ":" + ":".join([*(via or []), destination]))
    named = [name for link in chain for name in link]
    if len(set(named)) != len(named):
        raise ValueError(f"chain {' → '.join('+'.join(link) for link in chain)}: a modality appears twice")
    *fields, seed = values
    schedule = schedule_from_fields(schedule_preset(preset), **dict(zip(FIELDS, fields, strict=True)))
    predictions = session.translate(runs, sample, chain, schedule, int(seed or 0))
    background = sample.values.get("rgb")
    gallery = []
    if sample.ground_truth and destination in sample.values:
        gallery.append((picture(destination, sample.values[destination], background=background),
                        "ground truth"))
    for item in predictions:
        if item.error is None:  # the status first: a long caption is cut at its end
            label = "trained" if item.status == "trained" else item.status.upper()
            gallery.append((picture(destination, item.value, background=background), f"{label}: {item.run}"))
    return gallery, _results_markdown(session, sample, chain, schedule, predictions, destination)


def _results_markdown(session, sample, chain, schedule, predictions, destination) -> str:
    kind = registry.get(destination).kind
    fits = (schedule.scheme == "ar") == (kind == "sequence")
    used = schedule if fits else schedule_preset("ar-caption" if kind == "sequence" else "roar8")
    steps = "" if used.scheme == "ar" else f" {used.num_steps} steps"
    lines = [f"**{' → '.join('+'.join(link) for link in chain)}** on {sample.label}: {used.scheme.upper()}"
             f"{steps}, T={used.temperature:g}, top-k {used.top_k}, top-p {used.top_p:g}, "
             f"CFG {used.guidance_scale:g}"]
    if not fits:
        lines[0] += f" ({schedule.scheme} cannot generate {destination}: the study's default was used)"
    lines += ["", "| run | role | this translation | decoded metric (vs tokenized ground truth) | time |",
              "|---|---|---|---|---|"]
    for item in predictions:
        role = session.catalogue.runs[item.run].role
        status = item.status if item.status == "trained" else f"**{item.status.upper()}**"
        why = "<br>".join(item.status_lines)
        if item.error:
            metric = f"not run: {item.error}"
        elif item.metrics is not None:
            metric = ", ".join(f"{key} {value:.3f}" for key, value in item.metrics.items())
        else:
            metric = "no ground truth"
        if isinstance(item.value, str):
            metric = f"“{item.value}”<br>{metric}"
        lines.append(f"| {item.run} | {role} | {status}: {why} | {metric} | {item.seconds:.2f} s |")
    return "\n".join(lines)


def first_sample(session: ExploreSession, shards: Path, sources: list[str], destination: str) -> int:
    """The first sample of the split holding every source and the destination (a translation with ground
    truth to score), else the first holding every source; a ValueError naming what no sample holds."""
    data = session.data(shards)
    unknown = [name for name in [*sources, destination] if name not in data.present]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not in the {session.split} split of {shards} (it has "
                         f"{', '.join(data.present)})")
    for names in ([*sources, destination], sources):
        holds = np.logical_and.reduce([np.asarray(data.present[name], bool) for name in names])
        if holds.any():
            return int(np.flatnonzero(holds)[0])
    raise ValueError(f"no sample of the {session.split} split of {shards} has {' and '.join(sources)} to "
                     "translate from")


def translate_once(session: ExploreSession, chain: list[list[str]] | None = None, index: int | None = None,
                   preset: str | None = None, seed: int = 0) -> tuple[Sample, list, list, str]:
    """What the page shows after "show sample" and "generate" with every run, without a browser: (the
    sample, its gallery, the gallery of ground truth and outputs, the sample's description and the results
    table). ``chain``: ``[[sources], [via]..., [destination]]``, default the direction the page opens on;
    ``index``: default :func:`first_sample`; ``preset``: default the page's for the destination's kind."""
    shards = next(iter(datasets(session).values()))  # the page's first dataset
    if chain is None:
        sources, destination = default_direction(session, shards)
        chain = [sources, [destination]]
    sources, via, destination = chain[0], [link[0] for link in chain[1:-1]], chain[-1][0]
    if index is None:
        index = first_sample(session, shards, sources, destination)
    sample, inputs, description = show_sample(session, shards, index)
    preset = preset or preset_for(destination, "roar8")
    outputs, table = translate(session, sample, list(session.catalogue.runs), sources, via, destination,
                               preset, *preset_values(preset), seed)
    return sample, inputs, outputs, f"{description}\n\n{table}"


def report_markdown(report: Path | None) -> str:
    """A recipe's report.md without its image lines (the figures are shown in a gallery below it)."""
    if report is None:
        return "This results folder has no report.md (run `pairless report` on it)."
    text = report.read_text(encoding="utf-8")
    return re.sub(r"^!\[[^\]]*\]\([^)]*\)\s*$", "", text, flags=re.M)


# ----------------------------------------------------------------------------- the page


def _gradio():
    """The gradio module, imported with analytics, the version check and Hugging Face calls off."""
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    import gradio

    return gradio


def _guard(function):
    """A callback whose user errors show as a message on the page rather than a traceback."""
    gr = _gradio()

    def call(*args):
        try:
            return function(*args)
        except (ValueError, FileNotFoundError, KeyError, ConfigError) as error:
            raise gr.Error(str(error), duration=None, print_exception=False) from None

    return call


def _schedule_fields(gr, preset: str) -> list:
    """The widgets of :data:`FIELDS`, filled from ``preset``."""
    value = dict(zip(FIELDS, preset_values(preset), strict=True))
    return [gr.Dropdown(["roar", "maskgit", "ar"], value=value["scheme"], label="scheme"),
            gr.Slider(1, 64, value=value["num_steps"], step=1, label="steps"),
            gr.Number(value["temperature"], minimum=0, label="temperature (0 = argmax)"),
            gr.Number(value["top_k"], precision=0, minimum=0, label="top-k (0 = off)"),
            gr.Slider(0.01, 1.0, value=value["top_p"], label="top-p (1 = off)"),
            gr.Number(value["guidance_scale"], label="CFG scale (1 = off)"),
            gr.Radio(["all", "last"], value=value["chain_condition"], label="a chain link conditions on")]


def _input_column(gr, session: ExploreSession, data: dict[str, Path], names: list[str],
                  upload_as: str) -> dict:
    """Where the input comes from: a held-out sample by index or at random, or an upload."""
    widgets = {"shards": gr.Dropdown(list(data), value=next(iter(data)), label="data", visible=len(data) > 1)}
    with gr.Row():
        widgets["index"] = gr.Number(0, precision=0, minimum=0, label=f"{session.split} sample index",
                                     elem_id="explore-sample-index")
        widgets["show"] = gr.Button("show sample", elem_id="explore-show-sample")
        widgets["pick"] = gr.Button("random sample", elem_id="explore-random-sample")
    with gr.Row():
        widgets["upload"] = gr.File(label="or upload an input (.png/.jpg, .npy, .txt)", type="filepath",
                                    file_types=[".png", ".jpg", ".jpeg", ".npy", ".txt", ".json"])
        widgets["upload_as"] = gr.Dropdown(names, value=upload_as, label="the file is")
        widgets["use_upload"] = gr.Button("use upload", elem_id="explore-use-upload")
    widgets["text"] = gr.Markdown(elem_id="explore-sample-text")
    widgets["view"] = gr.Gallery(label="input sample", columns=min(len(names), 7), height=180,
                                 format="png", object_fit="contain", elem_id="explore-sample")
    return widgets


def _translation_column(gr, catalogue: Catalogue, names: list[str], sources: list[str],
                        destination: str) -> dict:
    """What to translate: sources, an optional chain, the destination, the runs and the schedule."""
    runs = [(f"{name} ({run.role})", name) for name, run in catalogue.runs.items()]
    widgets = {"sources": gr.CheckboxGroup(names, value=sources, label="from (sources)"),
               "via": gr.Dropdown(names, value=[], multiselect=True, label="through (a chain, in order)"),
               "destination": gr.Dropdown(names, value=destination, label="to (destination)"),
               "runs": gr.CheckboxGroup(runs, value=list(catalogue.runs), label="runs, side by side")}
    start = preset_for(destination, "roar8")
    widgets["preset"] = gr.Dropdown(list(PRESETS), value=start, label="schedule preset")
    with gr.Accordion("schedule fields", open=False):
        widgets["fields"] = _schedule_fields(gr, start)
    widgets["seed"] = gr.Number(0, precision=0, label="seed")
    widgets["generate"] = gr.Button("generate", variant="primary", elem_id="explore-generate")
    return widgets


def build_app(session: ExploreSession, seed: int = 0):
    """The Gradio page for ``session`` (not launched)."""
    gr = _gradio()

    catalogue, data = session.catalogue, datasets(session)
    sources, destination = default_direction(session, next(iter(data.values())))
    names = list(session.data(next(iter(data.values()))).specs)
    with gr.Blocks(title="pairless explore") as app:
        gr.Markdown("# pairless explorer\n" + runs_markdown(catalogue))
        gr.Markdown(never_seen_markdown(catalogue), elem_id="explore-never-seen")
        state = gr.State(None)
        with gr.Tab("Translate"):
            with gr.Row():
                with gr.Column(scale=1):
                    given = _input_column(gr, session, data, names, sources[0])
                with gr.Column(scale=1):
                    asked = _translation_column(gr, catalogue, names, sources, destination)
            columns = min(max(len(catalogue.runs) + 1, 4), 7)
            # one row of images on a laptop-wide window; more runs than columns scroll
            outputs = gr.Gallery(label="ground truth and each run's output", height=1200 // columns + 50,
                                 columns=columns, fit_columns=False, format="png", object_fit="contain",
                                 elem_id="explore-outputs")
            results = gr.Markdown(elem_id="explore-results")
        for folder in catalogue.results:
            with gr.Tab(f"report: {folder.recipe}"):
                gr.Markdown(report_markdown(folder.report))
                gr.Gallery([(str(path), caption) for caption, path in folder.figures], label="figures",
                           columns=2, height="auto", object_fit="contain")
        _wire(session, data, np.random.default_rng(seed), state, given, asked, outputs, results, app)
    return app


def _wire(session, data, random, state, given, asked, outputs, results, app) -> None:
    """Connect the widgets to the callbacks."""
    view = [state, given["view"], given["text"]]
    shown = _guard(lambda label, number: show_sample(session, data[label], number))
    for event in (given["show"].click, given["index"].submit, app.load, given["shards"].change):
        event(shown, [given["shards"], given["index"]], view)
    pick = _guard(lambda label: int(random.integers(len(session.data(data[label])))))
    given["pick"].click(pick, [given["shards"]], [given["index"]]).then(
        shown, [given["shards"], given["index"]], view)
    uploaded = _guard(lambda label, kind, path: show_upload(session, data[label], kind, path))
    given["use_upload"].click(uploaded, [given["shards"], given["upload_as"], given["upload"]], view)
    fields = asked["fields"]
    asked["preset"].input(preset_values, [asked["preset"]], fields)

    def on_destination(destination, preset):
        chosen = preset_for(destination, preset)
        return [chosen, *preset_values(chosen)]

    asked["destination"].input(on_destination, [asked["destination"], asked["preset"]],
                               [asked["preset"], *fields])
    inputs = [state, asked["runs"], asked["sources"], asked["via"], asked["destination"], asked["preset"],
              *fields, asked["seed"]]
    asked["generate"].click(_guard(lambda *args: translate(session, *args)), inputs, [outputs, results])
