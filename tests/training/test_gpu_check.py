"""CI's smoke test of benchmarks/gpu_check.py: the same checks on the CPU at micro shapes.

On a CPU the GPU-only checks skip (device memory, NCCL) and the throughput's MFU target does not apply;
what must hold here is that every other check runs and passes: bf16 Linears and fused AdamW, a killed and
resumed ``pairless train`` bit-identical to an uninterrupted one, ``pairless eval --device cpu`` equal to
the library's own numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_on_the_cpu_at_micro_shapes(tmp_path):
    report = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--micro", "--json", str(report),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    checks = {entry["name"]: entry for entry in json.loads(report.read_text())}
    assert list(checks) == ["environment", "precision", "throughput", "memory", "resume", "inference",
                            "multi-gpu"]
    assert checks["precision"]["numbers"]["linear_output_dtypes"] == ["torch.bfloat16"]
    assert checks["precision"]["numbers"]["adamw_fused"] is True
    throughput = checks["throughput"]["numbers"]
    for kind in ("explicit", "sdpa"):
        assert throughput[kind]["tokens_per_second"] > 0 and 0 < throughput[kind]["mfu_executed"] < 1
    assert checks["resume"]["status"] == "ok"
    assert checks["resume"]["numbers"]["killed"] == "after its first checkpoint"
    assert checks["resume"]["numbers"]["max_weight_difference"] == 0.0
    assert checks["inference"]["status"] == "ok"
    assert set(checks["inference"]["numbers"]["ce"]) == {"cpu", "library"}
    assert checks["memory"]["status"] == checks["multi-gpu"]["status"] == "skip"
    assert "all checks ok or skipped" in done.stdout


def test_gpu_check_refuses_an_absent_gpu_by_name():
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda:63"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "--device cuda:63" in done.stderr and "CUDA" in done.stderr
