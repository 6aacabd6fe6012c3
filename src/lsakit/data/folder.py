"""Your own images: a folder with one sub-folder per class (``--dataset folder:PATH``).

Layout, like torchvision's ``ImageFolder``::

    PATH/cat/001.png              PATH/train/cat/001.png      (with PATH/train and PATH/test:
    PATH/cat/002.jpg       or     PATH/train/dog/…             the given split; the test classes
    PATH/dog/…                    PATH/test/cat/…              must be among the train classes)

* Classes are the sub-folders' names, **sorted**: label ``k`` is the k-th name. Images are the
  files with an image suffix (``.png``, ``.jpg``, …) anywhere below a class folder; hidden files
  and other files are skipped.
* Split: ``PATH/train`` and ``PATH/test`` when both exist; else a fixed seeded split of every
  image, ``test_fraction`` (0.2) of them to test, chosen by ``data_seed`` (0).
* Order: each split comes in a fixed order shuffled by ``data_seed``, so the trainer's
  validation tail and ``--limit`` see every class (files sorted first, so the order depends on
  the names and the seed only).
* Pixels: read with Pillow, converted to ``mode`` (``RGB``, the default, or ``L`` for grey),
  resized to ``size`` (an int for square, or ``[H, W]``; bilinear) when given — without it every
  image must have the same size — and stored as float32 ``pixel / 255`` in [0, 1], NCHW. The
  input domain is the unit box.

Options (``--data-option KEY=VALUE``): ``size``, ``mode``, ``test_fraction``, ``data_seed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import torch

from lsakit.errors import ConfigError, DataError

PREFIX: Final = "folder:"
OPTIONS: Final = ("size", "mode", "test_fraction", "data_seed")
IMAGE_SUFFIXES: Final = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
MODES: Final = {"RGB": 3, "L": 1}
DEFAULT_TEST_FRACTION: Final = 0.2
DEFAULT_SEED: Final = 0


@dataclass(frozen=True)
class FolderOptions:
    """The validated options of an image folder."""

    size: tuple[int, int] | None = None
    mode: Literal["RGB", "L"] = "RGB"
    test_fraction: float = DEFAULT_TEST_FRACTION
    data_seed: int = DEFAULT_SEED


def parse_options(options: Mapping[str, object]) -> FolderOptions:
    """Validate the folder options (ConfigError naming the option)."""
    size = options.get("size")
    parsed_size: tuple[int, int] | None = None
    if size is not None:
        if _is_positive_int(size):
            parsed_size = (int(size), int(size))  # type: ignore[call-overload]
        elif isinstance(size, list | tuple) and len(size) == 2 and all(map(_is_positive_int, size)):
            parsed_size = (int(size[0]), int(size[1]))
        else:
            raise ConfigError(
                f"data option size must be an integer ≥ 1 or [height, width], got {size!r}"
            )
    mode = str(options.get("mode", "RGB")).upper()
    if mode not in MODES:
        raise ConfigError(f"data option mode must be RGB or L, got {options.get('mode')!r}")
    return FolderOptions(
        size=parsed_size,
        mode="RGB" if mode == "RGB" else "L",
        test_fraction=test_fraction_option(options),
        data_seed=seed_option(options),
    )


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def test_fraction_option(options: Mapping[str, object]) -> float:
    value = options.get("test_fraction", DEFAULT_TEST_FRACTION)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value < 1
    ):
        raise ConfigError(f"data option test_fraction must be in (0, 1), got {value!r}")
    return float(value)


def seed_option(options: Mapping[str, object]) -> int:
    value = options.get("data_seed", DEFAULT_SEED)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ConfigError(f"data option data_seed must be an integer ≥ 0, got {value!r}")
    return value


def seeded_split(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, test) of a fixed random split of ``n`` samples: a permutation drawn with
    ``seed``, its first ``round(test_fraction · n)`` (at least 1) for test, the rest for train."""
    if n < 2:
        raise ConfigError(f"{n} sample(s) cannot be split into train and test; add samples")
    n_test = min(max(1, round(test_fraction * n)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test:], order[:n_test]


def root_of(name: str) -> Path:
    """The folder a ``folder:PATH`` data set name points to."""
    path = name[len(PREFIX) :].strip()
    if not path:
        raise ConfigError("data set folder: names no folder; use folder:PATH")
    return Path(path).expanduser()


def _class_dirs(directory: Path) -> list[Path]:
    return sorted(
        (p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _images(class_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in class_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
    )


def _listing(directory: Path, classes: list[str]) -> list[tuple[Path, int]]:
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        class_dir = directory / name
        if not class_dir.is_dir():
            continue
        files = _images(class_dir)
        if not files:
            raise DataError(
                f"image folder {directory}: class folder {name}/ holds no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove it"
            )
        samples.extend((f, label) for f in files)
    return samples


def class_names(root: Path) -> tuple[str, ...]:
    """The sorted class names of the folder (of ``root/train`` in the split layout)."""
    base = _layout(root)
    names = tuple(p.name for p in _class_dirs(root / "train" if base else root))
    if len(names) < 2:
        where = root / "train" if base else root
        raise DataError(
            f"image folder {where} has {len(names)} class sub-folder(s) "
            f"({', '.join(names) or 'none'}); a classifier needs at least 2, one folder per class"
        )
    return names


def _layout(root: Path) -> bool:
    """True for the PATH/train + PATH/test layout; DataError for a missing or odd folder."""
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist or is not a directory; give folder:PATH with one "
            f"sub-folder per class"
        )
    train, test = (root / "train").is_dir(), (root / "test").is_dir()
    if train != test:
        have, lack = ("train", "test") if train else ("test", "train")
        raise DataError(
            f"image folder {root} has {have}/ but no {lack}/; add {lack}/ (same class folders) "
            f"or move the class folders up to {root}"
        )
    return train


def samples(root: Path, split: str, options: FolderOptions) -> list[tuple[Path, int]]:
    """The split's ``(file, label)`` pairs, in the order :func:`load_folder` returns them."""
    classes = list(class_names(root))
    if _layout(root):
        test_dirs = [p.name for p in _class_dirs(root / "test")]
        stray = [name for name in test_dirs if name not in classes]
        if stray:
            raise DataError(
                f"image folder {root}: test/ has class folders {stray} that train/ lacks; every "
                f"test class needs training images"
            )
        listing = _listing(root / split, classes)
        if not listing:
            raise DataError(f"image folder {root / split} holds no images")
        order = torch.randperm(
            len(listing), generator=torch.Generator().manual_seed(options.data_seed)
        )
    else:
        listing = _listing(root, classes)
        train_idx, test_idx = seeded_split(len(listing), options.test_fraction, options.data_seed)
        order = train_idx if split == "train" else test_idx
    return [listing[int(i)] for i in order]


def image_pixels(image: Any, options: FolderOptions) -> np.ndarray:
    """A Pillow image as uint8 (C, H, W): converted to ``options.mode``, resized to
    ``options.size`` (bilinear) when given. Pillow's errors pass through to the caller."""
    from PIL import Image

    converted = image.convert(options.mode)
    if options.size is not None:
        height, width = options.size
        converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _read(path: Path, options: FolderOptions) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image_pixels(image, options)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(
            f"cannot read image {path} ({' '.join(str(err).split())}); remove or replace it"
        ) from None


def load_folder(
    root: Path, split: str, options: FolderOptions, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The split as ``(x, y)``: x float32 (N, C, H, W) = pixels / 255, y int64 labels."""
    chosen = samples(root, split, options)[:limit]
    arrays: list[np.ndarray] = []
    for path, _ in chosen:
        pixels = _read(path, options)
        if arrays and pixels.shape != arrays[0].shape:
            first = chosen[0][0]
            raise DataError(
                f"images of folder {root} differ in size ({first.name}: "
                f"{arrays[0].shape[1]}×{arrays[0].shape[2]}, {path.name}: "
                f"{pixels.shape[1]}×{pixels.shape[2]}); resize them with --data-option size=N"
            )
        arrays.append(pixels)
    x = torch.from_numpy(np.stack(arrays)).to(torch.float32).div_(255.0)
    y = torch.tensor([label for _, label in chosen], dtype=torch.int64)
    return x, y


def input_shape(root: Path, options: FolderOptions) -> tuple[int, int, int]:
    """``(C, H, W)`` of the samples: from ``size``, else from the first training image."""
    channels = MODES[options.mode]
    if options.size is not None:
        return (channels, *options.size)
    first = samples(root, "train", options)[0][0]
    pixels = _read(first, options)
    return (channels, int(pixels.shape[1]), int(pixels.shape[2]))
