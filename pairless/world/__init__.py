"""The built-in synthetic world: seeded scenes rendered exactly into all seven modalities.

``render_world(num_scenes, size, seed)`` is the entry point; ``write_world`` (write.py, called by
``pairless world``) writes its output as a dataset. Submodules: scenes
(sampling), geometry + render (ray casting), det (boxes as text), captions
(caption grammar, parser, fact accuracy), embed (the fixed "expert" feature),
samples (columns and scene dicts).
"""

from pairless.world.captions import fact_accuracy, parse_caption
from pairless.world.det import det_to_text, parse_det_text
from pairless.world.samples import render_world

__all__ = ["render_world", "det_to_text", "parse_det_text", "parse_caption", "fact_accuracy"]
