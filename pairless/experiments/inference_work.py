"""What the runner's inference stages execute, counted for the plan: per stage the forward passes of each
run's model at the real sample counts and token counts, and the fixed work around them (model loads,
figures drawn).

Counted as :mod:`pairless.experiments.stages` runs them:
- evaluation: per run and direction, the held-out samples that hold every modality of the direction (at most
  ``eval_samples``; the world's val split, or the user folder's val listing), one conditional pass and one
  no-input pass (shared by the directions of one destination);
- regions: the same two passes over ``region_samples`` for image destinations (with semseg) and captions;
  none on a user's folder;
- probes: per modality pair of the single-source directions, the encoder alone over both modalities, and
  the alignment metrics per encoder layer (and a shuffled control), timed on random sets of that size;
- generation: per figure, its runs (and the no-input generation) over ``max(num, decoded_samples)``
  samples, one pass per generation step (ROAR N: N, AR: one per target token; x2 with guidance), chained
  figures twice; one grid drawn per figure;
- unpaired: per direction of a pair never recorded together, direct, no-input, per bridge the link, the
  chained and the proxy generations, and the cycle back; one grid each;
- pseudo-pairs: one generation per training sample that lacks the destination, and its two consistency
  passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from pairless.modalities import parse_direction
from pairless.training.compute import forward_flops

FULL, ENCODER = "full", "encoder"


@dataclass
class InferenceWork:
    """Forward FLOPs per model (its ModelConfig as JSON, with the specs it runs on) and fixed work."""

    flops: dict[str, tuple[object, dict, float]] = field(default_factory=dict)
    samples: int = 0  # samples passed through a model (summed over passes), for the printed line
    loads: int = 0  # run models loaded
    figures: int = 0  # grids drawn
    alignments: list[tuple[int, int, int]] = field(default_factory=list)  # (samples, dim, how many)

    def add(self, model_config, specs: dict, inputs: int, targets: int, samples: int,
            passes: int = 1) -> None:
        if samples <= 0 or passes <= 0:
            return
        key = model_config.model_dump_json()
        per_sample = forward_flops(model_config, specs, inputs, targets, micro_batch=min(samples, 128))
        previous = self.flops.get(key, (model_config, specs, 0.0))[2]
        self.flops[key] = (model_config, specs, previous + per_sample * samples * passes)
        self.samples += samples * passes

    def describe(self) -> str:
        total = sum(flops for _, _, flops in self.flops.values())
        figures = f", {self.figures} figures" if self.figures else ""
        return (f"{self.samples:,} sample passes, {total / 1e12:,.2f} TFLOP, {self.loads} model loads"
                f"{figures}")

    @staticmethod
    def pseudo_pairs(model_config, specs: dict, stage, plan, config) -> InferenceWork:
        """The generations of one pseudo-pair stage: every training sample without the destination."""
        work = InferenceWork(loads=1)
        sources, destination = parse_direction(stage.direction)
        train = _split_counts(config, "train", [*sources], [destination])
        if destination in specs:
            work.add(model_config, specs, _tokens(specs, sources), specs[destination].num_tokens, train,
                     _passes(stage.schedule, specs[destination]) * (2 if stage.via else 1))
            # the consistency score: the real source given the generated destination, and given nothing
            work.add(model_config, specs, specs[destination].num_tokens, _tokens(specs, sources), train)
            work.add(model_config, specs, 0, _tokens(specs, sources), train)
        return work


def _tokens(specs: dict, names) -> int:
    return sum(specs[name].num_tokens for name in names if name in specs)


def _passes(schedule_name: str, spec) -> int:
    """Decoder passes of a generation schedule for one destination (x2 with classifier-free guidance)."""
    from pairless.inference.generate import schedule_preset

    match = re.match(r"[a-z]+(\d+)", schedule_name)
    try:
        schedule = schedule_preset(schedule_name)
    except Exception:  # a schedule the plan does not know: ROAR with its number of steps
        steps = int(match.group(1)) if match else 8
        return steps
    steps = spec.num_tokens if schedule.scheme == "ar" else schedule.num_steps
    guided = schedule.guidance_scale != 1.0 or schedule.guidance_scale_final != 1.0
    return steps * (2 if guided else 1)


def _split_counts(config, split: str, needed: list[str], absent: list[str] = ()) -> int:
    """Samples of ``split`` holding every modality of ``needed`` (and, with ``absent``, none of those):
    the world's split size (half of it with ``absent``: the samples whose view hides the destination),
    or counted in the user folder's listing."""
    if config.data is None:  # every scene has every modality; a withheld pair's two views split it in two
        val = int(round(config.world.num_scenes * config.world.val_fraction))
        count = val if split == "val" else config.world.num_scenes - val
        return count // 2 if absent else count
    from pairless.data.co_occurrence import listed_presence as presence

    try:
        _, present = presence(config.data, split)
    except (OSError, ValueError):
        return 0
    if any(name not in present for name in needed):
        return 0
    mask = np.logical_and.reduce([np.asarray(present[name], bool) for name in needed])
    for name in absent:
        if name in present:
            mask &= ~np.asarray(present[name], bool)
    return int(mask.sum())


def _run_directions(run, directions: list[str], specs: dict) -> list[tuple[list[str], str]]:
    out = []
    for text in directions:
        sources, destination = parse_direction(text)
        names = {*sources, destination}
        if all(name in specs for name in names) and (run.universe is None or names <= set(run.universe)):
            out.append((sources, destination))
    return out


def inference_work(plan, specs: dict, trained: dict) -> dict[str, InferenceWork]:
    """{stage key: its work} for the inference stages of ``plan`` (see the module docstring); ``trained``:
    {run name: (TrainConfig, the run's specs)}. Runs whose results are cached are left out."""
    from pairless.experiments.stages import probe_pairs

    config = plan.config
    work = {key: InferenceWork() for key in ("evaluation", "regions", "probes", "generation")}
    every_run = [*config.expanded_runs(), *config.adapter_runs()]
    for run in every_run:
        if run.name not in trained:
            continue
        model, run_specs = trained[run.name][0].model, trained[run.name][1]
        directions = _run_directions(run, config.directions, run_specs)
        if not plan.eval_file(run.name).is_file():
            _evaluation(work["evaluation"], config, model, run_specs, directions, config.eval_samples)
        if config.region_samples and config.data is None and not plan.region_file(run.name).is_file():
            regional = [(sources, destination) for sources, destination in directions
                        if (run_specs[destination].kind == "image" and "semseg" in run_specs)
                        or destination == "caption"]
            _evaluation(work["regions"], config, model, run_specs, regional, config.region_samples)
        if config.probe_samples and not plan.probe_file(run.name).is_file():
            work["probes"].loads += 1
            for pair in probe_pairs(run, config.directions):
                first, second = pair.split(":")
                count = min(config.probe_samples, _split_counts(config, "val", [first, second]))
                for name in (first, second):
                    if name in run_specs:
                        work["probes"].add(model, run_specs, run_specs[name].num_tokens, 0, count)
                # the metrics per encoder layer, and once more against a shuffled pairing
                work["probes"].alignments.append((count, model.dim, model.encoder_layers + 1))
        if run.snapshots:
            snapshots = work.setdefault("snapshots", InferenceWork())
            for _ in run.snapshots:
                _evaluation(snapshots, config, model, run_specs, directions, config.eval_samples)
    _generation(work["generation"], config, trained)
    if config.unpaired and config.runs and config.runs[0].name in trained:
        work["unpaired"] = _unpaired(config, *trained[config.runs[0].name])
    return {key: value for key, value in work.items() if value.samples or value.loads}


def _evaluation(work: InferenceWork, config, model, specs, directions, limit: int) -> None:
    """Conditional passes per direction, one no-input pass per destination (as translation_ce shares it)."""
    if not directions:
        return
    work.loads += 1
    unconditional = set()
    for sources, destination in directions:
        count = min(limit, _split_counts(config, "val", [*sources, destination]))
        work.add(model, specs, _tokens(specs, sources), specs[destination].num_tokens, count)
        if destination not in unconditional:
            unconditional.add(destination)
            work.add(model, specs, 0, specs[destination].num_tokens, count)


def _generation(work: InferenceWork, config, trained: dict) -> None:
    for figure in config.figures:
        runs = [name for name in figure.runs + figure.scored_runs if name in trained]
        if not runs:
            continue
        work.figures += 1 + bool(set(figure.scored_runs) & set(trained))
        chain = [figure.dst] if figure.via is None else [figure.via, figure.dst]
        for name in runs:
            train, specs = trained[name]
            model = train.model
            if any(link not in specs for link in chain) or figure.src not in specs:
                continue
            work.loads += 1
            count = min(max(figure.num, config.decoded_samples),
                        _split_counts(config, "val", [figure.src, figure.dst]))
            inputs = specs[figure.src].num_tokens
            for link in chain:
                work.add(model, specs, inputs, specs[link].num_tokens, count,
                         _passes(figure.schedule, specs[link]))
                inputs += specs[link].num_tokens
            if figure.via is None:  # the no-input generation each run is scored against
                work.add(model, specs, 0, specs[figure.dst].num_tokens, count,
                         _passes(figure.schedule, specs[figure.dst]))


def _unpaired(config, train, specs) -> InferenceWork:
    work = InferenceWork()
    model = train.model
    for pair in config.unpaired:
        first, second = pair.split(":")
        bridges = [bridge for bridge in config.bridges.get(pair, []) if bridge in specs]
        for src, dst in ((first, second), (second, first)):
            if src not in specs or dst not in specs:
                continue
            work.loads += 1
            work.figures += 1
            count = min(max(config.decoded_samples, 1), _split_counts(config, "val", [src]))
            roar = _passes("roar8", specs[dst])
            work.add(model, specs, specs[src].num_tokens, specs[dst].num_tokens, count, roar)  # direct
            work.add(model, specs, 0, specs[dst].num_tokens, count, roar)  # no input
            for bridge in bridges:
                link = _passes("roar8", specs[bridge])
                work.add(model, specs, specs[src].num_tokens, specs[bridge].num_tokens, count, link)
                work.add(model, specs, specs[src].num_tokens + specs[bridge].num_tokens,
                         specs[dst].num_tokens, count, roar)  # chained
                work.add(model, specs, specs[bridge].num_tokens, specs[dst].num_tokens, count, roar)  # proxy
            work.add(model, specs, specs[dst].num_tokens, specs[src].num_tokens, count,
                     _passes("roar8", specs[src]))  # the cycle back
    return work
