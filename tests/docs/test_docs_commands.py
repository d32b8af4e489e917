"""Every command in README.md and docs/*.md is one the tool accepts, and the README's pipeline runs.

Each line of a fenced ``bash`` block that calls ``pairless VERB`` (also as ``python -m pairless VERB``,
``torchrun ... -m pairless VERB`` or ``.venv/bin/pairless``) is parsed by that verb's own parser; ``run``
lines are executed with ``--dry-run`` (recipe, preset and every ``--set`` resolved, the plan printed),
``train`` and ``tokenizers train`` lines build their config (every ``--set`` key checked), ``make`` lines
name a Makefile target, and script paths exist. The README's pipeline block is then executed as written at
micro scale (the BYOD example is executed by ``test_byod_example.py``, ``make test`` by CI).
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pairless.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def bash_lines(page: Path) -> list[str]:
    """The command lines of a page's ``bash`` blocks: continuations joined, comments and blanks dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                lines.append(line)
    return lines


def pairless_call(words: list[str]) -> list[str] | None:
    """``[verb, *args]`` when ``words`` runs the pairless command in any of its documented spellings."""
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # leading environment assignments
        words = words[1:]
    if not words:
        return None
    if Path(words[0]).name == "pairless":
        return words[1:]
    for index in range(len(words) - 2):
        if words[index] == "-m" and words[index + 1] == "pairless":
            if Path(words[0]).name.startswith(("python", "torchrun")):
                return words[index + 2:]
    return None


DOCUMENTED = [(page.relative_to(ROOT).as_posix(), line) for page in PAGES for line in bash_lines(page)]


def test_the_pages_document_commands():
    calls = [line for _, line in DOCUMENTED if pairless_call(shlex.split(line))]
    verbs = {pairless_call(shlex.split(line))[0] for line in calls}
    # every verb the tool has appears in some page (a new verb gets documented)
    assert verbs >= set(COMMANDS), sorted(set(COMMANDS) - verbs)


@pytest.mark.parametrize("page,line", DOCUMENTED, ids=[f"{page}:{line[:60]}" for page, line in DOCUMENTED])
def test_documented_command_is_accepted(page, line, tmp_path, capsys, monkeypatch):
    words = shlex.split(line)
    call = pairless_call(words)
    if call is None:
        if words[0] == "make":
            makefile = (ROOT / "Makefile").read_text()
            for target in words[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"{page}: make {target}"
        for word in words:
            if re.fullmatch(r"(scripts|benchmarks)/\S+\.py", word):
                assert (ROOT / word).is_file(), f"{page}: {word} does not exist"
        return
    verb, args = call[0], call[1:]
    assert verb in COMMANDS, f"{page}: unknown verb {verb!r} in {line!r}"
    module = importlib.import_module(COMMANDS[verb][0])
    try:
        parsed = module.build_parser().parse_args(args)
    except SystemExit as stop:
        pytest.fail(f"{page}: `{line}` is refused by the parser (exit {stop.code}): "
                    f"{capsys.readouterr().err.strip()}")
    if verb == "run" and "--help" not in args:
        if "--data" in args:  # own-data lines use the BYOD example's folder: write it, then plan on it
            from byod_helpers import byod_blocks

            monkeypatch.chdir(tmp_path)
            exec(byod_blocks()[0], {})
        out = tmp_path / "results"
        if "paper" in args and "--device-profile" not in args:
            # planned for a stated GPU: on this CPU the plan would time the paper preset's base and large
            # models at their shapes (minutes and GBs); the test is that the line is accepted and planned
            args = [*args, "--device-profile", "h100"]
        assert module.main([*args, "--out", str(out), "--dry-run"]) == 0, f"{page}: {line}"
    elif verb == "train":
        module.config_from_args(parsed)
    elif verb == "tokenizers":
        from pairless.config import apply_overrides
        from pairless.tokenizers.neural_training import preset_config

        apply_overrides(preset_config(parsed.preset, seed=parsed.seed), parsed.overrides)


def _pipeline_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The pipeline", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert blocks, "expected a bash block under '## The pipeline'"
    return blocks[0]  # the stages one by one (the next blocks: multi-process, recipes)


# The README's sizes, scaled to seconds: (documented text, test text). Each must occur in the block.
MICRO = [  # applied in order
    ("--num-scenes 22000", "--num-scenes 160"),
    ("tokenizers train --data data --out tok --preset tiny",
     "tokenizers train --data data --out tok --preset micro --set steps=10"),
    ("--preset tiny", "--preset tiny --set model.dim=32 --set model.encoder_layers=1 "
                      "--set model.decoder_layers=1 --set model.heads=2 --batch-size 8"),  # the train lines
    ("--total-tokens 8000000", "--total-tokens 12000"),
    ("--num-samples 1000", "--num-samples 8"),
    ("--num 8", "--num 2"),
]


@pytest.mark.slow
def test_readme_pipeline_runs_as_written(tmp_path):
    block = _pipeline_block()
    for documented, replacement in MICRO:
        assert documented in block, f"README pipeline no longer contains {documented!r}: update MICRO"
        block = block.replace(documented, replacement)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for run in ("zero-shot", "many-shot"):
        assert (tmp_path / "runs" / run / "COMPLETE.json").is_file()
    assert (tmp_path / "runs" / "zero-shot" / "eval.json").is_file()
    assert (tmp_path / "figures" / "figure.png").is_file()


def test_the_files_the_pages_name_exist():
    """A page that points at ``tests/...``, ``benchmarks/...`` or ``pairless/...`` points at a real file."""
    named = re.compile(r"(?<![\w/.-])((?:tests|benchmarks|pairless|scripts)/[\w/.-]+\.(?:py|md|png))")
    missing = [f"{page.name}: {path}" for page in [*PAGES, *sorted((ROOT / "docs").rglob("*/*.md"))]
               for path in named.findall(page.read_text(encoding="utf-8")) if not (ROOT / path).exists()]
    assert not missing, missing
