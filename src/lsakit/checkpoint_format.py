"""The checkpoint format (:mod:`lsakit.checkpoint`): its metadata, and what save and load share.

The metadata constants and :class:`CheckpointMeta`, reading a safetensors header's metadata, and
comparing state-dict shapes (:func:`describe_mismatch`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

import safetensors
import torch

from lsakit import models
from lsakit._io import one_line
from lsakit.errors import CheckpointError

#: Version of the metadata layout written by :func:`~lsakit.checkpoint.save_checkpoint`; readers
#: accept only this.
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


def describe_mismatch(*, expected: Shapes, found: Shapes) -> str | None:
    """One-line description of how ``found`` state-dict shapes differ from ``expected``, or None.

    Args:
        expected: the shapes the model's state dict has, by key.
        found: the shapes of the tensors to be loaded, by key.

    Returns:
        The missing keys, the unexpected keys and the first key with another shape (a few of
        each named, the rest counted), comma-separated; None when the keys and shapes agree.
    """
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


def shapes_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor, by name."""
    return {key: tuple(t.shape) for key, t in tensors.items()}


def header_metadata(source: Path) -> dict[str, str]:
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
