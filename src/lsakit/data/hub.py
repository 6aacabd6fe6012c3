"""Image classification data sets from the Hugging Face hub (``--dataset hf:ORG/NAME``).

Read with the ``datasets`` library (the optional extra ``pip install 'lsakit[datasets]'``):
the repo's data files (parquet, image folders, …) are fetched through ``HF_ENDPOINT`` into the
Hugging Face caches (``HF_HOME``, ``HF_DATASETS_CACHE``) and read from there afterwards;
``HF_HUB_OFFLINE=1`` reads the cache only. lsakit sets none of these: the library reads them.

* Columns: the image column is the data set's single ``datasets.Image`` feature and the label
  column its single ``ClassLabel`` feature (class names and count come from it); with none or
  several, give ``image_column`` / ``label_column``. An explicit ``label_column`` may also be a
  plain integer column: the classes are then ``0 … max`` of the training labels.
* Splits: lsakit's ``train`` is the hub split ``train_split`` (``train``); lsakit's ``test`` is
  ``test_split`` if given, else the hub's ``test``, else its ``validation``, else a fixed seeded
  split of ``train_split`` (``test_fraction``, 0.2, chosen by ``data_seed``, 0, as for image
  folders: lsakit's train is then the rest). Rows keep the hub's order (no shuffle), so
  ``limit`` takes the first rows of the split.
* ``limit`` reads no more than it needs: while the split is not cached, it is streamed and its
  first rows taken (the files of that one split only, none cached); a load without ``limit``
  downloads and prepares every split into the cache, and later loads slice the cache.
* Pixels: the decoded Pillow images are converted to ``mode`` (``RGB``, the default, or ``L``),
  resized to ``size`` (an int, or ``[H, W]``; bilinear) when given — without it every image must
  have the same size — and returned as float32 ``pixel / 255`` NCHW in [0, 1]; labels int64. The
  input domain is the unit box.
* Provenance: the revision (``revision``: a branch, tag or commit; default ``main``) is resolved
  to a commit, which the description names and :func:`provenance` returns.
* Never any code from the repo: a data set that is a loading script is refused (``datasets`` 4+
  cannot run scripts at all; older versions are called with ``trust_remote_code=False``).

Options (``--data-option KEY=VALUE``): ``revision``, ``config``, ``image_column``,
``label_column``, ``train_split``, ``test_split``, ``size``, ``mode``, ``test_fraction``,
``data_seed``. Every problem (missing package, unknown repo/revision/config/split/column, offline
without a cached copy, unreadable images) is one :class:`~lsakit.errors.LsakitError` line.

The modules: :mod:`~lsakit.data.hub_resolve` (names, options, :func:`resolve`),
:mod:`~lsakit.data.hub_backend` (the ``datasets`` library: builders, cache, errors) and this
one: loading the samples (:func:`load_hub`), :func:`describe` and :func:`provenance`; the names
of the other two are importable from here as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch

from lsakit._io import one_line
from lsakit.data import folder
from lsakit.data.hub_backend import (
    INSTALL,
    hub_builder,
    import_datasets,
    is_prepared,
    prepared_split,
    translate_error,
)
from lsakit.data.hub_resolve import (
    DEFAULT_REVISION,
    DEFAULT_TRAIN_SPLIT,
    OPTIONS,
    PREFIX,
    TEST_SPLIT_CANDIDATES,
    HubOptions,
    HubSource,
    is_hub_name,
    parse_options,
    repo_of,
    resolve,
)
from lsakit.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_REVISION",
    "DEFAULT_TRAIN_SPLIT",
    "INSTALL",
    "OPTIONS",
    "PREFIX",
    "SOURCE",
    "TEST_SPLIT_CANDIDATES",
    "HubDescription",
    "HubOptions",
    "HubSource",
    "ImageTransform",
    "describe",
    "is_hub_name",
    "load_hub",
    "parse_options",
    "provenance",
    "repo_of",
    "resolve",
]


SOURCE: Final = "hf-datasets"

ImageTransform = Callable[[torch.Tensor], torch.Tensor]


def _rows(source: HubSource, split: str, limit: int | None) -> tuple[list[Any], list[Any]]:
    """The images and labels of lsakit's ``split`` (its first ``limit`` rows).

    The strategy for ``limit``, measured with datasets 5.2 / pyarrow 26 against
    tests/hubserver.py (a 2000-train / 500-test set of 32×32 PNGs, parquet row groups of 100):

    - ``split="test[:4]"`` (not streaming) downloads and prepares *every* split's files in full
      before slicing: 8.4 MB (train 6.7 MB + test 1.7 MB);
    - ``streaming=True`` + ``take(4)`` reads the card, the parquet footers (64 KiB ranges) and the
      first file of the one split asked for: 1.9 MB. (pyarrow pre-buffers the whole file, not its
      first row group; with several files per split, only the first is read.)

    So ``limit`` streams while the split is not cached (tests/test_data_hub.py: a ``limit=2`` load
    of the test split makes one Range request, to the test file; a full load fetches both files),
    and slices the cached Arrow files (``split[:limit]``) once a full load has prepared them —
    only a full load fills the cache that later runs and ``HF_HUB_OFFLINE=1`` read.
    """
    builder = hub_builder(source.name, source.repo, source.options.config, source.revision)
    hub_split = source.hub_split(split)
    columns = [source.image_column, source.label_column]
    config = source.options.config
    rows: Iterable[Mapping[str, Any]]
    try:
        if source.test_split is None:  # a seeded split of the training rows
            dataset = prepared_split(builder, hub_split, source.repo, source.revision, config)
            train_idx, test_idx = folder.seeded_split(
                len(dataset), source.options.pixels.test_fraction, source.options.pixels.data_seed
            )
            chosen = (train_idx if split == "train" else test_idx)[:limit].tolist()
            rows = dataset.select_columns(columns).select(chosen)
        elif limit is not None and not is_prepared(builder):
            stream = builder.as_streaming_dataset(split=hub_split)
            rows = list(stream.select_columns(columns).take(limit))
        else:
            sliced = hub_split if limit is None else f"{hub_split}[:{limit}]"
            dataset = prepared_split(builder, sliced, source.repo, source.revision, config)
            rows = dataset.select_columns(columns)
        images: list[Any] = []
        labels: list[Any] = []
        for row in rows:  # one pass: each image is decoded once
            images.append(row[source.image_column])
            labels.append(row[source.label_column])
    except (ConfigError, DataError):
        raise
    except Exception as err:
        raise translate_error(source.repo, source.revision, config, err) from None
    return images, labels


def _pixels(source: HubSource, image: Any, index: int, split: str) -> np.ndarray:

    where = f"{source.name}: sample {index} of {source.hub_split(split)}"
    if image is None:
        raise DataError(f"{where} has no image; drop it or choose another split")
    try:
        return folder.image_pixels(image, source.options.pixels)
    except (OSError, ValueError, AttributeError) as err:
        raise DataError(f"cannot read the image of {where} ({one_line(err)})") from None


def load_hub(
    name: str,
    split: str,
    options: Mapping[str, object],
    limit: int | None = None,
    *,
    image_transform: ImageTransform | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """lsakit's ``split`` of an ``hf:`` data set as ``(x, y)``: x float32 (N, C, H, W) =
    pixels / 255, y int64 labels.

    ``image_transform``, when given, is applied to each image — a (C, H, W) float tensor in
    [0, 1], after ``mode`` and ``size`` — before the images are stacked; its outputs must agree
    in shape.
    """
    source = resolve(name, options)
    images, labels = _rows(source, split, limit)
    if not images:
        raise DataError(f"{source.name}: the {source.hub_split(split)} split holds no rows")
    tensors: list[torch.Tensor] = []
    for index, image in enumerate(images):
        pixels = _pixels(source, image, index, split).astype(np.float32)
        tensor = torch.from_numpy(pixels).div_(255.0)
        if image_transform is not None:
            tensor = image_transform(tensor)
            if not isinstance(tensor, torch.Tensor):
                raise ConfigError(
                    f"image_transform must return a tensor, got {type(tensor).__name__}"
                )
        if tensors and tensor.shape != tensors[0].shape:
            first, this = "×".join(map(str, tensors[0].shape)), "×".join(map(str, tensor.shape))
            fix = (
                "make image_transform return one shape"
                if image_transform is not None
                else "resize them with --data-option size=N"
            )
            raise DataError(
                f"images of {source.name} differ in size (sample 0: {first}, sample {index}: "
                f"{this}); {fix}"
            )
        tensors.append(tensor)
    y = torch.tensor([-1 if v is None else int(v) for v in labels], dtype=torch.int64)
    bad = (y < 0) | (y >= len(source.class_names))
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise DataError(
            f"{source.name}: sample {row} of {source.hub_split(split)} has label {int(y[row])}, not a "
            f"class 0…{len(source.class_names) - 1} (unlabelled rows?); choose a labelled split "
            f"with --data-option test_split= / train_split="
        )
    return torch.stack(tensors), y


# ------------------------------------------------------------------------------ description


@dataclass(frozen=True)
class HubDescription:
    """What :func:`lsakit.data.info` shows of an ``hf:`` data set."""

    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    description: str


def _first_image(source: HubSource) -> Any:
    builder = hub_builder(source.name, source.repo, source.options.config, source.revision)
    try:
        if is_prepared(builder):
            return builder.as_dataset(split=source.train_split)[0][source.image_column]
        stream = builder.as_streaming_dataset(split=source.train_split)
        first = list(stream.select_columns([source.image_column]).take(1))
    except Exception as err:
        raise translate_error(source.repo, source.revision, source.options.config, err) from None
    if not first:
        raise DataError(f"{source.name}: the {source.train_split} split holds no rows")
    return first[0][source.image_column]


def _counts(source: HubSource) -> tuple[int | None, int | None]:
    """(train, test) row counts of lsakit's splits; None where the metadata does not say."""
    train = source.splits.get(source.train_split)
    if source.test_split is not None:
        return train, source.splits.get(source.test_split)
    if train is None:
        return None, None
    n_test = min(max(1, round(source.options.pixels.test_fraction * train)), train - 1)
    return train - n_test, n_test


def describe(name: str, options: Mapping[str, object]) -> HubDescription:
    """The input shape (after ``size``/``mode``; from the first training image when no
    ``size``), the classes and a one-line description naming repo, revision, commit and rows."""
    source = resolve(name, options)
    pixels = source.options.pixels
    channels = folder.MODES[pixels.mode]
    if pixels.size is not None:
        shape = (channels, *pixels.size)
    else:
        first = _pixels(source, _first_image(source), 0, "train")
        shape = (channels, int(first.shape[1]), int(first.shape[2]))
    train, test = _counts(source)
    rows = (
        "rows not known before the first load" if train is None else f"{train} train / {test} test"
    )
    test_from = (
        source.test_split
        if source.test_split is not None
        else f"a seeded {pixels.test_fraction:g} split of {source.train_split}"
    )
    description = (
        f"Hugging Face data set {source.repo} (config {source.config}, revision "
        f"{source.revision} = commit {source.commit}): {len(source.class_names)} classes, "
        f"{rows} (test: {test_from}), {'×'.join(map(str, shape))} ({pixels.mode}); columns "
        f"{source.image_column}, {source.label_column}"
    )
    return HubDescription(shape, source.class_names, description)


def provenance(name: str, options: Mapping[str, object]) -> dict[str, Any]:
    """Where an ``hf:`` data set's samples come from, for a results file: the repo, the revision
    asked for and the commit it resolved to, the config, lsakit's splits as hub splits, the
    columns and the ``datasets`` version."""
    source = resolve(name, options)
    seeded = source.test_split is None
    pixels = source.options.pixels
    return {
        "source": SOURCE,
        "repo": source.repo,
        "revision": source.revision,
        "commit": source.commit,
        "config": source.config,
        "split": {"train": source.train_split, "test": source.test_split or source.train_split},
        "seeded_split": (
            {"test_fraction": pixels.test_fraction, "data_seed": pixels.data_seed}
            if seeded
            else None
        ),
        "image_column": source.image_column,
        "label_column": source.label_column,
        "datasets_version": str(getattr(import_datasets(name), "__version__", "unknown")),
    }
