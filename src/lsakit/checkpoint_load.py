"""Loading checkpoints (:mod:`lsakit.checkpoint`): :func:`read_meta`, :func:`load_checkpoint`,
and :func:`load_weights` (an lsakit checkpoint or a plain state dict).

The metadata is checked, the model rebuilt (a model built by the user's code only when the caller
names it), its transforms re-applied and the weights loaded strictly; every problem is one
:class:`~lsakit.errors.CheckpointError` (or ConfigError) line.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

import safetensors
import safetensors.torch
import torch
from torch import nn

from lsakit import models
from lsakit._io import load_torch_file, one_line
from lsakit.checkpoint_format import (
    FORMAT_VERSION,
    METADATA_KEY,
    RESERVED_FIELDS,
    TRANSFORMS_FIELD,
    CheckpointMeta,
    PathLike,
    describe_mismatch,
    header_metadata,
    shapes_of,
)
from lsakit.defenses import TRANSFORMS
from lsakit.errors import CheckpointError, ConfigError, InputError, LsakitError


def read_meta(path: PathLike) -> CheckpointMeta:
    """Read a checkpoint's metadata without loading its weights or building the model.

    Args:
        path: a file written by :func:`~lsakit.checkpoint.save_checkpoint`.

    Returns:
        Its format version, model spec, model arguments and extra fields.

    Raises:
        CheckpointError: missing or non-regular file, not a valid safetensors file, no lsakit
            metadata, corrupt metadata or an unsupported format version.
    """
    source = _existing_file(path)
    return _parse_meta(source, header_metadata(source))


def load_checkpoint(
    path: PathLike, *, map_location: str | torch.device = "cpu", model: str | None = None
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model a checkpoint describes and load its weights (strictly).

    Args:
        path: a file written by :func:`~lsakit.checkpoint.save_checkpoint`.
        map_location: device the returned model is moved to.
        model: the model spec the caller expects (None: any). A checkpoint of another model is
            refused, and a model built by the user's code (``module:factory``,
            ``file.py:factory``) is built only when named here.

    Returns:
        ``(model, meta)``; the model is in **eval mode** (loading is mostly for evaluation and
        analysis; call ``model.train()`` to resume training).

    Raises:
        CheckpointError: missing file; not a safetensors file, truncated, or corrupt header;
            no lsakit metadata; unsupported format version; model name, arguments or
            transforms unknown to this lsakit; weights not matching the model (names the key);
            a model built by code that ``model`` does not name.
        ConfigError: the checkpoint holds another model than ``model``.
        InputError: ``map_location`` is not a device.
    """
    device = _as_device(map_location)
    source = _existing_file(path)
    meta = _parse_meta(source, header_metadata(source))
    net = _build_model(source, meta, model)
    tensors = _load_tensors(source)
    _apply_transforms(source, net, meta, tensors.keys())
    _fill(
        net, tensors,
        f"checkpoint {source} does not fit model {meta.model!r} with {meta.model_kwargs}",
        "the file was altered or written by an incompatible version, re-save it",
    )  # fmt: skip
    return net.to(device).eval(), meta


#: Suffixes :func:`load_weights` reads as ``torch.load(weights_only=True)`` state dicts.
TORCH_SUFFIXES: Final = (".pt", ".pth", ".bin")


def load_weights(
    path: PathLike,
    *,
    model: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, CheckpointMeta]:
    """A model with its weights from an lsakit checkpoint or from a plain state dict.

    An lsakit checkpoint (``.safetensors`` with lsakit metadata) is loaded with
    :func:`load_checkpoint` (``model``, when given, must be its model; ``model_kwargs`` must not
    be given: the checkpoint records them). Anything else is a plain ``state_dict`` —
    ``.safetensors``, or ``.pt``/``.pth``/``.bin`` read with ``torch.load(weights_only=True)``
    (never code; a ``{"state_dict": …}`` / ``{"model": …}`` wrapper is unpacked) — loaded strictly
    into ``lsakit.models.build(model, **model_kwargs)``; for an ``hf:`` model the keys may also be
    the transformers model's own (its ``model.safetensors``). The returned meta of a plain state
    dict has the spec, the portable arguments and no extra fields. The model is in eval mode.

    Args:
        path: an lsakit checkpoint, a ``.safetensors`` state dict, or a ``.pt``/``.pth``/``.bin``
            state dict.
        model: the model spec; required for a plain state dict and for an lsakit checkpoint
            whose model runs the user's code; for an lsakit checkpoint it must be the model the
            checkpoint holds (None: whatever it holds).
        model_kwargs: the arguments ``model`` is built with for a plain state dict (None: its
            defaults); must be empty for an lsakit checkpoint.
        map_location: device the returned model is moved to (checked first).

    Returns:
        ``(model, meta)``: the model with the weights, in eval mode on ``map_location``, and the
        checkpoint's metadata (for a plain state dict: the spec and its portable arguments).

    Raises:
        CheckpointError: missing or unreadable file, no ``model`` for a plain state dict, a state
            dict that does not fit the model (names the keys).
        ConfigError: ``model`` differs from the checkpoint's, or ``model_kwargs`` given for one.
    """
    device = _as_device(map_location)
    source = _existing_file(path)
    if source.suffix.lower() not in TORCH_SUFFIXES:
        metadata = header_metadata(source)
        if METADATA_KEY in metadata:
            meta = _parse_meta(source, metadata)
            if model is not None and model != meta.model:
                raise ConfigError(
                    f"{{model}} {model} but {source} holds a {meta.model}; drop {{model}} or "
                    f"pass a checkpoint of {model}"
                )
            if model_kwargs:
                raise ConfigError(
                    f"{source} records its model's arguments {meta.model_kwargs}; drop "
                    "{model_kwargs}"
                )
            return load_checkpoint(source, map_location=device, model=model)
        state = _load_tensors(source)
    else:
        state = _torch_state_dict(source)
    if model is None:
        raise CheckpointError(
            f"{source} is a plain state dict without lsakit metadata; pass {{model}} (and "
            "{model_kwargs}) naming the model it holds, e.g. {model} timm:resnet18"
        )
    kwargs = dict(model_kwargs or {})
    net = models.build(model, **kwargs)
    _fill(
        _state_target(net, state), state, f"{source} does not fit model {model!r} with {kwargs}",
        "pass the --model and --model-arg the weights were saved from",
    )  # fmt: skip
    return net.to(device).eval(), CheckpointMeta(
        FORMAT_VERSION, model, models.portable_kwargs(model, kwargs)
    )


def _state_target(net: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The module a plain state dict is for: ``net``, or the transformers model inside an
    :class:`~lsakit.models.HFClassifier` when the keys are that model's own."""
    if isinstance(net, models.HFClassifier):
        own = shapes_of(net.model.state_dict())
        if describe_mismatch(expected=own, found=shapes_of(state)) is None:
            return net.model
    return net


def _fill(target: nn.Module, tensors: Mapping[str, torch.Tensor], what: str, fix: str) -> None:
    """Load ``tensors`` into ``target`` strictly, or one CheckpointError: ``what``, the keys and
    shapes that differ, and ``fix``."""
    mismatch = describe_mismatch(expected=shapes_of(target.state_dict()), found=shapes_of(tensors))
    if mismatch is not None:
        raise CheckpointError(f"{what}: {mismatch}; {fix}")
    target.load_state_dict(tensors, strict=True)


def _torch_state_dict(source: Path) -> dict[str, torch.Tensor]:
    loaded = load_torch_file(
        source, CheckpointError, "save model.state_dict() with torch.save or safetensors"
    )
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise CheckpointError(
            f"{source} holds a {type(loaded).__name__} that is not a state dict (name → tensor); "
            f"save model.state_dict()"
        )
    return dict(loaded)


def _as_device(map_location: str | torch.device) -> torch.device:
    """Parse and probe the device before any work: an absent GPU fails here, not after loading."""
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError):
        raise InputError(
            f"map_location={map_location!r} is not a device; use e.g. 'cpu', 'cuda' or 'cuda:0'"
        ) from None
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # CPU-only builds raise AssertionError
        raise InputError(
            f"map_location={map_location!r} is not available here ({one_line(err)}); "
            f"use 'cpu' or an available device"
        ) from None
    return device


def _existing_file(path: PathLike) -> Path:
    source = Path(path)
    if not source.exists():
        raise CheckpointError(
            f"checkpoint {source} does not exist; check the path, or create one with "
            f"`lsakit train ...`"
        )
    if not source.is_file():
        raise CheckpointError(
            f"checkpoint {source} is not a regular file; pass the .safetensors file itself"
        )
    return source


def _parse_meta(source: Path, metadata: Mapping[str, str]) -> CheckpointMeta:
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(
            f"{source} has no lsakit metadata (it was not written by lsakit); save the model "
            f"with lsakit.checkpoint.save_checkpoint"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise _corrupt_meta(source, f"invalid JSON: {err.msg}") from None
    if not isinstance(meta, dict):
        raise _corrupt_meta(source, f"a JSON {type(meta).__name__}, not an object")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _corrupt_meta(source, f"format_version is {version!r}, not an integer")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {source} has format_version {version}, but this lsakit reads only "
            f"version {FORMAT_VERSION}; use the lsakit version that wrote it, or re-save it"
        )
    model_name, model_kwargs = meta.get("model"), meta.get("model_kwargs")
    if not isinstance(model_name, str):
        raise _corrupt_meta(source, f"model is {model_name!r}, not a name")
    if not isinstance(model_kwargs, dict):
        raise _corrupt_meta(source, f"model_kwargs is {model_kwargs!r}, not an object")
    extra = {key: value for key, value in meta.items() if key not in RESERVED_FIELDS}
    return CheckpointMeta(version, model_name, model_kwargs, extra)


def _corrupt_meta(source: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {source} has corrupt lsakit metadata ({problem}); re-save it"
    )


def _build_model(source: Path, meta: CheckpointMeta, expected: str | None) -> nn.Module:
    if expected is not None and expected != meta.model:
        raise ConfigError(
            f"checkpoint {source} holds a {meta.model}, not a {expected}; pass a checkpoint of "
            f"{expected}"
        )
    try:
        spec = models.parse_spec(meta.model)
    except ConfigError as err:
        raise CheckpointError(
            f"checkpoint {source} names no model lsakit can build: {err}"
        ) from err
    if spec.kind == "registry" and meta.model not in models.names():
        raise CheckpointError(
            f"checkpoint {source} is for model {meta.model!r}, which this lsakit does not know "
            f"(known: {', '.join(models.names())}); use the lsakit version that wrote it"
        )
    if spec.runs_code and expected is None:
        raise CheckpointError(
            f"checkpoint {source} builds its model by running code ({meta.model}); lsakit runs "
            f"it only when asked: pass --model {meta.model} (load_checkpoint(..., "
            f"model={meta.model!r})) if you trust that code"
        )
    try:
        return models.build(meta.model, **meta.model_kwargs)
    except ConfigError as err:
        raise CheckpointError(
            f"checkpoint {source}: cannot build its model {meta.model!r} with its model_kwargs: "
            f"{err}"
        ) from err


def _apply_transforms(
    source: Path, model: nn.Module, meta: CheckpointMeta, state_keys: Collection[str]
) -> None:
    """Apply ``meta.extra["transforms"]`` in order to the freshly built ``model``."""
    names = meta.extra.get(TRANSFORMS_FIELD, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _corrupt_meta(source, f"transforms is {names!r}, not a list of names")
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise CheckpointError(
            f"checkpoint {source} needs transforms {unknown}, which this lsakit does not know "
            f"(known: {', '.join(TRANSFORMS)}); use the lsakit version that wrote it"
        )
    for name in names:
        try:
            TRANSFORMS[name](model, state_keys)
        except LsakitError as err:
            raise CheckpointError(
                f"checkpoint {source}: transform {name!r} does not fit model {meta.model!r} "
                f"({one_line(err)}); the file was altered or written by an incompatible "
                f"version, re-save it"
            ) from err


def _load_tensors(source: Path) -> dict[str, torch.Tensor]:
    try:
        tensors: dict[str, torch.Tensor] = safetensors.torch.load_file(source, device="cpu")
    except (safetensors.SafetensorError, OSError) as err:
        raise CheckpointError(
            f"checkpoint {source} has unreadable weights ({one_line(err)}); it is corrupt: "
            f"re-save or re-download it"
        ) from err
    return tensors
