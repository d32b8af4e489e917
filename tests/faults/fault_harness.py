"""Fault injection: SIGKILL a stage at random moments, re-run it, compare with an uninterrupted run.

Used by ``tests/faults/test_faults.py`` (a few kills per stage, in CI) and by
``scripts/fault_injection.py`` (the full harness, >= 20 kill points per
stage). For each stage (a :class:`StageCase`, see ``fault_cases``):

1. run it once uninterrupted in its work folder, time it, and fingerprint
   its outputs (the reference);
2. for each trial: empty the work folder and prepare its inputs again, start
   the stage, SIGKILL its whole process group at a seeded random moment
   between the reference's first write into the work folder and its end
   (kill points inside interpreter start-up would test nothing: a stage
   like ``report`` spends most of its few seconds importing; every other
   trial also kills the first
   re-run, so a resumed run is itself interrupted), then run it again to
   completion. The stage must detect the partial output and discard or
   resume it;
3. compare the fingerprint with the reference and re-check every
   ``COMPLETE.json`` content hash under the outputs.

With ``load=True`` (background-load mode) every trial, its kills and its re-run, runs beside a CPU-burning
process the harness starts and stops itself (:class:`BackgroundLoad`: one busy core, bounded in time), while
the reference ran on a quiet machine, and the stages run at their default thread count (no
``OMP_NUM_THREADS=1``): a stage whose results depend on the machine's load (a thread count chosen from it,
issue 30) shows up as a mismatch.

Every trial runs in the same folder, so absolute paths recorded in outputs
(resolved configs, manifests) match the reference. Files whose bytes
legitimately depend on wall-clock time (logs' throughput, timings) are left
out or normalised per case. The summary counts kills (the process was still
running when the signal came), resumes (re-runs that finished) and
mismatches (outputs that differ or re-runs that failed; must be 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pairless.utils.storage import COMPLETE_MARKER, verify_complete
from pairless.utils.tensor_files import canonical_safetensors


def _never(relative: Path) -> bool:
    return False


def file_digests(
    folder: Path,
    outputs: tuple[str, ...],
    ignore: Callable[[Path], bool] = _never,
    normalize: Callable[[Path, bytes], bytes] | None = None,
) -> dict[str, str]:
    """SHA-256 of each file at ``outputs`` (files or folders) under ``folder``, by relative path.

    Hidden files (staging leftovers, temporary files) and ``*.lock`` are left
    out, and so is every path for which ``ignore(relative path)`` is true;
    ``normalize(relative path, bytes)`` may rewrite a file's bytes first
    (e.g. drop a throughput column from a log); safetensors files are
    compared through :func:`canonical_safetensors`. A missing output is
    recorded as such.
    """
    digests: dict[str, str] = {}
    for output in outputs:
        root = folder / output
        if not root.exists():
            digests[output] = "missing"
            continue
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or path.name.endswith(".lock"):
                continue
            if ignore(relative):
                continue
            data = path.read_bytes()
            if path.suffix == ".safetensors":
                data = canonical_safetensors(data)
            if normalize is not None:
                data = normalize(relative, data)
            digests[relative.as_posix()] = hashlib.sha256(data).hexdigest()
    return digests


def fingerprint(
    folder: Path,
    outputs: tuple[str, ...],
    ignore: Callable[[Path], bool] = _never,
    normalize: Callable[[Path, bytes], bytes] | None = None,
) -> str:
    """One SHA-256 over :func:`file_digests` (paths and contents)."""
    digests = file_digests(folder, outputs, ignore, normalize)
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()


def differing_files(reference: dict[str, str], other: dict[str, str]) -> list[str]:
    """Relative paths whose content differs, or that exist on one side only."""
    return sorted(name for name in set(reference) | set(other) if reference.get(name) != other.get(name))


def check_markers(folder: Path, outputs: tuple[str, ...], skip: Callable[[Path], bool] = _never) -> list[str]:
    """Problems with the ``COMPLETE.json`` markers under ``outputs``: content hashes that do not match.

    ``skip(relative folder)`` leaves out folders whose marker is known to go
    stale after completion (a case names the reason).
    """
    problems = []
    for output in outputs:
        root = folder / output
        if not root.is_dir():
            continue
        for marker in sorted(root.rglob(COMPLETE_MARKER)):
            if any(part.startswith(".") for part in marker.relative_to(folder).parts) \
                    or skip(marker.parent.relative_to(folder)):
                continue
            try:
                verify_complete(marker.parent)
            except ValueError as error:
                problems.append(str(error))
    return problems


@dataclass
class StageCase:
    """One stage under test: its command (run with the work folder as cwd) and what to compare.

    ``prepare(work)`` fills an empty work folder with the stage's inputs
    (typically symlinks to, or copies of, outputs made once beforehand).
    """

    name: str
    command: list[str]
    outputs: tuple[str, ...]
    prepare: Callable[[Path], None] | None = None
    ignore: Callable[[Path], bool] = _never
    normalize: Callable[[Path, bytes], bytes] | None = None
    stale_markers: Callable[[Path], bool] = _never  # folders whose COMPLETE.json is not re-checked
    timeout: float = 600.0


@dataclass
class StageReport:
    """What happened to one stage: counts for the summary and a line per problem."""

    name: str
    trials: int = 0
    kills: int = 0
    resumes: int = 0
    mismatches: int = 0
    finished_before_kill: int = 0
    load: bool = False  # the trials ran beside a CPU-burning process (background-load mode)
    reference_seconds: float = 0.0
    first_write_seconds: float = 0.0  # when the reference run first changed anything in its work folder
    details: list[str] = field(default_factory=list)


def _environment(default_threads: bool = False) -> dict[str, str]:
    """Same hashing, no progress bars; one CPU thread in every run (short stages on a 2-core machine shared
    with the test workers), or, with ``default_threads``, each stage's own default count (the load mode:
    that count must not move with the load)."""
    environment = {**os.environ, "PYTHONHASHSEED": "0", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    if default_threads:
        del environment["OMP_NUM_THREADS"]
    return environment


# A CPU-burning process stops by itself after this long, should the harness that started it die first.
LOAD_LIMIT_SECONDS = 1800.0
BURN = ("import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n"
        "    sum(range(1000))\n")


class BackgroundLoad:
    """One busy core beside the stage for the duration of a ``with`` block (nothing when not ``active``).

    The burner is a separate process in its own session (a kill of the stage's process group leaves it
    alone), stopped on leaving the block and bounded by :data:`LOAD_LIMIT_SECONDS` in any case.
    """

    def __init__(self, active: bool = True, limit: float = LOAD_LIMIT_SECONDS):
        self.active, self.limit = active, limit
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> BackgroundLoad:
        if self.active:
            self.process = subprocess.Popen([sys.executable, "-c", BURN.format(limit=self.limit)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __exit__(self, *exc_info) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _run(command: list[str], work: Path, timeout: float, default_threads: bool = False
         ) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=work, env=_environment(default_threads), capture_output=True,
                          text=True, timeout=timeout)


def _snapshot(work: Path) -> dict[str, int]:
    """Modification times of everything under ``work`` (symlinked inputs are not followed)."""
    state = {}
    for folder, dirs, files in os.walk(work):
        for name in [".", *dirs, *files]:
            path = os.path.join(folder, name)
            try:
                state[path] = os.lstat(path).st_mtime_ns
            except FileNotFoundError:
                pass
    return state


def run_reference(command: list[str], work: Path, timeout: float,
                  default_threads: bool = False) -> tuple[int, str, float, float]:
    """Run ``command`` to the end in ``work``: (exit code, stderr tail, seconds, seconds to its first write).

    The work folder is polled until something in it changes (a lock, a staging folder, an output), which
    marks the end of start-up; polling stops there, so it costs the stage nothing afterwards.
    """
    before = _snapshot(work)
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=work, env=_environment(default_threads),
                                   stdout=subprocess.DEVNULL, stderr=errors)
        first_write = None
        while process.poll() is None:
            elapsed = time.perf_counter() - started
            if elapsed > timeout:
                process.kill()
                process.wait()
                raise subprocess.TimeoutExpired(command, timeout)
            if first_write is None and _snapshot(work) != before:
                first_write = elapsed
            time.sleep(0.01 if first_write is None else 0.05)
        duration = time.perf_counter() - started
        errors.seek(0)
        tail = errors.read()[-3000:]
    return process.returncode, tail, duration, duration if first_write is None else first_write


def kill_at(command: list[str], work: Path, delay: float, default_threads: bool = False) -> bool:
    """Start ``command`` in ``work``; SIGKILL its process group after ``delay`` s. True if it was still
    running."""
    process = subprocess.Popen(command, cwd=work, env=_environment(default_threads),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


def _fresh(case: StageCase, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if case.prepare is not None:
        case.prepare(work)


def check_stage(case: StageCase, work: Path, kills: int, seed: int = 0,
                progress: bool | None = None, load: bool = False) -> StageReport:
    """Run ``kills`` kill-and-resume trials of ``case`` in ``work``; count kills, resumes and mismatches.

    ``load``: the background-load mode (the reference on a quiet machine, every trial beside one busy core,
    every run at the stage's default thread count).
    """
    report = StageReport(case.name, load=load)
    _fresh(case, work)
    code, errors, duration, first_write = run_reference(case.command, work, case.timeout, load)
    report.reference_seconds, report.first_write_seconds = duration, first_write
    if code != 0:
        raise RuntimeError(f"{case.name}: the uninterrupted run failed "
                           f"({' '.join(case.command[3:])}):\n{errors}")
    reference = file_digests(work, case.outputs, case.ignore, case.normalize)
    problems = check_markers(work, case.outputs, case.stale_markers)
    if problems:
        raise RuntimeError(f"{case.name}: the uninterrupted run wrote bad markers: {problems}")
    generator = np.random.default_rng([seed, kills])
    for trial in tqdm(range(kills), desc=f"faults {case.name}", disable=True if progress is False else None):
        with BackgroundLoad(load) as burner:
            _trial(case, work, kills, trial, generator, first_write, duration, report, reference, load)
            if load and not burner.running():
                report.mismatches += 1
                report.details.append(f"trial {trial}: the background load ended before the trial did")
    return report


def _trial(case: StageCase, work: Path, kills: int, trial: int, generator: np.random.Generator,
           first_write: float, duration: float, report: StageReport, reference: dict[str, str],
           load: bool) -> None:
    """One trial of :func:`check_stage`: kill (once or twice), re-run, compare; counts into ``report``."""
    _fresh(case, work)
    # Kill points are spread over the run from its first write to its end (stratified), jittered within
    # each stratum.
    delay = first_write + (duration - first_write) * (trial + generator.uniform(0.05, 0.95)) / kills
    report.trials += 1
    where = (f"trial {trial} (kill at {delay:.2f} s of {duration:.1f} s, "
             f"first write at {first_write:.2f} s)")
    # A loaded machine runs faster or slower than the reference: when the stage ends before its
    # kill point, start over (fresh folder) with an earlier one, so that most trials do kill.
    for _ in range(4):
        if kill_at(case.command, work, delay, load):
            report.kills += 1
            break
        report.finished_before_kill += 1
        _fresh(case, work)
        delay *= 0.6
        where += f", ended before; again at {delay:.2f} s"
    if trial % 2 == 1:  # interrupt the resumption too, at a random moment of it
        second = first_write + (duration - first_write) * generator.uniform(0.05, 0.95)
        if kill_at(case.command, work, second, load):
            report.kills += 1
        where += f", then at {second:.2f} s of the re-run"
    again = _run(case.command, work, case.timeout, load)
    if again.returncode != 0:
        report.mismatches += 1
        report.details.append(f"{where}: re-run failed (exit {again.returncode}): {again.stderr[-800:]}")
        return
    report.resumes += 1
    problems = check_markers(work, case.outputs, case.stale_markers)
    differing = differing_files(reference, file_digests(work, case.outputs, case.ignore, case.normalize))
    if differing:
        shown = ", ".join(differing[:4]) + (f" and {len(differing) - 4} more" if len(differing) > 4
                                            else "")
        problems.append(f"outputs differ from the uninterrupted run: {shown}")
    if problems:
        report.mismatches += 1
        report.details.append(f"{where}: " + "; ".join(problems))


def pairless_command(*args: str) -> list[str]:
    """``pairless ARGS`` with this interpreter (the first three items are the interpreter prologue)."""
    return [sys.executable, "-c", "import sys; from pairless.cli import main; sys.exit(main(sys.argv[1:]))",
            *args]


def summary_table(reports: list[StageReport]) -> str:
    """The harness summary: one row per stage and a total (mismatches must be 0)."""
    header = f"{'stage':<12} {'trials':>6} {'kills':>6} {'resumes':>8} {'mismatches':>11} " \
             f"{'ended-early':>12} " \
             f"{'run (s)':>8} {'1st write (s)':>13} {'load':>5}"
    lines = [header]
    for r in reports:
        lines.append(f"{r.name:<12} {r.trials:>6} {r.kills:>6} {r.resumes:>8} {r.mismatches:>11} "
                     f"{r.finished_before_kill:>12} {r.reference_seconds:>8.1f} "
                     f"{r.first_write_seconds:>13.1f} {'yes' if r.load else 'no':>5}")
    totals = [sum(getattr(r, key) for r in reports)
              for key in ("trials", "kills", "resumes", "mismatches", "finished_before_kill")]
    lines.append(f"{'total':<12} {totals[0]:>6} {totals[1]:>6} {totals[2]:>8} {totals[3]:>11} "
                 f"{totals[4]:>12}")
    return "\n".join(lines)
