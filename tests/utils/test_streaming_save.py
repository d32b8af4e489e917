"""Checkpoints are written tensor by tensor: the peak memory of a save stays near the state it writes.

Each case runs in a fresh process, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) once the
state exists, saves, and reports the peak (``VmHWM``) over the resident memory before the save. The bound:
the largest tensor plus 64 MiB (the file is never held whole; a safetensors bytes object would add the
state's full size, which the control case shows the measurement sees).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch

from pairless.utils.tensor_files import atomic_write_safetensors, canonical_safetensors

MIB = 1024**2
SLACK = 64 * MIB

MEASURE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    def measured(save, state_bytes, largest):
        Path("/proc/self/clear_refs").write_text("5")  # the peak counter starts again from here
        before = status("VmRSS")
        save()
        print(json.dumps({"increase": status("VmHWM") - before, "state": state_bytes, "largest": largest}))
""")

TENSORS = MEASURE + textwrap.dedent("""
    import safetensors.torch
    from pairless.utils.storage import atomic_write_bytes
    from pairless.utils.tensor_files import atomic_write_safetensors
    mode, out = sys.argv[1], sys.argv[2]
    tensors = {f"layer{i}.weight": torch.full((1024, 1024), float(i)) for i in range(96)}  # 384 MiB
    tensors["head.weight"] = torch.ones(2048, 2048, dtype=torch.bfloat16)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    largest = max(t.numel() * t.element_size() for t in tensors.values())
    if mode == "stream":
        measured(lambda: atomic_write_safetensors(out, tensors, {"format": "test"}), size, largest)
    else:  # what checkpoints did before: the whole file as one bytes object, then written
        measured(lambda: atomic_write_bytes(out, safetensors.torch.save(tensors)), size, largest)
""")

CHECKPOINT = MEASURE + textwrap.dedent("""
    from pairless.batch import TokenSpec
    from pairless.model import FourM, ModelConfig, save_model
    from pairless.training.checkpoint import TrainingState, save_checkpoint
    out = sys.argv[2]
    specs = {"rgb": TokenSpec("rgb", "image", 64, 1000, grid=(8, 8)),
             "depth": TokenSpec("depth", "image", 64, 1000, grid=(8, 8))}
    model = FourM(ModelConfig(preset="base", encoder_layers=4, decoder_layers=4), specs)
    parameters = list(model.parameters())
    moments = {index: {"step": torch.tensor(3.0), "exp_avg": torch.full_like(p, 0.1),
                       "exp_avg_sq": torch.full_like(p, 0.2)} for index, p in enumerate(parameters)}
    state = TrainingState(step=3, tokens_seen=100, optimizer={"state": moments, "param_groups": []},
                          rng={"torch_cpu": torch.get_rng_state()}, info={"loss": 1.0})
    size = 3 * sum(p.numel() * 4 for p in parameters)
    largest = max(p.numel() * 4 for p in parameters)
    measured(lambda: save_checkpoint(out, state, lambda path: save_model(path, model)), size, largest)
""")



def ordered_safetensors(data: bytes) -> bytes:
    """The reference: safetensors' own bytes with the header's keys sorted (a valid file, unlike
    :func:`canonical_safetensors`), what the streamed writer must reproduce byte for byte."""
    length = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the writer's own alignment of the tensor data, kept
    return len(header).to_bytes(8, "little") + header + data[8 + length:]

def _measure(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_counter_resets() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


needs_proc = pytest.mark.skipif(not _peak_counter_resets(), reason="needs Linux /proc/self/clear_refs")


@needs_proc
def test_streaming_save_peak_stays_within_one_tensor_of_the_state(tmp_path):
    streamed = _measure(TENSORS, "stream", str(tmp_path / "a.safetensors"))
    assert streamed["state"] > 380 * MIB
    assert streamed["increase"] <= streamed["largest"] + SLACK, streamed
    # the control: one bytes object of the file costs the state's size again, and the measurement sees it
    whole = _measure(TENSORS, "bytes", str(tmp_path / "b.safetensors"))
    assert whole["increase"] >= 0.9 * whole["state"], whole
    # and both files hold the same tensors and metadata
    assert safetensors.torch.load_file(tmp_path / "a.safetensors").keys() == \
        safetensors.torch.load_file(tmp_path / "b.safetensors").keys()


@needs_proc
def test_checkpoint_save_of_a_large_model_stays_within_one_tensor_of_the_state(tmp_path):
    measured = _measure(CHECKPOINT, "-", str(tmp_path / "checkpoints"))
    assert measured["state"] > 500 * MIB  # weights + AdamW moments of a 4+4-layer base model
    assert measured["increase"] <= measured["largest"] + SLACK, measured
    assert (tmp_path / "checkpoints" / "step-00000003" / "COMPLETE.json").is_file()


def test_streamed_file_is_what_safetensors_writes(tmp_path):
    tensors = {"b": torch.randn(3, 4).bfloat16(), "a": torch.randn(5), "i": torch.arange(7),
               "scalar": torch.tensor(3.0), "flags": torch.ones(2, dtype=torch.bool),
               "empty": torch.zeros(0, 3), "transposed": torch.randn(4, 3).t()}
    atomic_write_safetensors(tmp_path / "w.safetensors", tensors, {"y": "2", "x": "1"})
    reference = safetensors.torch.save({name: t.contiguous() for name, t in tensors.items()},
                                       metadata={"x": "1", "y": "2"})
    written = (tmp_path / "w.safetensors").read_bytes()
    assert canonical_safetensors(written) == canonical_safetensors(reference)
    assert written == ordered_safetensors(reference)  # byte for byte: the same file in every process
    loaded = safetensors.torch.load_file(tmp_path / "w.safetensors")
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors.items())
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left


def test_streamed_save_refuses_a_dtype_safetensors_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="complex"):
        atomic_write_safetensors(tmp_path / "w.safetensors", {"z": torch.zeros(2, dtype=torch.complex128)})
    assert not list(tmp_path.iterdir())
