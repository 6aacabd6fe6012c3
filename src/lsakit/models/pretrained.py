"""Pretrained models: the weights' preprocessing, the normalization inside, where weights came from.

A pretrained model comes with the preprocessing it was trained with: torchvision's
``weights.transforms()``, timm's ``resolve_model_data_config``, Hugging Face's
``AutoImageProcessor``, RobustBench's per-model preprocessing. lsakit splits it in two:

* the **data transform** (:class:`Preprocessing`: resize, center crop, grey → RGB), applied to the
  data set's images, which stay in [0, 1] pixel space;
* the **normalization** (``(x − mean) / std``), put *inside* the model
  (:func:`add_input_normalization`), so that every attack, ε, clamp and noise of lsakit works in
  [0, 1] pixels, as for the registry's models.

Layer names do not change: the normalization is two buffers (``input_normalize_mean`` and
``_std``) that a forward pre-hook applies to the model's input — no wrapper around the model and
no module added to it (``layer1.0.relu`` stays ``layer1.0.relu``; an ``nn.Sequential`` runs the
same layers). A model is never normalized twice: :func:`add_input_normalization` refuses a model
that already normalizes its input (lsakit's buffers, or a first child that is a normalization
layer, as RobustBench's ImageNet models have); RobustBench's models normalize inside, so their
preprocessing has no mean and std.

:class:`Provenance` records where the weights came from (the source, the repo or name, the
resolved revision, the file and its sha256); results and checkpoints store it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import torch
from torch import Tensor, nn

from lsakit.errors import ConfigError
from lsakit.models.normalize import Normalize, normalized

Interpolation: TypeAlias = Literal["nearest", "bilinear", "bicubic"]
INTERPOLATIONS: tuple[Interpolation, ...] = ("nearest", "bilinear", "bicubic")
#: the buffers add_input_normalization puts inside a model (and into its state dict)
INPUT_NORMALIZE = "input_normalize"
INPUT_MEAN, INPUT_STD = f"{INPUT_NORMALIZE}_mean", f"{INPUT_NORMALIZE}_std"


@dataclass(frozen=True)
class Preprocessing:
    """How a data set's images become a pretrained model's inputs.

    ``resize``: ``(side,)`` resizes the shorter side to ``side`` (torchvision's ``Resize(int)``),
    ``(height, width)`` to that size; ``crop``: a center crop ``(height, width)`` after it;
    ``channels``: the channels the model takes (grey images are repeated to 3); ``mean`` and
    ``std``: the normalization, which lives inside the model (None: the model has its own, or
    takes [0, 1] pixels as they are). :meth:`transform` does the rest on a batch in [0, 1].
    """

    resize: tuple[int, ...] | None = None
    crop: tuple[int, int] | None = None
    interpolation: Interpolation = "bilinear"
    antialias: bool = True
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: where it was read from, e.g. "torchvision IMAGENET1K_V1 transforms()"
    source: str = ""

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}"
            )
        if self.resize is not None and (len(self.resize) not in (1, 2) or min(self.resize) < 1):
            raise ConfigError(f"resize must be (side,) or (height, width) ≥ 1, got {self.resize}")
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) < 1):
            raise ConfigError(f"crop must be (height, width) ≥ 1, got {self.crop}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("a normalization needs both mean and std (or neither)")

    # -- the data transform --------------------------------------------------------------------
    @property
    def identity(self) -> bool:
        """Whether :meth:`transform` leaves every batch as it is."""
        return self.resize is None and self.crop is None and self.channels is None

    def transform(self, x: Tensor) -> Tensor:
        """A batch (N, C, H, W) in [0, 1] → the model's input size, still in [0, 1].

        Resizing is torchvision's (``resize`` on tensors, antialiased as torchvision's own
        transforms are), then the center crop; bicubic results are clamped back into [0, 1]
        (lsakit's pixel domain), which the ecosystems' float pipelines do not do.

        Args:
            x: a batch ``(N, C, H, W)`` in [0, 1]; a tensor of any other dimension is returned
                as it is.

        Returns:
            The batch at the model's input size and channels (``x`` itself when
            :attr:`identity`), in [0, 1].
        """
        if self.identity or x.dim() != 4:
            return x
        if self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize is not None:
            x = _resize(x, self.resize, self.interpolation, self.antialias)
            if self.interpolation == "bicubic":
                x = x.clamp(0.0, 1.0)
        if self.crop is not None:
            x = _center_crop(x, self.crop)
        return x.contiguous()

    # -- records -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The record that results and checkpoints store (:meth:`from_json` reads it back).

        Returns:
            Every field by name, tuples as lists (JSON-able).
        """
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: object) -> Preprocessing:
        """Read a record of :meth:`to_json` back; ConfigError for a non-dict, an unknown field
        or a value the class refuses (interpolation, resize, crop, a mean without std).

        Args:
            data: a dict of field names to values (lists are read as tuples); fields left
                out take their defaults.

        Returns:
            The preprocessing it records.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"preprocessing must be a mapping, got {data!r}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"preprocessing has no field {unknown[0]!r}; fields: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)

    def describe(self) -> str:
        """One line: the transform, then the normalization inside the model.

        Returns:
            E.g. ``resize shorter side 256 (bilinear), center crop 224×224, pixels in [0, 1],
            normalize mean (…) std (…) inside the model``.
        """
        parts = []
        if self.channels == 3:
            parts.append("grey → RGB")
        if self.resize is not None:
            side = (
                f"shorter side {self.resize[0]}"
                if len(self.resize) == 1
                else f"{self.resize[0]}×{self.resize[1]}"
            )
            parts.append(f"resize {side} ({self.interpolation})")
        if self.crop is not None:
            parts.append(f"center crop {self.crop[0]}×{self.crop[1]}")
        parts.append("pixels in [0, 1]")
        if self.mean is not None and self.std is not None:
            mean = ", ".join(f"{m:.4g}" for m in self.mean)
            std = ", ".join(f"{s:.4g}" for s in self.std)
            parts.append(f"normalize mean ({mean}) std ({std}) inside the model")
        else:
            parts.append("no normalization added")
        return ", ".join(parts)


def _resized_size(height: int, width: int, size: tuple[int, ...]) -> tuple[int, int]:
    if len(size) == 2:
        return size[0], size[1]
    short, long = (height, width) if height <= width else (width, height)
    new_long = int(size[0] * long / short)
    return (size[0], new_long) if height <= width else (new_long, size[0])


def _resize(x: Tensor, size: tuple[int, ...], interpolation: str, antialias: bool) -> Tensor:
    try:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf
    except ImportError:  # without torchvision: the same resampling, through torch
        h, w = _resized_size(x.shape[-2], x.shape[-1], size)
        return torch.nn.functional.interpolate(
            x, size=(h, w), mode=interpolation, antialias=antialias and interpolation != "nearest",
            align_corners=None if interpolation == "nearest" else False,
        )  # fmt: skip
    mode = InterpolationMode(interpolation)
    result: Tensor = tvf.resize(x, list(size), interpolation=mode, antialias=antialias)
    return result


def _center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    height, width = x.shape[-2], x.shape[-1]
    th, tw = size
    if th > height or tw > width:  # torchvision pads with zeros where the image is too small
        pad_h, pad_w = max(th - height, 0), max(tw - width, 0)
        x = torch.nn.functional.pad(x, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
        height, width = x.shape[-2], x.shape[-1]
    top = round((height - th) / 2.0)  # torchvision's center_crop
    left = round((width - tw) / 2.0)
    return x[..., top : top + th, left : left + tw]


# -- the normalization inside the model ----------------------------------------------------------


def _normalize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The forward pre-hook of :func:`add_input_normalization` (module level: picklable)."""
    if not args or not isinstance(args[0], Tensor):
        return args
    mean, std = getattr(module, INPUT_MEAN), getattr(module, INPUT_STD)
    return (normalized(args[0], mean, std), *args[1:])


def normalizes_its_input(model: nn.Module) -> bool:
    """Whether ``model`` already normalizes its input: lsakit's input normalization, or a
    normalization layer as its first child (lsakit's Normalize, RobustBench's ImageNormalizer)."""
    if isinstance(getattr(model, INPUT_MEAN, None), Tensor):
        return True
    first = next(iter(model.children()), None)
    return first is not None and (
        isinstance(first, Normalize) or type(first).__name__ in ("ImageNormalizer", "Normalize")
    )


def add_input_normalization(
    model: nn.Module, mean: Sequence[float], std: Sequence[float]
) -> nn.Module:
    """Put ``(x − mean) / std`` inside ``model`` (in place; returned): two buffers,
    ``input_normalize_mean`` and ``input_normalize_std`` (in the state dict), applied to the
    input by a forward pre-hook, so the model takes [0, 1] pixels. No module is added: layer
    names do not change, and an ``nn.Sequential`` runs the same layers.

    Refuses (ConfigError) a model that already normalizes its input: a second normalization would
    silently shift every ε.

    Args:
        model: the network, taking normalized inputs; changed in place.
        mean: one mean per input channel, in [0, 1] pixel units.
        std: one standard deviation per input channel, > 0, as many as ``mean``.

    Returns:
        ``model`` itself, now taking [0, 1] pixels.
    """
    if normalizes_its_input(model):
        raise ConfigError(
            f"{type(model).__name__} already normalizes its input; a second normalization would "
            "make every ε wrong — load it without one (its preprocessing's mean/std None)"
        )
    checked = Normalize(mean, std)  # the checks of mean and std
    model.register_buffer(INPUT_MEAN, checked.mean)
    model.register_buffer(INPUT_STD, checked.std)
    model.register_forward_pre_hook(_normalize_input)
    return model


# -- where the weights came from -------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """Where pretrained weights came from.

    ``source``: torchvision, timm, hf or robustbench; ``name``: the weights (torchvision's enum
    member, timm's ``arch.tag`` or hub repo, the Hugging Face repo, RobustBench's model name);
    ``revision``: the resolved commit of a hub repo (None where the source has none); ``file``:
    the weights file as cached on this machine; ``sha256``: that file's; ``url``: where it is
    downloaded from; ``details``: source-specific facts (RobustBench's data set and threat model).
    """

    source: str
    name: str
    revision: str | None = None
    file: str | None = None
    sha256: str | None = None
    url: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record that results and checkpoints store.

        Returns:
            The fields by name, those that are None, empty text or empty ``details`` left out.
        """
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}

    def describe(self) -> str:
        """One line for logs and reports.

        Returns:
            ``SOURCE NAME``, then the revision and the sha256 (their first 12 characters) where
            known.
        """
        parts = [f"{self.source} {self.name}"]
        if self.revision:
            parts.append(f"revision {self.revision[:12]}")
        if self.sha256:
            parts.append(f"sha256 {self.sha256[:12]}…")
        return ", ".join(parts)


def sha256_of(path: str | Path) -> str:
    """The sha256 (hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Loaded:
    """A model as :func:`lsakit.models.load` gives it.

    ``model`` takes [0, 1] pixels (its normalization inside); ``preprocessing`` is the data
    transform for a data set's images (None: the inputs go in as they are); ``labels`` are the
    class names from the weights' metadata (None: unknown); ``provenance`` says where pretrained
    weights came from (None: random initial weights).
    """

    model: nn.Module
    preprocessing: Preprocessing | None = None
    labels: tuple[str, ...] | None = None
    provenance: Provenance | None = None

    @property
    def pretrained(self) -> bool:
        return self.provenance is not None


def _as_floats(values: object, what: str) -> tuple[float, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        raise ConfigError(f"{what} must be a non-empty list of numbers, got {values!r}")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{what} must be finite numbers, got {values!r}")
    return out


def normalization(mean: object, std: object, what: str) -> tuple[tuple[float, ...], ...]:
    """(mean, std) as tuples of floats, checked; ConfigError naming ``what``."""
    return _as_floats(mean, f"{what} mean"), _as_floats(std, f"{what} std")


__all__ = [
    "INPUT_MEAN",
    "INPUT_NORMALIZE",
    "INPUT_STD",
    "Loaded",
    "Preprocessing",
    "Provenance",
    "add_input_normalization",
    "normalization",
    "normalizes_its_input",
    "sha256_of",
]
