"""Write tests/fixtures/ml4m/: tiny ml-4m models (4M-7 and 4M-21 flavours) and their logits, made by ml-4m's
own model code, for pairless's equivalence tests (tests/model/test_ml4m.py; docs/ml4m.md).

    python scripts/make_ml4m_fixture.py --ml4m /path/to/ml-4m [--out tests/fixtures/ml4m]
    python scripts/make_ml4m_fixture.py --ml4m /path/to/ml-4m --check-export EXPORTED.safetensors \
        --flavour fm7

Run it with a Python that has ml-4m's model dependencies (torch, einops, huggingface_hub, safetensors) and
NOT pairless's venv: ml-4m is never a pairless dependency, and nothing in pairless imports it. For example:

    python3.11 -m venv /tmp/ml4m-venv
    /tmp/ml4m-venv/bin/pip install torch==2.13.0 einops "huggingface_hub<=0.24" safetensors "numpy<2"
    /tmp/ml4m-venv/bin/python scripts/make_ml4m_fixture.py --ml4m /tmp/ml-4m

``--ml4m`` is a checkout of ml-4m's source (github.com/apple/ml-4m). Its package ``__init__`` files import
ml-4m's whole training and data stack (torchvision, albumentations, cv2, webdataset, boto3...), so the script
registers the packages ``fourm``, ``fourm.models``, ``fourm.utils``, ``fourm.utils.timm`` and ``fourm.data``
without running those files and imports the model modules themselves (``fourm/models/fm.py``, ``fm_utils.py``,
``encoder_embeddings.py``, ``decoder_embeddings.py``, ``fourm/utils/timm/registry.py``) unchanged (under
Python 3.11, ``fm.py``'s ``random.sample`` of a dict's items gets the items as a tuple, as Python 3.8-3.10
did for it). The one
module it provides is ``fourm.data.modality_info``: ml-4m's table of modalities imports the data transforms,
and the fixture needs tiny vocabularies and token grids anyway. The table it provides has the fields ml-4m's
``FM`` reads (type, id, input_size, patch_size, the embedding classes, taken from ml-4m's modules) under the
released modality names; every computation is ml-4m's.

What is written (a few hundred kB):
- ``fm7.safetensors`` / ``fm21.safetensors``: the models' state dicts with their config in the safetensors
  metadata, each value as ``str(value)`` (what ml-4m's ``load_safetensors`` parses back), duplicate keys of
  shared tensors (4M-7's shared modality embeddings) stored as copies, as ``FM.load_state_dict`` needs.
  Every weight and position table is moved away from its initial value (a swapped tensor changes logits).
- ``cases.safetensors`` + ``fixture.json``: per flavour and per target modality, a batch of 3 samples in
  ml-4m's input format (token tensors and input/target/decoder-attention masks per modality: image tokens,
  a span-masked caption with sentinels, padded encoder and decoder slots, one sample with no input at all)
  and ml-4m's logits for that modality's decoder slots; the ml-4m commit and the torch version.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

DIM, HEADS, DEPTH = 32, 4, 2
IMAGE_SIZE, PATCH_SIZE = 64, 16  # the config's default image: a 4 x 4 token grid
TEXT_VOCAB, TEXT_LENGTH = 256, 12  # WordPiece-like: [PAD] 0, [UNK] 1, [SOS] 2, [EOS] 3, [S_0] 4...
EOS, S0 = 3, 4

# (released name, kind, vocabulary, input size, patch size, sin-cos positions)
MODALITIES_7 = [
    ("tok_rgb@224", "img", 64, IMAGE_SIZE, PATCH_SIZE, True),
    ("tok_depth@224", "img", 48, IMAGE_SIZE, PATCH_SIZE, True),
    ("tok_normal@224", "img", 40, (32, 64), PATCH_SIZE, True),  # a non-square 2 x 4 grid
    ("caption", "seq", TEXT_VOCAB, None, None, True),
    ("det", "seq", TEXT_VOCAB, None, None, True),
]
MODALITIES_21 = [*MODALITIES_7, ("tok_dinov2_global", "img", 32, IMAGE_SIZE, 32, False)]  # learned positions


def import_ml4m(source: Path):
    """ml-4m's model modules from the source tree ``source`` (see the module docstring)."""
    for package in ("fourm", "fourm.models", "fourm.utils", "fourm.utils.timm", "fourm.data"):
        module = types.ModuleType(package)
        module.__path__ = [str(source.joinpath(*package.split(".")))]
        sys.modules[package] = module
    table = types.ModuleType("fourm.data.modality_info")
    table.MODALITY_INFO = {}
    sys.modules["fourm.data.modality_info"] = table
    import fourm.models.decoder_embeddings as decoder_embeddings
    import fourm.models.encoder_embeddings as encoder_embeddings
    import fourm.models.fm as fm

    # FM shuffles its decoder modalities with random.sample(dict.items(), n); Python 3.11 no longer turns a
    # set-like population into a sequence by itself (3.8-3.10 did, with a warning). Do what they did.
    def sample(population, count):
        return random.sample(tuple(population), count)

    fm.random = types.SimpleNamespace(sample=sample)
    return fm, encoder_embeddings, decoder_embeddings, table


def modality_table(modalities, encoder_embeddings, decoder_embeddings) -> dict:
    """Entries of ml-4m's modality table (the fields FM reads) for ``modalities``."""
    from functools import partial

    table = {}
    for index, (name, kind, vocab, size, patch, sincos) in enumerate(modalities):
        if kind == "img":
            options = {"vocab_size": vocab, "sincos_pos_emb": sincos}
            entry = {"input_size": size, "patch_size": patch,
                     "encoder_embedding": partial(encoder_embeddings.ImageTokenEncoderEmbedding, **options),
                     "decoder_embedding": partial(decoder_embeddings.ImageTokenDecoderEmbedding, **options)}
        else:
            options = {"vocab_size": vocab, "max_length": TEXT_LENGTH, "padding_idx": 0}
            entry = {"encoder_embedding": partial(encoder_embeddings.SequenceEncoderEmbedding, **options),
                     "decoder_embedding": partial(decoder_embeddings.SequenceDecoderEmbedding, **options)}
        table[name] = {**entry, "type": kind, "vocab_size": vocab, "id": 100 + index}
    return table


def model_config(modalities, share: bool) -> dict:
    """An FM config as released files carry it (fm_*_swiglu_nobias settings, tiny shape)."""
    names = sorted(name for name, *_ in modalities)
    return {"domains_in": names, "domains_out": names, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE,
            "dim": DIM, "encoder_depth": DEPTH, "decoder_depth": DEPTH, "num_heads": HEADS, "mlp_ratio": 4.0,
            "qkv_bias": False, "proj_bias": False, "mlp_bias": False, "norm_bias": False, "act_layer": "SiLU",
            "gated_mlp": True, "qk_norm": False, "decoder_causal_mask": False, "decoder_sep_mask": True,
            "num_register_tokens": 0, "use_act_checkpoint": False, "share_modality_embeddings": share}


@torch.no_grad()
def move_weights(model, generator: torch.Generator) -> None:
    """Move every parameter and position table away from its initial value (shared tensors once)."""
    seen = set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if id(tensor) in seen or (name.endswith(".bias") and not any(tensor.flatten())):
            continue  # a bias-less LayerNorm's zero bias buffer stays zero (it is no weight)
        seen.add(id(tensor))
        tensor.add_(torch.randn(tensor.shape, generator=generator) * (0.3 if "pos_emb" in name else 0.05))


def span_mask(sequence: list[int], masked: list[bool]) -> tuple[list[int], list[int]]:
    """T5-style span masking: each run of masked tokens becomes one sentinel in the input; the target is
    every sentinel followed by its run, and a closing sentinel."""
    source, target, count, previous = [], [], 0, False
    for token, hidden in zip(sequence, masked, strict=True):
        if hidden and not previous:
            count += 1
            source.append(S0 + count)
            target.append(S0 + count)
        (target if hidden else source).append(token)
        previous = hidden
    target.append(S0 + count + 1)
    return source, target


def image_entry(tokens, input_sets, target_sets) -> dict:
    """One image modality in ml-4m's format for a batch: masks are True where a token is *not* used."""
    batch, count = tokens.shape
    input_mask = torch.ones(batch, count, dtype=torch.bool)
    target_mask = torch.ones(batch, count, dtype=torch.bool)
    attention = torch.zeros(batch, count, dtype=torch.int)
    for row, (inputs, targets) in enumerate(zip(input_sets, target_sets, strict=True)):
        input_mask[row, inputs] = False
        target_mask[row, targets] = False
        if targets:
            attention[row, min(targets)] = len(targets)  # ml-4m: every target token sees every other
    return {"tensor": tokens, "input_mask": input_mask, "target_mask": target_mask,
            "decoder_attention_mask": attention}


def sequence_entry(inputs: list[list[int]], targets: list[list[int]]) -> dict:
    """One sequence modality: the input sequence at the start, the target one after ``TEXT_LENGTH``."""
    batch, length = len(inputs), 2 * TEXT_LENGTH + 2
    tensor = torch.zeros(batch, length, dtype=torch.long)
    input_mask = torch.ones(batch, length, dtype=torch.bool)
    target_mask = torch.ones(batch, length, dtype=torch.bool)
    attention = torch.zeros(batch, length, dtype=torch.int)
    for row, (source, target) in enumerate(zip(inputs, targets, strict=True)):
        tensor[row, :len(source)] = torch.tensor(source, dtype=torch.long)
        input_mask[row, :len(source)] = False
        start = TEXT_LENGTH
        tensor[row, start:start + len(target)] = torch.tensor(target, dtype=torch.long)
        target_mask[row, start:start + len(target)] = False
        attention[row, start:start + len(target)] = 1  # causal
    return {"tensor": tensor, "input_mask": input_mask, "target_mask": target_mask,
            "decoder_attention_mask": attention}


def make_case(modalities, target: str, generator: torch.Generator) -> tuple[dict, int, int]:
    """ml-4m's input dict for 3 samples predicting ``target`` (all other modalities are inputs only):
    sample 0 sees most of everything, sample 1 parts (span-masked sequences), sample 2 nothing at all."""
    def draw(count: int) -> list[int]:
        return torch.randperm(count, generator=generator).tolist()

    mod_dict, visible, targets = {}, [0, 0, 0], [0, 0, 0]
    for name, kind, vocab, size, patch, _ in modalities:
        if kind == "img":
            height, width = (size, size) if isinstance(size, int) else size
            count = (height // patch) * (width // patch)
            tokens = torch.randint(0, vocab, (3, count), generator=generator)
            order = [draw(count) for _ in range(3)]
            if name == target:
                inputs = [order[0][:count // 3], order[1][:2], []]
                outputs = [order[0][count // 3:], order[1][2:2 + count // 2], list(range(count))]
            else:
                inputs, outputs = [order[0], order[1][:count // 2], []], [[], [], []]
            mod_dict[name] = image_entry(tokens, inputs, outputs)
            for row in range(3):
                visible[row] += len(inputs[row])
                targets[row] += len(outputs[row])
            continue
        sequences = [torch.randint(20, vocab, (7,), generator=generator).tolist() + [EOS] for _ in range(3)]
        if name == target:
            first = span_mask(sequences[0], [False, True, True, False, False, True, False, False])
            second = span_mask(sequences[1], [True, False, False, True, True, True, False, True])
            third = ([], span_mask(sequences[2], [True] * 8)[1])
        else:
            first = (sequences[0], [])
            second = (span_mask(sequences[1], [False, False, True, True, False, False, True, False])[0], [])
            third = ([], [])
        pairs = [first, second, third]
        mod_dict[name] = sequence_entry([pair[0] for pair in pairs], [pair[1] for pair in pairs])
        for row, (source, aimed) in enumerate(pairs):
            visible[row] += len(source)
            targets[row] += max(len(aimed) - 1, 0)  # a target sequence of n tokens has n - 1 decoder slots
    return mod_dict, max(visible) + 3, max(targets) + 2


def ml4m_logits(model, mod_dict: dict, target: str, num_encoder: int, num_decoder: int) -> torch.Tensor:
    """ml-4m's logits ``(3, num_decoder, V)`` for ``target``'s decoder slots: its valid slots come first,
    in token order (the only modality with targets), then padding."""
    random.seed(0)  # FM shuffles the order of decoder modalities; with one target it changes nothing
    copied = {name: dict(entry) for name, entry in mod_dict.items()}
    with torch.no_grad():
        return model(copied, num_encoder_tokens=num_encoder, num_decoder_tokens=num_decoder,
                     return_logits=True)[target]


def ml4m_commit(source: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return (source / "COMMIT").read_text().strip() if (source / "COMMIT").is_file() else "unknown"


def check_export(fm, encoder_embeddings, decoder_embeddings, table, checkpoint: Path, fixture: Path,
                 flavour: str) -> float:
    """Load ``checkpoint`` (written by ``pairless export-4m``) into ml-4m's FM with strict key checking and
    return the max |logit difference| from the fixture's logits over every case's target slots."""
    import ast

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(checkpoint), framework="pt") as handle:
        config = {}
        for key, text in (handle.metadata() or {}).items():
            try:
                config[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                config[key] = text
    table.MODALITY_INFO.clear()
    table.MODALITY_INFO.update(modality_table(MODALITIES_21 if flavour == "fm21" else MODALITIES_7,
                                              encoder_embeddings, decoder_embeddings))
    model = fm.FM(config=config).eval()
    model.load_state_dict(load_file(str(checkpoint)), strict=True)
    cases = load_file(str(fixture / "cases.safetensors"))
    record = json.loads((fixture / "fixture.json").read_text(encoding="utf-8"))
    worst = 0.0
    for case in record["flavours"][flavour]["cases"]:
        prefix, mod_dict = f"{flavour}/{case['target']}", {}
        for key, tensor in cases.items():
            if key.startswith(prefix + "/") and not key.endswith("/logits"):
                _, _, modality, field = key.split("/")
                mod_dict.setdefault(modality, {})[field] = tensor
        logits = ml4m_logits(model, mod_dict, case["target"], case["num_encoder_tokens"],
                             case["num_decoder_tokens"])
        target = mod_dict[case["target"]]["target_mask"]
        for row in range(target.shape[0]):  # the target slots; padded slots carry no prediction
            count = int((~target[row]).sum())
            count = count - 1 if case["target"] in ("caption", "det") and count else count
            if count:
                worst = max(worst, float((logits[row, :count] - cases[f"{prefix}/logits"][row, :count])
                                         .abs().max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ml4m", type=Path, required=True, help="ml-4m source tree (holds fourm/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures"
                        / "ml4m")
    parser.add_argument("--commit", default=None, help="ml-4m commit to record (default: git rev-parse HEAD)")
    parser.add_argument("--check-export", type=Path, default=None, metavar="CHECKPOINT",
                        help="instead of writing: load a `pairless export-4m` file of a fixture model into "
                             "ml-4m's FM (strict) and print its logits' max difference from the fixture's")
    parser.add_argument("--flavour", choices=["fm7", "fm21"], default="fm7", help="with --check-export")
    args = parser.parse_args(argv)
    if not (args.ml4m / "fourm" / "models" / "fm.py").is_file():
        print(f"make_ml4m_fixture: {args.ml4m} is not an ml-4m source tree (no fourm/models/fm.py)",
              file=sys.stderr)
        return 2
    fm, encoder_embeddings, decoder_embeddings, table = import_ml4m(args.ml4m)
    if args.check_export is not None:
        worst = check_export(fm, encoder_embeddings, decoder_embeddings, table, args.check_export, args.out,
                             args.flavour)
        print(f"{args.check_export}: loaded by ml-4m's FM (strict); max |logit difference| {worst:.2e}")
        return 0 if worst <= 1e-4 else 1
    args.out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(4)
    cases, record = {}, {"ml4m_commit": args.commit or ml4m_commit(args.ml4m), "torch": torch.__version__,
                         "flavours": {}}
    for flavour, modalities, share in (("fm7", MODALITIES_7, True), ("fm21", MODALITIES_21, False)):
        table.MODALITY_INFO.clear()
        table.MODALITY_INFO.update(modality_table(modalities, encoder_embeddings, decoder_embeddings))
        config = model_config(modalities, share)
        torch.manual_seed(0)
        model = fm.FM(config=config).eval()
        move_weights(model, generator)
        state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, str(args.out / f"{flavour}.safetensors"),
                  metadata={key: str(value) for key, value in config.items()})
        entries = []
        for name, *_ in modalities:
            mod_dict, num_encoder, num_decoder = make_case(modalities, name, generator)
            prefix = f"{flavour}/{name}"
            for modality, fields in mod_dict.items():
                for field, tensor in fields.items():
                    cases[f"{prefix}/{modality}/{field}"] = tensor.contiguous()
            logits = ml4m_logits(model, mod_dict, name, num_encoder, num_decoder)
            cases[f"{prefix}/logits"] = logits.contiguous()
            entries.append({"target": name, "num_encoder_tokens": num_encoder,
                            "num_decoder_tokens": num_decoder})
        record["flavours"][flavour] = {"config": config, "cases": entries, "text_length": TEXT_LENGTH,
                                       "sequence_target_offset": TEXT_LENGTH}
    save_file(cases, str(args.out / "cases.safetensors"))
    (args.out / "fixture.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    sizes = {path.name: path.stat().st_size for path in sorted(args.out.iterdir())}
    print(f"wrote {args.out}: " + ", ".join(f"{name} {size / 1024:.0f} kB" for name, size in sizes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
