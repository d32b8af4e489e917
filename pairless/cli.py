"""The ``pairless`` command: one verb per stage, plus ``run`` and ``report``.

Each verb is a module of :mod:`pairless.commands` exposing ``main(argv) -> int``
(argument parsing and printing; the work is a library call); this file only
dispatches, importing the module lazily so that ``pairless --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module with main(argv) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "world": ("pairless.commands.world", "render the built-in synthetic world to a dataset folder"),
    "preview": ("pairless.commands.preview", "draw a grid of samples, one column per modality"),
    "tokenizers": ("pairless.commands.tokenizers",
                   "train the tokenizers of every modality ('tokenizers train')"),
    "tokenize": ("pairless.commands.tokenize", "turn a dataset into token shards with trained tokenizers"),
    "audit": ("pairless.commands.audit", "print the modality co-occurrence of the fragmented training views"),
    "train": ("pairless.commands.train", "train a 4M-style model on token shards"),
    "add-modality": ("pairless.commands.add_modality",
                     "add a modality to a trained model, training only its own weights (a light adapter)"),
    "import-4m": ("pairless.commands.import_4m", "an ml-4m checkpoint (4M-7, 4M-21) as a pairless run"),
    "export-4m": ("pairless.commands.export_4m", "a run's model as an ml-4m checkpoint"),
    "import-4m-data": ("pairless.commands.import_4m_data",
                       "a dataset pre-tokenized for ml-4m (tars or folders) as token shards"),
    "eval": ("pairless.commands.eval", "translation cross-entropy per direction"),
    "probe": ("pairless.commands.probe", "alignment of the Ma-only and Mb-only encodings of a pair"),
    "generate": ("pairless.commands.generate", "generate, decode and draw translations"),
    "explore": ("pairless.commands.explore",
                "a local web page: samples translated by several runs side by side, the report"),
    "pseudo-pairs": ("pairless.commands.pseudo_pairs",
                     "fill a withheld pair with a run's own translations (transitive pseudo-pairs)"),
    "run": ("pairless.commands.run", "run a recipe end to end (cached, resumable)"),
    "report": ("pairless.commands.report", "write the report of a recipe's results"),
}


def usage() -> str:
    width = max(len(verb) for verb in COMMANDS)
    lines = ["usage: pairless [--modalities-file FILE] <command> [options]", "", "commands:"]
    lines += [f"  {verb:<{width}}  {help_text}" for verb, (_, help_text) in COMMANDS.items()]
    lines += ["", "'pairless <command> --help' for a command's options.",
              "--modalities-file FILE: declare modalities from FILE (a dataset's own modalities.yaml is read "
              "without it)."]
    return "\n".join(lines)


def split_modalities_file(argv: list[str]) -> tuple[list[str], list[str]]:
    """Take every ``--modalities-file FILE`` (or ``=FILE``) out of ``argv``: (files, the other arguments)."""
    files, rest, index = [], [], 0
    while index < len(argv):
        item = argv[index]
        if item == "--modalities-file":
            if index + 1 >= len(argv):
                raise ValueError("--modalities-file needs a file")
            files.append(argv[index + 1])
            index += 2
            continue
        if item.startswith("--modalities-file="):
            files.append(item.split("=", 1)[1])
        else:
            rest.append(item)
        index += 1
    return files, rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        declarations, argv = split_modalities_file(argv)
    except ValueError as error:
        print(f"pairless: {error}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in COMMANDS:
        print(f"pairless: unknown command {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[verb][0])
    from pairless.config import ConfigError
    from pairless.data.validate import DataError
    from pairless.utils.storage import OutputBusyError

    try:
        if declarations:
            from pairless.data.declared import declare

            for path in declarations:
                declare(path)
        return int(module.main(rest) or 0)
    # the user's to fix: a message, not a traceback
    except (OutputBusyError, ConfigError, DataError) as error:
        print(f"pairless {verb}: {error}", file=sys.stderr)
        return 1


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
