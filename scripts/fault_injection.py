"""The full fault-injection harness: SIGKILL every stage at >= 20 random moments and compare.

    .venv/bin/python scripts/fault_injection.py --kills 20 [--stages world train ...] [--work DIR] [--load]

Builds the small inputs once (world, tokenizers, shards, a trained run, a
micro recipe's results), then for each stage runs ``check_stage`` of ``tests/faults/fault_harness.py``
and prints the summary table (kills, resumes, mismatches; mismatches must be
0) and the details of any mismatch. Exit status 1 when there is a mismatch. With ``--load`` every trial runs
beside a CPU-burning process the harness starts and stops itself (one busy core), the stages at their
default thread count, against a reference made on a quiet machine: results must not depend on the load.
The bounded CI form of the same checks is ``tests/faults/test_faults.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pairless.utils.storage import atomic_write_json

# The harness lives with the tests (tests/faults/), not in the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))
from fault_cases import STAGES, build_inputs, stage_cases  # noqa: E402
from fault_harness import check_stage, summary_table  # noqa: E402


def _run_input(command: list[str], cwd: Path) -> None:
    print(f"making input: pairless {' '.join(command[3:])}", flush=True)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1", "PYTHONHASHSEED": "0"})
    if done.returncode != 0:
        raise SystemExit(f"input command failed: {' '.join(command[3:])}\n{done.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20,
                        help="kill trials per stage (every other one kills twice)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary", type=Path, default=None, help="also write the counts as JSON here")
    parser.add_argument("--load", action="store_true",
                        help="background-load mode: one busy core beside every trial, the stages at their "
                             "default thread count")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="pairless-faults-"))
    started = time.perf_counter()
    build_inputs(work / "inputs", args.stages, _run_input)
    cases = stage_cases(work / "inputs")
    reports = []
    for name in args.stages:
        report = check_stage(cases[name], work / name, args.kills, seed=args.seed, load=args.load)
        reports.append(report)
        print(f"{name}: {report.kills} kills, {report.resumes} resumes, {report.mismatches} mismatches",
              flush=True)
        for line in report.details:
            print(f"  {line}", flush=True)
    print()
    print(summary_table(reports))
    print(f"\n{time.perf_counter() - started:.0f} s in all; work folder {work}")
    if args.summary:
        atomic_write_json(args.summary, [vars(report) for report in reports])
    return 1 if any(report.mismatches for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
