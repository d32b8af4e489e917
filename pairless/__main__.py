"""``python -m pairless VERB ...`` (and ``torchrun -m pairless train ...``): the ``pairless`` command."""

from pairless.cli import entry

entry()
