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
header, and ``.pt`` files are read with ``weights_only=True`` (tensors and plain containers).
Every problem a user can cause or fix (missing, truncated or foreign file, incompatible metadata,
mismatching weights) raises :class:`~lsakit.errors.CheckpointError` with a one-line message
naming the file and the fix.

Saving is in this module; loading is in :mod:`lsakit.checkpoint_load`, and the metadata and the
helpers both share are in :mod:`lsakit.checkpoint_format`: their names are importable from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from lsakit import models
from lsakit._io import atomic_write, one_line
from lsakit.checkpoint_format import (
    FORMAT_VERSION,
    METADATA_KEY,
    RESERVED_FIELDS,
    TRANSFORMS_FIELD,
    CheckpointMeta,
    PathLike,
    Shapes,
    describe_mismatch,
    header_metadata,
    shapes_of,
)
from lsakit.checkpoint_load import TORCH_SUFFIXES, load_checkpoint, load_weights, read_meta
from lsakit.defenses import TRANSFORMS, model_transforms
from lsakit.errors import CheckpointError, ConfigError, InputError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "RESERVED_FIELDS",
    "TORCH_SUFFIXES",
    "TRANSFORMS_FIELD",
    "CheckpointMeta",
    "PathLike",
    "Shapes",
    "describe_mismatch",
    "load_checkpoint",
    "load_weights",
    "read_meta",
    "save_checkpoint",
]


# --------------------------------------------------------------------------------------- saving


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    *,
    model_name: str,
    model_kwargs: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    check_recipe: bool = True,
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
        check_recipe: store ``model_kwargs`` made portable and complete
            (:func:`lsakit.models.portable_kwargs`, which checks the spec and its arguments) and
            refuse weights that do not fit the model they rebuild; False stores ``model_name``
            and ``model_kwargs`` as given, unchecked (the trainer's choice for a module the
            caller built, which has no recipe to rebuild it from).

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
    full_kwargs = (
        models.portable_kwargs(model_name, model_kwargs) if check_recipe else dict(model_kwargs)
    )
    fields = dict(extra or {})
    transforms = _transforms_for_saving(model, fields)
    metadata = {METADATA_KEY: _encode_meta(model_name, full_kwargs, fields)}
    state = model.state_dict()
    if check_recipe:
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
        expected=shapes_of(reference.state_dict()),
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
        header_metadata(temp)

    try:
        atomic_write(target, write)
    except (OSError, safetensors.SafetensorError, CheckpointError) as err:
        raise CheckpointError(
            f"cannot write checkpoint {target} ({one_line(err)}); check that the directory "
            f"is writable and has free space (any previous checkpoint is unchanged)"
        ) from err
