"""ml-4m checkpoints to and from :class:`~pairless.model.transformer.FourM` (docs/ml4m.md).

ml-4m (github.com/apple/ml-4m) releases its models as safetensors whose metadata holds the config of its
``FM`` class, one ``str(value)`` per key (``"dim": "768"``, ``"domains_in": "['caption', ...]"``). Its
tensors are named per part: ``encoder_embeddings.<modality>.{token_emb.weight, pos_emb, mod_emb}``, the
same under ``decoder_embeddings`` plus ``to_logits.weight``, ``encoder.<i>.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1/fc2/fc3}``, ``decoder.<i>.{norm1, self_attn.*, query_norm, context_norm, cross_attn.{q, kv,
proj}, norm2, mlp.*}``, ``encoder_norm``, ``decoder_norm``, ``decoder_proj_context``, ``mask_token``.

- :func:`from_ml4m` builds an ml-4m-style FourM (``model.style=ml4m``; 4M-21's separate decoder modality
  embeddings when the config does not share them) holding every weight, with modality names translated by
  a mapping file (``ml4m_modalities.json`` beside this module, or the user's own);
- :func:`to_ml4m` is the inverse: tensors and metadata an ml-4m ``FM`` loads.

Both refuse, by name, what the other side cannot express: pixel or T5 inputs (``rgb@224``,
``t5_caption``; an import may skip them), QK-norm, register tokens, a causal or unseparated decoder, mixed
bias settings; a pairless model without the ml-4m options.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from pairless.batch import TokenSpec
from pairless.model.architecture import STYLES
from pairless.model.blocks import index_buffers, sincos_1d
from pairless.model.config import PRESETS, ModelConfig
from pairless.model.transformer import FourM

MAPPING_FILE = Path(__file__).with_name("ml4m_modalities.json")
SEQUENCE_TABLE_ROWS = 512  # ml-4m's sin-cos table of a sequence keeps all 512 rows it builds
# pairless block part -> ml-4m block part (the encoder's attention is "attn", the decoder's "self_attn")
_BLOCK_PARTS = {"norm1": "norm1", "attention.qkv": "{attention}.qkv", "attention.proj": "{attention}.proj",
                "norm2": "norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2", "fc3": "mlp.fc3",
                "norm_cross": "query_norm", "context_norm": "context_norm", "cross.q": "cross_attn.q",
                "cross.kv": "cross_attn.kv", "cross.proj": "cross_attn.proj"}
_TOP_PARTS = {"encoder_norm": "encoder_norm", "decoder_norm": "decoder_norm",
              "context_projection": "decoder_proj_context"}


class Ml4mError(ValueError):
    """What cannot be converted, named."""


@dataclass
class Ml4mModel:
    """An imported model and what export needs to give ml-4m back its own names and config."""

    model: FourM
    names: dict[str, str]  # pairless modality -> ml-4m modality
    config: dict  # ml-4m's FM config as read (export starts from it)
    skipped: list[str] = field(default_factory=list)  # ml-4m modalities left out (--skip)
    position_rows: dict[str, int] = field(default_factory=dict)  # ml-4m modality -> rows of its table


def read_mapping(path: Path | None = None) -> dict:
    """The modality mapping file (default: the one shipped beside this module)."""
    path = Path(path) if path is not None else MAPPING_FILE
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise Ml4mError(f"{path}: cannot read the ml-4m modality mapping ({error})") from error
    for key in ("text", "modalities"):
        if not isinstance(mapping.get(key), dict):
            raise Ml4mError(f"{path}: no {key!r} table")
    mapping.setdefault("unsupported_inputs", {})
    return mapping


def parse_metadata(metadata: dict[str, str]) -> dict:
    """ml-4m's config from safetensors metadata: each value a Python literal written with ``str``."""
    config = {}
    for key, text in metadata.items():
        try:
            config[key] = ast.literal_eval(text) if len(text) < 100_000 else text
        except (ValueError, SyntaxError):
            config[key] = text  # a plain word such as "SiLU"
    return config


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and parsed config of an ml-4m safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError, RuntimeError) as error:
        raise Ml4mError(f"{path}: cannot read an ml-4m checkpoint ({error})") from error
    config = parse_metadata(metadata)
    for key in ("domains_in", "domains_out", "dim", "encoder_depth", "decoder_depth", "num_heads"):
        if key not in config:
            raise Ml4mError(f"{path}: its metadata has no {key!r}; not an ml-4m FM checkpoint (keys: "
                            f"{', '.join(sorted(config)) or 'none'})")
    return tensors, config


def _check_config(config: dict) -> bool:
    """Refuse what FourM cannot compute; the bias setting (ml-4m's four flags must agree)."""
    refused = {"qk_norm": False, "decoder_causal_mask": False, "decoder_sep_mask": True}
    for key, wanted in refused.items():
        if config.get(key, wanted) != wanted:
            raise Ml4mError(f"ml-4m config {key}={config[key]!r}: pairless has no such model (it needs "
                            f"{key}={wanted!r})")
    if config.get("num_register_tokens", 0):
        raise Ml4mError(f"ml-4m config num_register_tokens={config['num_register_tokens']}: pairless has no "
                        "register tokens")
    flags = {key: bool(config.get(key, True)) for key in ("qkv_bias", "proj_bias", "mlp_bias", "norm_bias")}
    if len(set(flags.values())) > 1:
        raise Ml4mError(f"ml-4m config biases {flags}: pairless has one bias switch (model.bias); all four "
                        "must agree")
    pair = (bool(config.get("gated_mlp", False)), str(config.get("act_layer", "GELU")))
    if pair not in ((True, "SiLU"), (False, "GELU")):
        raise Ml4mError(f"ml-4m config gated_mlp={pair[0]}, act_layer={pair[1]!r}: pairless has SwiGLU "
                        "(gated, SiLU) or GELU (not gated)")
    return flags["qkv_bias"]


def _one(tensors: dict, key: str, where: str) -> torch.Tensor:
    if key not in tensors:
        raise Ml4mError(f"{where}: tensor {key!r} is missing")
    return tensors[key]


def ml4m_sincos_2d(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """ml-4m's 2-D sin-cos table ``(h * w, dim)``: row n describes (n // h, n % h), its first half from
    n // h, which is the token row only when the grid is square (why positions are stored, not rebuilt)."""
    index = torch.arange(height * width)
    return torch.cat([sincos_1d(index // height, dim // 2, temperature),
                      sincos_1d(index % height, dim // 2, temperature)], 1)


def _spec(ml4m_name: str, name: str, entry: dict, mapping: dict, vocab: int, rows: int) -> TokenSpec:
    kind = entry.get("kind")
    if kind == "sequence":
        text = mapping["text"]
        length = min(int(entry.get("num_tokens", rows)), rows)
        return TokenSpec(name, "sequence", length, vocab, pad_id=text["pad_id"], bos_id=text["bos_id"],
                         eos_id=text["eos_id"])
    if kind == "vector":
        return TokenSpec(name, "vector", rows, vocab)
    grid = tuple(entry["grid"]) if entry.get("grid") else None
    if grid is not None and grid[0] * grid[1] != rows:
        raise Ml4mError(f"modality {ml4m_name!r}: {rows} position rows, but the mapping's grid is "
                        f"{list(grid)}; give its 'grid' [h, w] in a --modalities file")
    if grid is None:
        side = round(rows ** 0.5)
        if side * side != rows:
            raise Ml4mError(f"modality {ml4m_name!r}: {rows} position rows and no grid in the mapping; give "
                            "its 'grid' [h, w] in a --modalities file")
        grid = (side, side)
    return TokenSpec(name, "image", rows, vocab, grid=grid)


def from_ml4m(tensors: dict[str, torch.Tensor], config: dict, mapping: dict | None = None,
              skip: tuple[str, ...] | list[str] = ()) -> Ml4mModel:
    """An ml-4m-style FourM holding the weights of an ml-4m FM checkpoint (``read_checkpoint``'s output).

    ``skip``: ml-4m modalities to leave out (only pixel or T5 inputs may be left out: the model computes the
    rest exactly as ml-4m does when those inputs are not given). The model is built on the meta device and
    takes the tensors as its weights (no copy where no concatenation is needed: a base-size import needs no
    second copy of the checkpoint), so ``tensors`` must not be changed or reused afterwards.
    """
    mapping = mapping if mapping is not None else read_mapping()
    bias = _check_config(config)
    inputs, outputs = list(config["domains_in"]), list(config["domains_out"])
    for name in skip:
        if name not in inputs + outputs:
            raise Ml4mError(f"--skip {name}: the checkpoint has no such modality ({', '.join(inputs)})")
        if name in outputs:
            raise Ml4mError(f"--skip {name}: it is a target of the model; only inputs can be left out")
    unsupported = [name for name in inputs if name not in skip
                   and (name in mapping["unsupported_inputs"]
                        or f"encoder_embeddings.{name}.token_emb.weight" not in tensors)]
    if unsupported:
        reasons = "; ".join(f"{name}: {mapping['unsupported_inputs'].get(name, 'not a token input')}"
                            for name in unsupported)
        raise Ml4mError(f"cannot import the input modalities {', '.join(unsupported)} ({reasons})")
    order = [name for name in dict.fromkeys(inputs + outputs) if name not in skip]
    one_sided = [name for name in order if (name in inputs) != (name in outputs)]
    if one_sided:
        raise Ml4mError(f"modalities {', '.join(one_sided)} are only inputs or only targets of the "
                        "checkpoint; every pairless modality is both")
    unknown = [name for name in order if name not in mapping["modalities"]]
    if unknown:
        raise Ml4mError(f"modalities {', '.join(unknown)} are not in the modality mapping; add them to a "
                        "--modalities file (a copy of pairless/model/ml4m_modalities.json)")
    shared = bool(config.get("share_modality_embeddings", True))
    names, specs, state, position_rows = {}, {}, {}, {}
    for ml4m_name in order:
        entry = mapping["modalities"][ml4m_name]
        encoder, decoder = f"encoder_embeddings.{ml4m_name}", f"decoder_embeddings.{ml4m_name}"
        vocab = _one(tensors, f"{encoder}.token_emb.weight", ml4m_name).shape[0]
        table = tensors.get(f"{encoder}.pos_emb")
        rows = table.shape[1] if table is not None else None
        if rows is None:  # a file without ml-4m's sin-cos buffers: rebuild them as ml-4m does
            if entry.get("kind") not in ("sequence", "image") or not (entry.get("grid") or
                                                                      entry.get("kind") == "sequence"):
                raise Ml4mError(f"{encoder}.pos_emb is missing and cannot be rebuilt (no sin-cos grid)")
            rows = (SEQUENCE_TABLE_ROWS if entry.get("kind") == "sequence"
                    else entry["grid"][0] * entry["grid"][1])
        spec = _spec(ml4m_name, entry["name"], entry, mapping, vocab, rows)
        position_rows[ml4m_name] = rows
        if spec.name in specs:
            raise Ml4mError(f"modalities {names[spec.name]!r} and {ml4m_name!r} both map to {spec.name!r}")
        names[spec.name], specs[spec.name] = ml4m_name, spec
        for side, prefix in (("encoder", encoder), ("decoder", decoder)):
            positions = tensors.get(f"{prefix}.pos_emb")
            if positions is None:
                positions = (sincos_1d(torch.arange(spec.num_tokens), config["dim"])[None]
                             if spec.kind == "sequence" else ml4m_sincos_2d(*spec.grid, config["dim"])[None])
            state.setdefault(f"{side}_positions", []).append(positions[0, :spec.num_tokens])
        state.setdefault("token_embedding.weight", []).append(tensors[f"{encoder}.token_emb.weight"])
        state.setdefault("decoder_token_embedding.weight", []).append(
            _one(tensors, f"{decoder}.token_emb.weight", ml4m_name))
        encoder_modality = _one(tensors, f"{encoder}.mod_emb", ml4m_name).reshape(1, -1)
        decoder_modality = tensors.get(f"{decoder}.mod_emb")
        if decoder_modality is None and not shared:
            raise Ml4mError(f"{decoder}.mod_emb is missing (the config does not share modality embeddings)")
        decoder_modality = encoder_modality if decoder_modality is None else decoder_modality.reshape(1, -1)
        if shared and not torch.equal(decoder_modality, encoder_modality):
            raise Ml4mError(f"{decoder}.mod_emb differs from {encoder}.mod_emb although the config shares "
                            "modality embeddings (share_modality_embeddings)")
        state.setdefault("modality_embedding", []).append(encoder_modality)
        state.setdefault("decoder_modality_embedding", []).append(decoder_modality)
        state[f"heads.{len(specs) - 1}.weight"] = _one(tensors, f"{decoder}.to_logits.weight", ml4m_name)
    joined = {key: torch.cat(value) if isinstance(value, list) else value for key, value in state.items()}
    if shared:
        del joined["decoder_modality_embedding"]
    model_config = _model_config(config, bias, shared)
    joined["mask_token"] = _one(tensors, "mask_token", "mask_token").reshape(-1)
    _add_blocks(joined, tensors, model_config, bias)
    with torch.device("meta"):  # no memory and no initial draws: every weight comes from the checkpoint
        model = FourM(model_config, specs)
    _load(model, joined)
    for name, tensor in index_buffers(model_config, specs).items():  # the tables computed, not loaded
        setattr(model, name, tensor)
    return Ml4mModel(model, names, dict(config), list(skip), position_rows)


def _model_config(config: dict, bias: bool, shared: bool) -> ModelConfig:
    shape = dict(dim=int(config["dim"]), encoder_layers=int(config["encoder_depth"]),
                 decoder_layers=int(config["decoder_depth"]), heads=int(config["num_heads"]))
    preset = next((name for name, values in PRESETS.items() if values == shape), "tiny")
    return ModelConfig(preset=preset, **shape, mlp_ratio=float(config.get("mlp_ratio", 4.0)), bias=bias,
                       style="ml4m", mlp="swiglu" if config.get("gated_mlp", False) else "gelu",
                       separate_decoder_modalities=not shared)


def _add_blocks(state: dict, tensors: dict, config: ModelConfig, bias: bool) -> None:
    """The transformer's weights, ml-4m's names to pairless's (bias-less norms: ml-4m's zero buffers)."""
    pairs = [(ours, theirs) for ours, theirs in _TOP_PARTS.items()]
    for side, count, attention in (("encoder", config.encoder_layers, "attn"),
                                   ("decoder", config.decoder_layers, "self_attn")):
        for index in range(count):
            for ours, theirs in _BLOCK_PARTS.items():
                if side == "encoder" and ours.startswith(("norm_cross", "context_norm", "cross.")):
                    continue
                if ours == "fc3" and config.architecture().mlp != "swiglu":
                    continue
                theirs = theirs.format(attention=attention)
                pairs.append((f"{side}.{index}.{ours}", f"{side}.{index}.{theirs}"))
    for ours, theirs in pairs:
        state[f"{ours}.weight"] = _one(tensors, f"{theirs}.weight", theirs)
        has_bias = bias or ours == "context_projection"  # ml-4m's context projection always has one
        found = tensors.get(f"{theirs}.bias")
        if has_bias:
            state[f"{ours}.bias"] = _one(tensors, f"{theirs}.bias", theirs)
        elif found is not None and bool(found.any()):
            raise Ml4mError(f"{theirs}.bias is not zero in a model without biases (config *_bias=False)")


def _load(model: FourM, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and expected[key].shape != value.shape:
            raise Ml4mError(f"tensor for {key}: shape {tuple(value.shape)}, the model needs "
                            f"{tuple(expected[key].shape)}")
    try:
        model.load_state_dict({key: value.to(expected[key].dtype) for key, value in state.items()
                               if key in expected}, strict=True, assign=True)
    except RuntimeError as error:
        raise Ml4mError(f"the converted weights do not fit: {error}") from error
    unused = sorted(set(state) - set(expected))
    if unused:
        raise Ml4mError(f"converted tensors the model has no place for: {', '.join(unused[:5])}")


def check_exportable(model: FourM) -> None:
    """Refuse a model that ml-4m's FM cannot compute, naming every option that differs."""
    architecture = model.architecture
    wanted = {key: value for key, value in STYLES["ml4m"].items()
              if key not in ("mlp", "separate_decoder_modalities")}
    wrong = [f"{key}={getattr(architecture, key)!r} (ml-4m: {value!r})" for key, value in wanted.items()
             if getattr(architecture, key) != value]
    if architecture.head_bias:
        wrong.append("head_bias=True (ml-4m: False)")
    if wrong:
        raise Ml4mError("the model lacks ml-4m's options: " + ", ".join(wrong)
                        + "; only a model trained with model.style=ml4m (or imported) can be exported")
    if model.config.dropout:
        raise Ml4mError(f"model.dropout={model.config.dropout}: ml-4m's FM has no dropout")


def to_ml4m(model: FourM, names: dict[str, str] | None = None, config: dict | None = None,
            mapping: dict | None = None, position_rows: dict[str, int] | None = None,
            ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """ml-4m tensors and safetensors metadata for ``model`` (inverse of :func:`from_ml4m`).

    ``names``: pairless modality -> ml-4m name (an imported run's own; default: the mapping file's);
    ``config``: the ml-4m config to start from (an imported run's; its shape keys are rewritten);
    ``position_rows``: rows of each ml-4m position table (an imported run's; default: 512 for sin-cos
    sequences, as ml-4m builds them, else the modality's token count).
    """
    check_exportable(model)
    mapping = mapping if mapping is not None else read_mapping()
    reverse = {entry["name"]: name for name, entry in mapping["modalities"].items()}
    names = dict(names or {})
    missing = [name for name in model.modalities if name not in names and name not in reverse]
    if missing:
        raise Ml4mError(f"modalities {', '.join(missing)} have no ml-4m name (the mapping file maps "
                        f"{', '.join(sorted(reverse))}); add them to a --modalities file")
    names = {name: names.get(name, reverse.get(name)) for name in model.modalities}
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    dim, bias = model.config.dim, model.config.bias
    tensors: dict[str, torch.Tensor] = {}
    separate = model.decoder_modality_embedding is not None
    for index, name in enumerate(model.modalities):
        spec, ml4m_name = model.specs[name], names[name]
        entry = mapping["modalities"].get(ml4m_name, {})
        grid = entry.get("grid")
        if spec.kind == "image" and grid and tuple(grid) != spec.grid:
            raise Ml4mError(f"modality {name!r}: token grid {spec.grid}, ml-4m's {ml4m_name} has "
                            f"{tuple(grid)} (tokens of another tokenizer or resolution); map it to another "
                            "ml-4m name")
        vocab = slice(int(model.vocab_offset[index]), int(model.vocab_offset[index]) + spec.vocab_size)
        slots = slice(int(model.slot_offset[index]), int(model.slot_offset[index]) + spec.num_tokens)
        for side, prefix in (("encoder", f"encoder_embeddings.{ml4m_name}"),
                             ("decoder", f"decoder_embeddings.{ml4m_name}")):
            table = "token_embedding.weight" if side == "encoder" else "decoder_token_embedding.weight"
            tensors[f"{prefix}.token_emb.weight"] = state[table][vocab]
            positions = state[f"{side}_positions"][slots]
            total = (position_rows or {}).get(ml4m_name, SEQUENCE_TABLE_ROWS if spec.kind == "sequence"
                                              else spec.num_tokens)
            if total > spec.num_tokens:  # ml-4m's sequence tables keep rows no token reaches: sin-cos ones
                rest = sincos_1d(torch.arange(spec.num_tokens, total), dim)
                positions = torch.cat([positions, rest.to(positions.dtype)])
            tensors[f"{prefix}.pos_emb"] = positions[None]
            table = "decoder_modality_embedding" if side == "decoder" and separate else "modality_embedding"
            tensors[f"{prefix}.mod_emb"] = state[table][index].reshape(1, 1, dim)
        tensors[f"decoder_embeddings.{ml4m_name}.to_logits.weight"] = state[f"heads.{index}.weight"]
    tensors["mask_token"] = state["mask_token"].reshape(1, 1, dim)
    for ours, value in state.items():
        top = ours.split(".")[0]
        if top not in ("encoder", "decoder", *_TOP_PARTS):
            continue
        tensors[_ml4m_key(ours)] = value
    for key in [key for key in tensors if key.endswith(".weight") and _is_norm(key)]:
        tensors.setdefault(key[: -len("weight")] + "bias", torch.zeros(dim))  # ml-4m's zero bias buffer
    exported = dict(config or {})
    exported.update(_exported_config(model, names, bias, separate, exported))
    tensors = {key: value.contiguous().clone() for key, value in tensors.items()}
    return tensors, {key: str(value) for key, value in exported.items()}


def _is_norm(key: str) -> bool:
    return any(part in key for part in ("norm1.", "norm2.", "query_norm.", "context_norm.", "encoder_norm.",
                                        "decoder_norm."))


def _ml4m_key(ours: str) -> str:
    """ml-4m's name of a pairless transformer tensor."""
    top, *rest = ours.split(".")
    if top in _TOP_PARTS:
        return ".".join([_TOP_PARTS[top], *rest])
    index, *part = rest
    attention = "attn" if top == "encoder" else "self_attn"
    for mine, theirs in sorted(_BLOCK_PARTS.items(), key=lambda item: -len(item[0])):
        if ".".join(part).startswith(mine + "."):
            tail = ".".join(part)[len(mine) + 1:]
            return f"{top}.{index}.{theirs.format(attention=attention)}.{tail}"
    raise Ml4mError(f"tensor {ours!r} has no ml-4m counterpart")


def _exported_config(model: FourM, names: dict[str, str], bias: bool, separate: bool, base: dict) -> dict:
    config = model.config
    ordered = [names[name] for name in model.modalities]
    gated = model.architecture.mlp == "swiglu"
    values = {"domains_in": ordered, "domains_out": ordered, "dim": config.dim,
              "encoder_depth": config.encoder_layers, "decoder_depth": config.decoder_layers,
              "num_heads": config.heads, "mlp_ratio": config.mlp_ratio, "qkv_bias": bias, "proj_bias": bias,
              "mlp_bias": bias, "norm_bias": bias, "act_layer": "SiLU" if gated else "GELU",
              "gated_mlp": gated, "qk_norm": False, "decoder_causal_mask": False, "decoder_sep_mask": True,
              "num_register_tokens": 0, "share_modality_embeddings": not separate}
    values.setdefault("image_size", base.get("image_size", 224))
    values.setdefault("patch_size", base.get("patch_size", 16))
    return values
