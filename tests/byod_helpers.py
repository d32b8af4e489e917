"""docs/data.md's "Bring your own data" example blocks, for the tests that execute them."""

from __future__ import annotations

import re
from pathlib import Path

DATA_PAGE = Path(__file__).resolve().parents[1] / "docs" / "data.md"


def byod_blocks() -> tuple[str, str]:
    """The python and bash fenced blocks of the docs/data.md section "## Bring your own data"."""
    text = DATA_PAGE.read_text(encoding="utf-8")
    section = text.split("## Bring your own data", 1)[1].split("\n## ", 1)[0]
    python_blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    bash_blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(python_blocks) == 1 and len(bash_blocks) == 1, "expected one python and one bash block"
    return python_blocks[0], bash_blocks[0]


THERMAL_PNG_DECLARATION = """\
modalities:
  thermal:
    kind: image
    extensions: [.png]
    channels: 1
"""


def write_user_folder(root: Path, train: int = 48, val: int = 8, nan_in_val: bool = False) -> Path:
    """A user's folder as the tests meet it: ml-4m-like nesting (``train/rgb/part0/...``), rgb png, depth
    npy on even samples, a declared 1-channel png ``thermal`` on odd ones (never recorded with depth), and,
    with ``nan_in_val``, one val depth file holding a NaN."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    (root / "modalities.yaml").write_text(THERMAL_PNG_DECLARATION)
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for index in range(count):
            sample = f"{index:06d}"
            for modality in ("rgb", "depth", "thermal"):
                (root / split / modality / "part0").mkdir(parents=True, exist_ok=True)
            rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / split / "rgb" / "part0" / f"{sample}.png")
            if index % 2 == 0:
                depth = rng.uniform(0.5, 10.0, (32, 32)).astype(np.float32)
                if nan_in_val and split == "val" and index == 0:
                    depth[3, 3] = np.nan
                np.save(root / split / "depth" / "part0" / f"{sample}.npy", depth)
            else:
                thermal = rng.integers(0, 256, (32, 32), dtype=np.uint8)
                Image.fromarray(thermal).save(root / split / "thermal" / "part0" / f"{sample}.png")
    return root
