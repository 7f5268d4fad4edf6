"""Reading and writing RWKV-7 weights: BlinkDL .pth files and longyarn's own directory format.

The own format is a directory:

    config.json                  {"format": "longyarn-rwkv7", "format_version": 1, sizes...}
    model.safetensors            BlinkDL key names and shapes, or shards named
    model-00001-of-0000N.safetensors   so that no file passes a size limit (16 MiB by default)
    tokenizer.json               optional; a `tokenizers` tokenizer

A tensor too large for one shard is cut along its first dimension into pieces named
`<key>#part<i>of<n>`; loading joins them back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, InvalidInput
from .config import RWKV7Config, validate_state_dict, without_unused_tensors

OWN_FORMAT_NAME = "longyarn-rwkv7"
OWN_FORMAT_VERSION = 1
DEFAULT_MAX_SHARD_BYTES = 16 * 1024 * 1024

_SHARD_NAME = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")
_PART_KEY = re.compile(r"^(.+)#part(\d+)of(\d+)$")
_CONFIG_SIZE_KEYS = tuple(RWKV7Config.__dataclass_fields__)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """Weights as stored (any float dtype), the sizes inferred from them, and the tokenizer."""

    state_dict: dict[str, torch.Tensor]
    config: RWKV7Config
    tokenizer: Any | None  # tokenizers.Tokenizer
    extra_config: dict[str, Any]  # the own format's config.json beyond the sizes


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Load a BlinkDL RWKV-7 .pth file or a longyarn model directory, validated.

    Raises `CheckpointError` (one sentence) for a missing, unreadable or foreign file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"There is no model at {path}; nothing was loaded, so check the path "
            "(an RWKV-7 .pth file or a longyarn model directory)."
        )
    if path.is_dir():
        return _load_own_format(path)
    state_dict = without_unused_tensors(_load_pth(path))
    config = _infer_rwkv7_config(state_dict, str(path))
    return LoadedCheckpoint(state_dict, config, tokenizer=None, extra_config={})


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for truncated or foreign files
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({reason}); nothing was loaded, "
            "so copy or download the file again, or check that it is a .pth weights file."
        ) from error
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise CheckpointError(
            f"{path} holds {type(loaded).__name__} rather than a plain dictionary of named "
            "tensors; nothing was loaded, so save the model's state_dict() alone."
        )
    return dict(loaded)


def _older_rwkv_version(keys: set[str]) -> str | None:
    """Which earlier RWKV generation a key set looks like, if any."""
    if any(k.endswith(("att.time_maa_x", "att.time_maa_w1", "att.time_decay_w1")) for k in keys):
        return "RWKV-6"
    if any(k.endswith("att.time_faaaa") for k in keys):
        return "RWKV-5"
    if any(k.endswith("att.time_decay") for k in keys):
        # RWKV-5 added a group norm (ln_x) to the time-mix; RWKV-4 has none.
        return "RWKV-5" if any(k.endswith("att.ln_x.weight") for k in keys) else "RWKV-4"
    return None


def _infer_rwkv7_config(state_dict: Mapping[str, torch.Tensor], source: str) -> RWKV7Config:
    keys = set(state_dict)
    older = _older_rwkv_version(keys)
    if older is not None:
        raise CheckpointError(
            f"{source} looks like an {older} checkpoint, but longyarn runs only RWKV-7 (x070) "
            "models; nothing was loaded, so choose an RWKV-7 checkpoint."
        )
    if "emb.weight" not in keys and any(k.startswith(("model.", "rwkv.")) for k in keys):
        raise CheckpointError(
            f"{source} uses Hugging Face key names rather than BlinkDL's; nothing was loaded, "
            "so use the original BlinkDL RWKV-7 .pth file."
        )
    config = RWKV7Config.from_state_dict(state_dict, source)
    validate_state_dict(state_dict, config, source)
    return config


def _load_own_format(directory: Path) -> LoadedCheckpoint:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{directory} is a directory without a config.json, so it is not a longyarn model; "
            "nothing was loaded, so point at a model directory or an RWKV-7 .pth file."
        )
    try:
        config_json = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{config_path} is not readable JSON ({error}); nothing was loaded, "
            "so restore the file from the model's original copy."
        ) from error
    if not isinstance(config_json, dict) or config_json.get("format") != OWN_FORMAT_NAME:
        raise CheckpointError(
            f"{config_path} does not declare \"format\": \"{OWN_FORMAT_NAME}\"; nothing was "
            "loaded, so point at a directory written by longyarn's save_own_format."
        )
    version = config_json.get("format_version")
    if not isinstance(version, int) or version > OWN_FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path} has format_version {version!r}, which this longyarn does not "
            f"read (it reads up to {OWN_FORMAT_VERSION}); nothing was loaded, so upgrade longyarn."
        )

    state_dict = without_unused_tensors(_read_weight_files(directory))
    config = _infer_rwkv7_config(state_dict, str(directory))
    declared = {k: config_json.get(k) for k in _CONFIG_SIZE_KEYS if k in config_json}
    mismatched = {k: v for k, v in declared.items() if v != getattr(config, k)}
    if mismatched:
        key, value = next(iter(mismatched.items()))
        raise CheckpointError(
            f"{config_path} says {key} is {value} but the weights have {getattr(config, key)}; "
            "nothing was loaded, so the directory mixes files from two models."
        )

    tokenizer = None
    tokenizer_path = directory / "tokenizer.json"
    if tokenizer_path.is_file():
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as error:  # tokenizers raises a bare Exception for bad files
            raise CheckpointError(
                f"{tokenizer_path} is not a valid tokenizers file ({error}); nothing was loaded, "
                "so restore it from the model's original copy."
            ) from error
    extra = {k: v for k, v in config_json.items() if k not in _CONFIG_SIZE_KEYS}
    return LoadedCheckpoint(state_dict, config, tokenizer, extra)


def _weight_files(directory: Path) -> list[Path]:
    single = directory / "model.safetensors"
    shards = sorted(p for p in directory.iterdir() if _SHARD_NAME.match(p.name))
    if single.is_file() and shards:
        raise CheckpointError(
            f"{directory} holds both model.safetensors and sharded model files; nothing was "
            "loaded, so delete the stale ones (save_own_format writes one or the other)."
        )
    if single.is_file():
        return [single]
    if not shards:
        raise CheckpointError(
            f"{directory} has no model.safetensors or model-NNNNN-of-NNNNN.safetensors files; "
            "nothing was loaded, so copy the weight files into it."
        )
    counts = {int(_SHARD_NAME.match(p.name).group(2)) for p in shards}
    indices = sorted(int(_SHARD_NAME.match(p.name).group(1)) for p in shards)
    total = counts.pop() if len(counts) == 1 else None
    if total is None or indices != list(range(1, total + 1)):
        raise CheckpointError(
            f"{directory} has an incomplete or mixed set of weight shards "
            f"({', '.join(p.name for p in shards)}); nothing was loaded, so copy every shard again."
        )
    return shards


def _read_weight_files(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(directory):
        try:
            tensors.update(load_file(str(file), device="cpu"))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(
                f"{file} could not be read as safetensors ({error}); nothing was loaded, "
                "so copy the file again."
            ) from error
    return _join_parts(tensors, str(directory))


def _join_parts(tensors: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    pieces: dict[str, dict[int, torch.Tensor]] = {}
    counts: dict[str, int] = {}
    joined: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        match = _PART_KEY.match(key)
        if match is None:
            joined[key] = tensor
            continue
        name, index, count = match.group(1), int(match.group(2)), int(match.group(3))
        pieces.setdefault(name, {})[index] = tensor
        counts[name] = count
    for name, parts in pieces.items():
        if sorted(parts) != list(range(counts[name])):
            raise CheckpointError(
                f"{source} has only {len(parts)} of the {counts[name]} pieces of '{name}'; "
                "nothing was loaded, so copy every weight shard again."
            )
        joined[name] = torch.cat([parts[i] for i in range(counts[name])], dim=0)
    return joined


def save_own_format(
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | RWKV7Config | None,
    tokenizer: str | os.PathLike[str] | Any | None,
    out_dir: str | os.PathLike[str],
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write an RWKV-7 model as a longyarn model directory that `LocalLM.load` reads.

    `state_dict` uses BlinkDL key names (tensors are saved in their own dtype, e.g. bf16).
    `config` may add fields to config.json (e.g. training notes); any size it states must
    match the weights. `tokenizer` is a path to a tokenizer.json, a `tokenizers.Tokenizer`,
    or None. Files are split so that none exceeds `max_shard_bytes`. Returns `out_dir`.
    """
    from safetensors.torch import save_file

    # Layer 0's value-residual tensors are dropped here as on loading: nothing reads them.
    tensors = without_unused_tensors({k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()})
    inferred = _infer_rwkv7_config(tensors, "The state dict to save")
    extra = config.to_dict() if isinstance(config, RWKV7Config) else dict(config or {})
    for key in _CONFIG_SIZE_KEYS:
        if key in extra and extra[key] != getattr(inferred, key):
            raise InvalidInput(
                f"The config says {key} is {extra[key]} but the weights have "
                f"{getattr(inferred, key)}; nothing was written, so fix the config or the weights."
            )
    if max_shard_bytes <= 0:
        raise InvalidInput(
            f"max_shard_bytes must be positive, not {max_shard_bytes}; nothing was written."
        )
    config_json = {
        **extra,
        "format": OWN_FORMAT_NAME,
        "format_version": OWN_FORMAT_VERSION,
        **inferred.to_dict(),
    }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Stale weight files from an earlier save would be mixed into the next load.
    for old in out.iterdir():
        if old.name == "model.safetensors" or _SHARD_NAME.match(old.name):
            old.unlink()

    shards = _plan_shards(tensors, max_shard_bytes)
    metadata = {"format": OWN_FORMAT_NAME, "format_version": str(OWN_FORMAT_VERSION)}
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata=metadata)
    else:
        for index, shard in enumerate(shards, start=1):
            name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / name), metadata=metadata)

    if tokenizer is not None:
        if isinstance(tokenizer, (str, os.PathLike)):
            source = Path(tokenizer)
            if source.resolve() != (out / "tokenizer.json").resolve():
                shutil.copyfile(source, out / "tokenizer.json")
        else:
            tokenizer.save(str(out / "tokenizer.json"))
    (out / "config.json").write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")
    return out


# safetensors adds a JSON header per file; this leaves room for it within the size limit.
_HEADER_ALLOWANCE = 64 * 1024


def _plan_shards(
    tensors: Mapping[str, torch.Tensor], max_shard_bytes: int
) -> list[dict[str, torch.Tensor]]:
    """Group tensors into shards under the limit, cutting any that are too big on their own."""
    budget = max(1, max_shard_bytes - _HEADER_ALLOWANCE)
    pieces: list[tuple[str, torch.Tensor]] = []
    for key, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if size <= budget or tensor.dim() == 0:
            pieces.append((key, tensor))
            continue
        row_bytes = max(1, size // tensor.shape[0])
        rows_per_piece = max(1, budget // row_bytes)
        parts = torch.split(tensor, rows_per_piece, dim=0)
        for index, part in enumerate(parts):
            pieces.append((f"{key}#part{index}of{len(parts)}", part.clone()))

    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for key, tensor in pieces:
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and used + size > budget:
            shards.append({})
            used = 0
        shards[-1][key] = tensor
        used += size
    return shards
