"""Checkpoints: one ``.safetensors`` file holding a registered model's weights and its recipe.

The file holds the model's ``state_dict`` tensors, and its safetensors header metadata (a
str → str map) holds one entry, ``{"lsakit": json.dumps(meta)}``, where ``meta`` is::

    {"format_version": 1, "model": <registry name>, "model_kwargs": {...}, **extra}

so :func:`load_checkpoint` can rebuild the model with :func:`lsakit.models.build` and load the
weights strictly. ``extra`` holds whatever JSON-able fields the caller adds (data set, epoch,
metrics, training arguments). JSON turns tuples into lists; everything else round-trips.

A model changed after it was built (PNI noise layers, pruning masks: :mod:`lsakit.defenses`)
records the changes in ``extra["transforms"]``, a list of names from
:data:`lsakit.defenses.TRANSFORMS` (e.g. ``["noise_injection", "masks"]``). The caller may pass
it; if not, :func:`save_checkpoint` records :func:`lsakit.defenses.model_transforms` of the model
(nothing for a plain model, whose metadata is unchanged). :func:`load_checkpoint` applies the
named transforms, in order, to the freshly built model before loading the weights; each one is
plain code in lsakit, driven by the file's tensor names (e.g. ``masks`` creates a
``weight_mask`` buffer for every ``<layer>.weight_mask`` tensor), so loading stays code-free.

``model`` is any spec :func:`lsakit.models.build` takes (a registry name, ``timm:NAME``,
``torchvision:NAME``, ``hf:DIR`` — whose config is stored in ``model_kwargs`` — or a module /
file factory). A factory spec runs the user's code, so :func:`load_checkpoint` builds one only
when the caller names the same spec (``model=``, the CLI's ``--model``): a checkpoint alone never
makes lsakit import code. :func:`load_weights` also loads plain state dicts (``.safetensors``
without lsakit metadata, or ``.pt`` read with ``torch.load(weights_only=True)``) into the model
the caller names.

Loading never executes code from the file: safetensors holds raw tensor bytes and a JSON
header, and ``.pt`` files are read with ``weights_only=True`` (tensors and plain containers). Every problem a user can cause or
fix (missing, truncated or foreign file, incompatible metadata, mismatching weights) raises
:class:`~lsakit.errors.CheckpointError` with a one-line message naming the file and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

import safetensors
import safetensors.torch
import torch
from torch import nn

from lsakit import models
from lsakit._io import atomic_write, load_torch_file, one_line
from lsakit.defenses import TRANSFORMS, model_transforms
from lsakit.errors import CheckpointError, ConfigError, InputError, LsakitError

#: Version of the metadata layout written by :func:`save_checkpoint`; readers accept only this.
FORMAT_VERSION: Final = 1
#: Key of the safetensors header metadata entry that holds the JSON-encoded lsakit metadata.
METADATA_KEY: Final = "lsakit"
#: Metadata fields set by lsakit itself; ``extra`` may not override them.
RESERVED_FIELDS: Final = ("format_version", "model", "model_kwargs")
#: The ``extra`` field listing the transforms (:data:`lsakit.defenses.TRANSFORMS`) to re-apply.
TRANSFORMS_FIELD: Final = "transforms"

PathLike: TypeAlias = str | os.PathLike[str]
Shapes: TypeAlias = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class CheckpointMeta:
    """The metadata of a checkpoint: how to rebuild the model, plus the caller's extra fields.

    Attributes:
        format_version: metadata layout version (:data:`FORMAT_VERSION`).
        model: registry name for :func:`lsakit.models.build`.
        model_kwargs: complete keyword arguments of the build (defaults filled in at save time,
            so a later change of defaults does not change what the checkpoint rebuilds), made
            self-contained (a genotype file is stored as its JSON text).
        extra: every other field the caller saved (data set, epoch, metrics, arguments, …).
    """

    format_version: int
    model: str
    model_kwargs: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocessing(self) -> models.Preprocessing | None:
        """The input transform of a model that started from pretrained weights (None: none);
        its normalization is inside the model, rebuilt from ``model_kwargs``."""
        recorded = self.model_kwargs.get("preprocessing")
        return None if recorded is None else models.Preprocessing.from_json(recorded)


# --------------------------------------------------------------------------------------- saving


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    *,
    model_name: str,
    model_kwargs: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and metadata to the safetensors file ``path``, atomically.

    The file is first written to ``.<name>.tmp-<random>`` in the same directory, checked to
    parse, ``fsync``-ed, then moved onto ``path`` with ``os.replace`` and the directory is
    ``fsync``-ed: a crash or error at any point leaves either the old checkpoint or the new one,
    never a torn file, and no temporary file behind. Parent directories are created.

    Args:
        path: destination file, conventionally ending in ``.safetensors``.
        model: the model built by ``lsakit.models.build(model_name, **model_kwargs)`` (not
            wrapped in DataParallel/DDP/``torch.compile``); on any device.
        model_name: its registry name.
        model_kwargs: the keyword arguments it was built with (defaults may be omitted).
        extra: further JSON-able metadata (data set, epoch, metrics, training arguments).
            ``extra["transforms"]`` names the model's transforms; when absent, those the model
            carries are detected and recorded.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: unknown model name, argument or transform, or a model whose weights do
            not fit ``model_name`` / ``model_kwargs`` and its transforms (so a checkpoint that
            could not be loaded is never written).
        InputError: ``extra`` overrides a reserved field or is not JSON-serializable, its
            ``transforms`` is not a list of names, or the state dict holds a non-tensor entry.
        CheckpointError: the file or its directory cannot be written (permissions, disk full).
    """
    target = Path(path)
    full_kwargs = models.portable_kwargs(model_name, model_kwargs)
    fields = dict(extra or {})
    transforms = _transforms_for_saving(model, fields)
    metadata = {METADATA_KEY: _encode_meta(model_name, full_kwargs, fields)}
    state = model.state_dict()
    _check_state_fits_recipe(state, model_name, full_kwargs, transforms)
    _write_atomically(target, _tensors_for_saving(state), metadata)
    return target


def _encode_meta(model_name: str, model_kwargs: dict[str, Any], extra: dict[str, Any]) -> str:
    """JSON-encode the metadata, refusing anything that would not round-trip through JSON."""
    reserved = [key for key in RESERVED_FIELDS if key in extra]
    if reserved:
        raise InputError(
            f"extra may not set {reserved}: those checkpoint fields come from model_name and "
            f"model_kwargs; rename the extra fields"
        )
    non_str = [key for key in extra if not isinstance(key, str)]
    if non_str:
        raise InputError(f"extra has non-string keys {non_str!r}; use string keys (JSON objects)")
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "model_kwargs": model_kwargs,
        **extra,
    }
    try:
        return json.dumps(meta)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"checkpoint metadata is not JSON-serializable ({one_line(err)}); pass only str, "
            f"int, float, bool, None, lists and dicts in extra and model_kwargs"
        ) from None


def _transforms_for_saving(model: nn.Module, fields: dict[str, Any]) -> list[str]:
    """The transforms to record: ``fields["transforms"]`` checked, else detected on the model.

    A detected non-empty list is written into ``fields``; a plain model adds nothing.
    """
    if TRANSFORMS_FIELD not in fields:
        detected = model_transforms(model)
        if detected:
            fields[TRANSFORMS_FIELD] = detected
        return detected
    names = fields[TRANSFORMS_FIELD]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise InputError(
            f"extra['transforms'] must be a list of transform names, got {names!r}; e.g. "
            f"{list(TRANSFORMS)}"
        )
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ConfigError(
            f"unknown transforms {unknown} in extra['transforms']; known: {', '.join(TRANSFORMS)}"
        )
    return list(names)


def _check_state_fits_recipe(
    state: Mapping[str, Any],
    model_name: str,
    model_kwargs: Mapping[str, Any],
    transforms: list[str],
) -> None:
    """Refuse to save weights that ``load_checkpoint`` could not load into the rebuilt model.

    The reference model is built on the meta device: shapes only, no memory, no initialization;
    the transforms are applied to it exactly as :func:`load_checkpoint` will.
    """
    with torch.device("meta"):
        reference = models.build(model_name, **model_kwargs)
    for name in transforms:
        TRANSFORMS[name](reference, state.keys())
    mismatch = describe_mismatch(
        expected=_shapes(reference.state_dict()),
        found={k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)},
    )
    if mismatch is not None:
        with_transforms = f" and transforms {transforms}" if transforms else ""
        raise ConfigError(
            f"the model's weights do not fit model_name={model_name!r} with model_kwargs "
            f"{dict(model_kwargs)}{with_transforms}: {mismatch}; pass the name and arguments the "
            f"model was built with, and save the bare model (unwrap "
            f"DataParallel/DDP/torch.compile)"
        )


def _tensors_for_saving(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, none sharing storage with another.

    safetensors refuses tensors that share storage (tied weights, views of one buffer) and
    non-contiguous ones; those are cloned, everything else is saved without a copy.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(
                f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor; "
                f"safetensors checkpoints hold tensors only"
            )
        tensor = value.detach().to("cpu")
        storage = tensor.untyped_storage()
        if (
            storage.data_ptr() in seen_storages
            or not tensor.is_contiguous()
            or storage.nbytes() != tensor.nbytes
        ):
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen_storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return tensors


def _write_atomically(
    target: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> None:
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(
            f"cannot create directory {directory} for checkpoint {target} ({one_line(err)}); "
            f"choose a writable location"
        ) from err
    if target.is_dir():
        raise CheckpointError(
            f"checkpoint path {target} is a directory; pass a file path such as "
            f"{target / 'model.safetensors'}"
        )

    def write(temp: Path) -> None:
        safetensors.torch.save_file(tensors, temp, metadata=metadata)
        # The serializer may swallow a failed final flush; a file that parses is complete.
        _header_metadata(temp)

    try:
        atomic_write(target, write)
    except (OSError, safetensors.SafetensorError, CheckpointError) as err:
        raise CheckpointError(
            f"cannot write checkpoint {target} ({one_line(err)}); check that the directory "
            f"is writable and has free space (any previous checkpoint is unchanged)"
        ) from err


# -------------------------------------------------------------------------------------- loading


def read_meta(path: PathLike) -> CheckpointMeta:
    """Read a checkpoint's metadata without loading its weights or building the model."""
    source = _existing_file(path)
    return _parse_meta(source, _header_metadata(source))


def load_checkpoint(
    path: PathLike, *, map_location: str | torch.device = "cpu", model: str | None = None
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model a checkpoint describes and load its weights (strictly).

    Args:
        path: a file written by :func:`save_checkpoint`.
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
    meta = _parse_meta(source, _header_metadata(source))
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

    Raises:
        CheckpointError: missing or unreadable file, no ``model`` for a plain state dict, a state
            dict that does not fit the model (names the keys).
        ConfigError: ``model`` differs from the checkpoint's, or ``model_kwargs`` given for one.
    """
    device = _as_device(map_location)
    source = _existing_file(path)
    if source.suffix.lower() not in TORCH_SUFFIXES:
        metadata = _header_metadata(source)
        if METADATA_KEY in metadata:
            meta = _parse_meta(source, metadata)
            if model is not None and model != meta.model:
                raise ConfigError(
                    f"--model {model} but {source} holds a {meta.model}; drop --model or pass a "
                    f"checkpoint of {model}"
                )
            if model_kwargs:
                raise ConfigError(
                    f"{source} records its model's arguments {meta.model_kwargs}; drop --model-arg"
                )
            return load_checkpoint(source, map_location=device, model=model)
        state = _load_tensors(source)
    else:
        state = _torch_state_dict(source)
    if model is None:
        raise CheckpointError(
            f"{source} is a plain state dict without lsakit metadata; pass --model (and "
            f"--model-arg) naming the model it holds, e.g. --model timm:resnet18"
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
        own = _shapes(net.model.state_dict())
        if describe_mismatch(expected=own, found=_shapes(state)) is None:
            return net.model
    return net


def _fill(target: nn.Module, tensors: Mapping[str, torch.Tensor], what: str, fix: str) -> None:
    """Load ``tensors`` into ``target`` strictly, or one CheckpointError: ``what``, the keys and
    shapes that differ, and ``fix``."""
    mismatch = describe_mismatch(expected=_shapes(target.state_dict()), found=_shapes(tensors))
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


def describe_mismatch(*, expected: Shapes, found: Shapes) -> str | None:
    """One-line description of how ``found`` state-dict shapes differ from ``expected``, or None."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    reshaped = [key for key in expected if key in found and found[key] != expected[key]]
    problems = []
    if missing:
        problems.append(f"missing {_some_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some_keys(unexpected)}")
    if reshaped:
        key = reshaped[0]
        more = (
            f" (and {len(reshaped) - 1} more keys with other shapes)" if len(reshaped) > 1 else ""
        )
        problems.append(
            f"key {key!r} has shape {found[key]} where the model expects {expected[key]}{more}"
        )
    return ", ".join(problems) or None


def _some_keys(keys: list[str], shown: int = 3) -> str:
    noun = "key" if len(keys) == 1 else "keys"
    listed = ", ".join(repr(k) for k in keys[:shown])
    more = f" (and {len(keys) - shown} more)" if len(keys) > shown else ""
    return f"{noun} {listed}{more}"


def _shapes(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(t.shape) for key, t in tensors.items()}


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


def _header_metadata(source: Path) -> dict[str, str]:
    """The safetensors header metadata; safe_open also checks the header covers the whole file."""
    try:
        with safetensors.safe_open(str(source), framework="pt") as handle:
            metadata: dict[str, str] | None = handle.metadata()
    except (safetensors.SafetensorError, OSError) as err:
        raise CheckpointError(
            f"checkpoint {source} is not a valid safetensors file ({one_line(err)}); it is "
            f"truncated, corrupt or another format: re-save or re-download it"
        ) from err
    return metadata or {}


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
