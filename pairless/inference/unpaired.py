"""What can be measured for a pair never recorded together (no sample has both Ma and Mb).

There is no ground truth for Ma -> Mb, so no translation CE and no decoded metric. What remains, each
computed on held-out samples that have Ma and labelled for what it is:

- **direct**: Mb generated from Ma;
- **chained**: Ma -> Mbind -> Mb through each bridge modality (one seen with Ma and with Mb in training);
- **from the real bridge**: on samples that also have a real Mbind, Mb generated from it. A model that has
  learned Mbind -> Mb (a pair it saw) gives a *proxy* ground truth: the direct prediction's agreement with
  it (in Mb's own metric) is a proxy for accuracy, limited by how well Mbind -> Mb itself works and blind
  to what Ma knows that Mbind does not;
- **no input**: Mb generated with no input at all, scored against the same proxy. A direct translation
  no closer to the proxy than this baseline ignores its input;
- **cycle**: Ma -> Mb -> Ma (the last link sees only the generated Mb) against the real Ma, with a control
  that pairs each generated Mb with another sample's Ma (shuffled): a cycle no better than its control
  carries nothing of the input through Mb.

``unpaired_analysis(...)`` writes the values, a figure and ``metrics.json`` to ``out`` and returns them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pairless.data.shards import open_shards
from pairless.inference.decoded_metrics import score
from pairless.inference.evaluate import load_run_model
from pairless.inference.figures import draw_grid
from pairless.inference.generate import default_schedule, generate
from pairless.inference.translations import make_decoder
from pairless.utils.storage import FolderLock, atomic_save_npy, atomic_write_json, staged_dir


def _generate_all(model, sources: dict[str, np.ndarray], conditioning: list[str], dst: str, seed: int,
                  batch_size: int, threads: int | None) -> np.ndarray:
    """``dst`` ids [N, L] generated from the ``conditioning`` modalities of ``sources`` (all [N, ...])."""
    schedule = default_schedule(model.specs[dst].kind)
    generator = torch.Generator().manual_seed(seed)
    count = len(next(iter(sources.values())))
    parts = []
    model.eval()
    for start in range(0, count, batch_size):
        source = {name: torch.from_numpy(np.asarray(ids[start : start + batch_size])).long()
                  for name, ids in sources.items()}
        parts.append(generate(model, source, conditioning, dst, model.specs, model.modalities, schedule,
                              generator, threads=threads))
    return torch.cat(parts).numpy()


def _rows(values, rows: np.ndarray):
    return [values[row] for row in rows] if isinstance(values, list) else np.asarray(values)[rows]


def unpaired_analysis(run: Path, src: str, dst: str, bridges: list[str], tokenizers: Path, shards: Path,
                      out: Path, num: int = 64, figure_rows: int = 6, seed: int = 0, batch_size: int = 64,
                      threads: int | None = None, device: str | torch.device = "cpu") -> dict:
    """Direct, chained, bridge-proxy, no-input and cycle measures of ``src -> dst`` (see the module doc).

    Returns ``{"num_samples", "bridges": {bridge: {"num_samples", "direct", "chained", "no_input"}},
    "cycle": {"metrics", "shuffled"}, "figure"}``: each of direct / chained / no_input is ``dst``'s
    natural metrics against the prediction from the real bridge on the samples that have it.
    """
    data = open_shards(shards, "val")
    for name in (src, dst, *bridges):
        if name not in data.specs:
            held = ", ".join(data.specs)
            raise ValueError(f"modality {name!r} is not in the shards {shards}; they hold {held}")
    rows = np.flatnonzero(np.asarray(data.present[src], bool))[:num]
    if len(rows) == 0:
        raise ValueError(f"no held-out sample has {src!r}: nothing to translate from")
    model = load_run_model(run, device)
    decode = make_decoder(Path(tokenizers))
    source = {src: np.asarray(data.tokens[src][rows])}
    direct = _generate_all(model, source, [src], dst, seed, batch_size, threads)
    no_input = _generate_all(model, source, [], dst, seed, batch_size, threads)
    decoded = {"input": decode(src, source[src]), "direct": decode(dst, direct),
               "no input": decode(dst, no_input)}
    result: dict = {"num_samples": int(len(rows)), "bridges": {}}
    proxies: dict[str, tuple[np.ndarray, object]] = {}  # bridge -> (row positions that have it, proxy)
    for bridge in bridges:
        via = _generate_all(model, source, [src], bridge, seed, batch_size, threads)
        chained = _generate_all(model, {src: source[src], bridge: via}, [src, bridge], dst, seed, batch_size,
                                threads)
        decoded[f"chained via {bridge}"] = decode(dst, chained)
        has_bridge = np.flatnonzero(np.asarray(data.present[bridge], bool)[rows])
        entry: dict = {"num_samples": int(len(has_bridge))}
        if len(has_bridge):
            real = {bridge: np.asarray(data.tokens[bridge][rows[has_bridge]])}
            proxy_ids = _generate_all(model, real, [bridge], dst, seed, batch_size, threads)
            proxy = decode(dst, proxy_ids)
            proxies[bridge] = (has_bridge, proxy, proxy_ids)
            compared = (("direct", decoded["direct"]), ("chained", decoded[f"chained via {bridge}"]),
                        ("no_input", decoded["no input"]))
            for label, values in compared:
                entry[label] = score(dst, _rows(values, has_bridge), proxy)
        result["bridges"][bridge] = entry
    back = _generate_all(model, {dst: direct}, [dst], src, seed, batch_size, threads)
    truth = decode(src, source[src])
    decoded["cycle back"] = decode(src, back)
    shuffled = np.roll(np.arange(len(rows)), 1)
    result["cycle"] = {"metrics": score(src, decoded["cycle back"], truth),
                       "shuffled": score(src, decoded["cycle back"], _rows(truth, shuffled))}
    out = Path(out)
    with FolderLock(out), staged_dir(out, overwrite=True) as staging:
        # the generated tokens and which samples they are for, to check the proxies against a truth later
        atomic_write_json(staging / "samples.json", {"ids": [data.ids[row] for row in rows],
                                                     **{f"has_{bridge}": [int(i) for i in positions]
                                                        for bridge, (positions, _, _) in proxies.items()}})
        atomic_save_npy(staging / f"{dst}.direct.tokens.npy", direct)
        atomic_save_npy(staging / f"{dst}.no_input.tokens.npy", no_input)
        for bridge, (_, _, ids) in proxies.items():
            atomic_save_npy(staging / f"{dst}.from_{bridge}.tokens.npy", ids)
        atomic_write_json(staging / "metrics.json", result)
        # the rows shown: samples that also have the first bridge with a proxy, so its column is complete
        first = next(iter(proxies), None)
        shown = proxies[first][0][:figure_rows] if first else np.arange(min(figure_rows, len(rows)))
        columns = [(f"input ({src}, tokenized)", src, _rows(decoded["input"], shown))]
        columns += [(f"{label} → {dst}" if label != "cycle back" else f"cycle back → {src}",
                     src if label == "cycle back" else dst, _rows(values, shown))
                    for label, values in decoded.items() if label != "input"]
        if first:
            columns.append((f"from the real {first} (proxy)", dst, _rows(proxies[first][1],
                                                                         np.arange(len(shown)))))
        draw_grid(staging / "figure.png", columns, len(shown),
                  f"{src} → {dst}: never recorded together (no ground truth)")
    result["figure"] = str(out / "figure.png")
    return result
