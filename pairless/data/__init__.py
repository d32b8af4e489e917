"""The data layer: datasets on disk (folder and packed forms), token shards, previews.

- :func:`write_dataset` / :func:`open_dataset` and :class:`SplitData` /
  :class:`Dataset`: natural-form samples (see ``docs/interfaces.md``);
- :mod:`pairless.data.shards`: token shards written by ``pairless tokenize``;
- :mod:`pairless.inference.figures`: the ``pairless preview`` grid and ``draw_value``.
"""

from pairless.data.dataset import Dataset, list_splits
from pairless.data.readers import open_dataset
from pairless.data.validate import MAX_TEXT_LENGTH, DataError
from pairless.data.writer import SplitData, write_dataset

__all__ = ["MAX_TEXT_LENGTH", "DataError", "Dataset", "SplitData", "list_splits", "open_dataset",
           "write_dataset"]
