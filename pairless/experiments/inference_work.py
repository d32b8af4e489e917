"""What the runner's inference stages execute, counted for the plan: per stage the forward passes of each
run's model at the real sample counts and token counts, and the fixed work around them (model loads,
figures drawn).

Counted as :mod:`pairless.experiments.evaluation_stages` runs them:
- evaluation: per run and direction, the held-out samples that hold every modality of the direction (at most
  ``eval_samples``; the world's val split, or the user folder's val listing), one conditional pass and one
  no-input pass (shared by the directions of one destination);
- regions: the same two passes over ``region_samples`` for image destinations (with semseg in the shards,
  whether or not the run trained on it) and captions, the no-input pass per direction; none on a user's
  folder;
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

from pairless.modalities import Pair, parse_direction
from pairless.training.compute import forward_flops
from pairless.utils.storage import is_complete

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
        train = split_counts(config, "train", [*sources], [destination])
        if destination in specs:
            work.add(model_config, specs, _tokens(specs, sources), specs[destination].num_tokens, train,
                     _passes(stage.schedule, specs[destination]) * (2 if stage.via else 1))
            # the consistency score: the real source given the generated destination, and given nothing
            work.add(model_config, specs, specs[destination].num_tokens, _tokens(specs, sources), train)
            work.add(model_config, specs, 0, _tokens(specs, sources), train)
        return work


class CacheState:
    """What the runner will find done and skip, asked per thing it caches: by default the files under the
    plan's folders, as the runner looks for them (a complete stage, run or pseudo-pair folder, a per-run
    evaluation, region or probe file, a figure folder whose request matches). ``done``: assume instead that
    exactly these were made before (run names, and the stage keys ``world``, ``tokenizers``, ``shards``),
    with everything made from those runs alone (their pseudo-pair shards, evaluations, regions, probes,
    snapshots, and the figures of only such runs), as a second invocation of a recipe finds it
    (benchmarks/plan_estimate.py, for recorded results whose cache is elsewhere)."""

    def __init__(self, plan, done: set[str] | None = None):
        self.plan = plan
        self.done_runs = done

    def stage(self, key: str, path) -> bool:
        """A data stage's folder (``world``, ``tokenizers``, ``shards``) complete."""
        return key in self.done_runs if self.done_runs is not None else path is not None and is_complete(path)

    def run(self, name: str) -> bool:
        """The run (or adapter) ``name`` trained."""
        if self.done_runs is not None:
            return name in self.done_runs
        return is_complete(self.plan.runs[name])

    def pseudo(self, run) -> bool:
        return run.name in self.done_runs if self.done_runs is not None else is_complete(
            self.plan.pseudo_shards(run))

    def file(self, name: str, path) -> bool:
        """A per-run result file (evaluation, regions, probes) of run ``name``."""
        return name in self.done_runs if self.done_runs is not None else path.is_file()

    def figure(self, runs: list[str], out, src: str, dst: str, schedule: str, num: int, figure_rows: int,
               no_input: bool) -> bool:
        """A generation grid of ``runs``: cached when its folder holds the output of the same request (the
        runs' weights included: a retrained run draws anew), as :func:`~pairless.inference.translations.
        generate_and_score` checks it."""
        if self.done_runs is not None:
            return set(runs) <= self.done_runs
        if not all(is_complete(self.plan.runs[name]) for name in runs):
            return False
        from pairless.inference.translations import generation_cached, generation_request

        request = generation_request({name: self.plan.runs[name] for name in runs}, src, dst, schedule, num,
                                     self.plan.tokenizers, self.plan.shards, figure_rows, no_input=no_input)
        return generation_cached(out, request)


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


def split_counts(config, split: str, needed: list[str], absent: list[str] = ()) -> int:
    """Samples of ``split`` holding every modality of ``needed`` (and, with ``absent``, none of those):
    the world's split size (half of it with ``absent``: the samples whose view hides the destination),
    or counted in the user folder's listing."""
    if config.data is None:  # every scene has every modality; a withheld pair's two views split it in two
        val = int(round(config.world.num_scenes * config.world.val_fraction))
        count = val if split == "val" else config.world.num_scenes - val
        return count // 2 if absent else count
    from pairless.data.co_occurrence import listed_presence

    try:
        _, present = listed_presence(config.data, split)
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


def inference_work(plan, specs: dict, trained: dict,
                   cache: CacheState | None = None) -> dict[str, InferenceWork]:
    """{stage key: its work} for the inference stages of ``plan`` (see the module docstring); ``trained``:
    {run name: (TrainConfig, the run's specs)}. What ``cache`` (default: the plan's folders) holds is left
    out, as the runner skips it."""
    config = plan.config
    cache = cache if cache is not None else CacheState(plan)
    work = {key: InferenceWork() for key in ("evaluation", "regions", "probes", "generation")}
    every_run = [*config.expanded_runs(), *config.adapter_runs()]
    for run in every_run:
        if run.name not in trained:
            continue
        model, run_specs = trained[run.name][0].model, trained[run.name][1]
        directions = _run_directions(run, config.directions, run_specs)
        if not cache.file(run.name, plan.eval_file(run.name)):
            _evaluation(work["evaluation"], config, model, run_specs, directions, config.eval_samples)
        regions_done = cache.file(run.name, plan.region_file(run.name))
        if config.region_samples and config.data is None and not regions_done:
            # as region_directions: semseg in the shards (not the run's universe) splits an image's tokens
            regional = [(sources, destination) for sources, destination in directions
                        if (run_specs[destination].kind == "image" and "semseg" in specs)
                        or destination == "caption"]
            _evaluation(work["regions"], config, model, run_specs, regional, config.region_samples,
                        shared_no_input=False)
        if config.probe_samples and not cache.file(run.name, plan.probe_file(run.name)):
            _probes(work["probes"], config, run, model, run_specs)
        for fraction in run.snapshots:  # each snapshot's evaluation and probes, cached like the final ones
            tag = f"{fraction:g}"
            snapshots = work.setdefault("snapshots", InferenceWork())
            if not cache.file(run.name, plan.eval_file(run.name, tag)):
                _evaluation(snapshots, config, model, run_specs, directions, config.eval_samples)
            if config.probe_samples and not cache.file(run.name, plan.probe_file(run.name, tag)):
                _probes(snapshots, config, run, model, run_specs)
    _generation(work["generation"], plan, trained, cache)
    if config.unpaired and config.runs and config.runs[0].name in trained:
        work["unpaired"] = _unpaired(config, *trained[config.runs[0].name])
    return {key: value for key, value in work.items() if value.samples or value.loads}


def _probes(work: InferenceWork, config, run, model, specs) -> None:
    """The encoder over both modalities of each probed pair, and the alignment metrics per encoder layer
    (and once more against a shuffled pairing)."""
    from pairless.experiments.evaluation_stages import probe_pairs

    work.loads += 1
    for pair in probe_pairs(run, config.directions):
        first, second = Pair.parse(pair)
        count = min(config.probe_samples, split_counts(config, "val", [first, second]))
        for name in (first, second):
            if name in specs:
                work.add(model, specs, specs[name].num_tokens, 0, count)
        work.alignments.append((count, model.dim, model.encoder_layers + 1))


def _evaluation(work: InferenceWork, config, model, specs, directions, limit: int,
                shared_no_input: bool = True) -> None:
    """Conditional passes per direction, one no-input pass per destination (as translation_ce shares it;
    ``shared_no_input`` False: per direction, as region_ce makes it)."""
    if not directions:
        return
    work.loads += 1
    unconditional = set()
    for sources, destination in directions:
        count = min(limit, split_counts(config, "val", [*sources, destination]))
        work.add(model, specs, _tokens(specs, sources), specs[destination].num_tokens, count)
        if destination not in unconditional or not shared_no_input:
            unconditional.add(destination)
            work.add(model, specs, 0, specs[destination].num_tokens, count)


def _generation(work: InferenceWork, plan, trained: dict, cache: CacheState) -> None:
    """Each figure's grid (its runs, with the no-input generation) and the grid of its scored runs, as
    :func:`pairless.experiments.evaluation_stages.make_figures` draws them, unless cached."""
    config = plan.config
    for figure in config.figures:
        runs = [name for name in figure.runs if name in trained]
        if not runs:
            continue
        scored = [name for name in figure.scored_runs if name in trained and name not in runs]
        num = max(figure.num, config.decoded_samples)
        folder = plan.recipe_dir / "figures"
        if figure.via is not None:
            chained = folder / f"{figure.src}-to-{figure.via}-to-{figure.dst}"
            grids = [(runs, chained, f"{figure.via}:{figure.dst}")]
        else:
            out = folder / f"{figure.src}-to-{figure.dst}"
            grids = [(runs, out, figure.dst), (scored, out.with_name(f"{out.name}-scored"), figure.dst)]
        for names, out, dst in grids:
            if names and not cache.figure(names, out, figure.src, dst, figure.schedule, num, figure.num,
                                          no_input=figure.via is None):
                work.figures += 1
                for name in names:
                    _figure_run(work, config, figure, *trained[name], num)


def _figure_run(work: InferenceWork, config, figure, train, specs, num: int) -> None:
    """One run's generations of a figure: each link of its chain, and the no-input generation it is scored
    against."""
    chain = [figure.dst] if figure.via is None else [figure.via, figure.dst]
    if any(link not in specs for link in chain) or figure.src not in specs:
        return
    model = train.model
    work.loads += 1
    count = min(num, split_counts(config, "val", [figure.src, figure.dst]))
    inputs = specs[figure.src].num_tokens
    for link in chain:
        work.add(model, specs, inputs, specs[link].num_tokens, count, _passes(figure.schedule, specs[link]))
        inputs += specs[link].num_tokens
    if figure.via is None:  # the no-input generation each run is scored against
        work.add(model, specs, 0, specs[figure.dst].num_tokens, count,
                 _passes(figure.schedule, specs[figure.dst]))


def _unpaired(config, train, specs) -> InferenceWork:
    work = InferenceWork()
    model = train.model
    for pair in config.unpaired:
        first, second = Pair.parse(pair)
        bridges = [bridge for bridge in config.bridges.get(pair, []) if bridge in specs]
        for src, dst in ((first, second), (second, first)):
            if src not in specs or dst not in specs:
                continue
            work.loads += 1
            work.figures += 1
            count = min(max(config.decoded_samples, 1), split_counts(config, "val", [src]))
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
