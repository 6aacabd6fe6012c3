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
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np
import torch

from lsakit._io import one_line
from lsakit.data import folder
from lsakit.errors import ConfigError, DataError

PREFIX: Final = "hf:"
OPTIONS: Final = (
    "revision",
    "config",
    "image_column",
    "label_column",
    "train_split",
    "test_split",
    *folder.OPTIONS,  # size, mode, test_fraction, data_seed
)
INSTALL: Final = "pip install 'lsakit[datasets]'"
DEFAULT_REVISION: Final = "main"
DEFAULT_TRAIN_SPLIT: Final = "train"
#: lsakit's test split, when ``test_split`` is not given: the first of these the hub has.
TEST_SPLIT_CANDIDATES: Final = ("test", "validation")
SOURCE: Final = "hf-datasets"

_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO_RE = re.compile(rf"(?:{_REPO_PART}/)?{_REPO_PART}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")

ImageTransform = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class HubOptions:
    """The validated options of an ``hf:`` data set."""

    revision: str = DEFAULT_REVISION
    config: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    train_split: str = DEFAULT_TRAIN_SPLIT
    test_split: str | None = None
    pixels: folder.FolderOptions = field(default_factory=folder.FolderOptions)


def is_hub_name(name: object) -> bool:
    """Whether a data set name is ``hf:…`` (from the name alone)."""
    return isinstance(name, str) and name.strip().startswith(PREFIX)


def repo_of(name: str) -> str:
    """The repo id an ``hf:ORG/NAME`` (or ``hf:NAME``) data set name points to."""
    repo = name.strip()[len(PREFIX) :].strip()
    if not repo:
        raise ConfigError("data set hf: names no repository; use hf:ORG/NAME")
    if not _REPO_RE.fullmatch(repo) or ".." in repo or "--" in repo:
        raise ConfigError(
            f"data set {name.strip()!r}: {repo!r} is not a Hugging Face repo id; use hf:ORG/NAME "
            f"(letters, digits, '-', '_', '.')"
        )
    return repo


def _text_option(options: Mapping[str, object], key: str) -> str | None:
    value = options.get(key)
    if value is None:
        return None
    # --data-option values are YAML: a numeric tag or config name arrives as an int.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"data option {key} must be a non-empty name, got {value!r} (quote it if it looks "
            f"like a number: --data-option {key}='\"…\"')"
        )
    return value.strip()


def parse_options(options: Mapping[str, object]) -> HubOptions:
    """Validate the ``hf:`` options (ConfigError naming the option)."""
    return HubOptions(
        revision=_text_option(options, "revision") or DEFAULT_REVISION,
        config=_text_option(options, "config"),
        image_column=_text_option(options, "image_column"),
        label_column=_text_option(options, "label_column"),
        train_split=_text_option(options, "train_split") or DEFAULT_TRAIN_SPLIT,
        test_split=_text_option(options, "test_split"),
        pixels=folder.parse_options(options),
    )


# ------------------------------------------------------------------------- the datasets library


def _datasets(name: str) -> ModuleType:
    from lsakit.models.sources import import_optional

    return import_optional("datasets", f"data set {name.strip()!r}", INSTALL)


def _offline() -> bool:
    """Whether the ``datasets`` library runs offline (it read ``HF_HUB_OFFLINE`` at import)."""
    config = importlib.import_module("datasets.config")
    return bool(getattr(config, "HF_HUB_OFFLINE", False))


def _translate(repo: str, revision: str, config: str | None, err: BaseException) -> Exception:
    """The one-line lsakit error for an exception of ``datasets`` / ``huggingface_hub``."""
    text = one_line(err)
    where = f"hf:{repo}"
    if isinstance(err, ConnectionError) or type(err).__name__ == "OfflineModeIsEnabled":
        if _offline():
            return DataError(
                f"{where} (revision {revision}) is not in the Hugging Face cache and HF_HUB_OFFLINE "
                f"is set; run once with network (unset HF_HUB_OFFLINE, or set HF_ENDPOINT to a "
                f"reachable hub) to cache it, or point HF_HOME / HF_DATASETS_CACHE at a cache that "
                f"holds it"
            )
        return DataError(
            f"cannot reach the Hugging Face hub for {where} ({text}) and it is not cached; check "
            f"the network or HF_ENDPOINT, or run with HF_HUB_OFFLINE=1 against a filled cache"
        )
    if "scripts are no longer supported" in text or "trust_remote_code" in text:
        return ConfigError(
            f"{where} is a data set loading script, and lsakit never runs a data set's code; use "
            f"a repo of data files (parquet, image folders), e.g. its parquet conversion: "
            f"--data-option revision=refs/convert/parquet"
        )
    if type(err).__name__ == "DatasetNotFoundError" or isinstance(err, FileNotFoundError):
        if text.startswith("Revision "):
            return ConfigError(
                f"{where} has no revision {revision!r} (a branch, tag or commit); fix "
                f"--data-option revision=, or leave it out for main"
            )
        if "doesn't exist on the Hub" in text or "cannot be accessed" in text:
            return ConfigError(
                f"{where}: no such data set on the Hugging Face hub, or it is private or gated "
                f"(log in with `hf auth login` for those); check the name"
            )
        if "not cached" in text or "Couldn't find cache" in text:
            return DataError(
                f"{where} (config {config or 'default'}) is not in the Hugging Face cache; run "
                f"once with network to cache it"
            )
        return DataError(f"cannot load {where}: {text}")
    if isinstance(err, ValueError):
        if text.startswith("BuilderConfig "):
            available = _names(text.partition("Available:")[2])
            return ConfigError(
                f"{where} has no config {config!r} (configs: {available}); fix --data-option config="
            )
        if text.startswith("Config name is missing"):
            available = _names(text.partition("available configs:")[2].partition(" Example")[0])
            return ConfigError(
                f"{where} has several configs ({available}); choose one with --data-option "
                f"config=NAME"
            )
        if "Couldn't find cache" in text:
            cached = text.partition("Available configs in the cache:")[2].strip()
            return DataError(
                f"{where} (config {config or 'default'}) is not in the Hugging Face cache"
                f"{f' (cached configs: {_names(cached)})' if cached else ''}; run once with "
                f"network to cache it, or choose a cached config with --data-option config="
            )
        if "multiple" in text and "in the cache" in text:
            cached = text.partition("in the cache:")[2].partition(" Please")[0].strip()
            return DataError(
                f"{where}: the Hugging Face cache holds several configs ({cached}); choose one "
                f"with --data-option config=NAME"
            )
    return DataError(f"cannot load {where} (revision {revision}): {type(err).__name__}: {text}")


def _names(listing: str) -> str:
    """``"['a', 'b']"`` (a Python list in a message of ``datasets``) → ``"a, b"``."""
    return ", ".join(part.strip(" '\"") for part in listing.strip().strip("[]").split(",")) or "?"


@functools.lru_cache(maxsize=16)
def _builder(name: str, repo: str, config: str | None, revision: str) -> Any:
    """The ``datasets`` builder of a repo: metadata only (the card, the file listing), no data.

    Kept per process, so :func:`describe` and the loads of both splits resolve the revision once
    and agree on the commit.
    """
    datasets = _datasets(name)
    kwargs: dict[str, Any] = {"revision": revision}
    if config is not None:
        kwargs["name"] = config
    # datasets < 4 still has the argument (and would otherwise prompt); 4+ never runs scripts.
    if "trust_remote_code" in inspect.signature(datasets.load_dataset_builder).parameters:
        kwargs["trust_remote_code"] = False
    try:
        builder = datasets.load_dataset_builder(repo, **kwargs)
    except Exception as err:
        raise _translate(repo, revision, config, err) from None
    if _from_cache_only(builder):
        _check_cached_revision(repo, revision, str(builder.hash))
    return builder


def _from_cache_only(builder: Any) -> bool:
    """Whether ``datasets`` fell back to its cached copy (offline, or the hub unreachable)."""
    return any(
        cls.__name__ == "Cache" and cls.__module__.endswith("packaged_modules.cache.cache")
        for cls in type(builder).__mro__
    )


def _check_cached_revision(repo: str, revision: str, cached: str) -> None:
    """The cached copy ``datasets`` reads offline is its latest one, whatever the revision: make
    sure it is the commit ``revision`` named when last online (huggingface_hub's ``refs/``)."""
    if _COMMIT_RE.fullmatch(revision):
        expected: str | None = revision
    else:
        hub_cache = Path(importlib.import_module("huggingface_hub.constants").HF_HUB_CACHE)
        ref = hub_cache / f"datasets--{repo.replace('/', '--')}" / "refs" / revision
        expected = ref.read_text().strip() if ref.is_file() else None
    if expected != cached:
        known = f"was commit {expected}" if expected else "was never fetched"
        raise DataError(
            f"hf:{repo}: the Hugging Face cache holds commit {cached}, but revision {revision} "
            f"{known}; run once with network to cache it, or pass --data-option revision={cached}"
        )


def _prepared(builder: Any) -> bool:
    """Whether the builder's splits are already prepared (Arrow files) in the local cache."""
    info_file = os.path.join(str(builder.cache_dir), "dataset_info.json")
    return _from_cache_only(builder) or os.path.isfile(info_file)


# ------------------------------------------------------------------------------ the resolution


@dataclass(frozen=True)
class HubSource:
    """What an ``hf:`` data set with its options resolves to (metadata; no pixels read)."""

    name: str
    repo: str
    revision: str
    #: the commit ``revision`` resolved to (from the cache when offline)
    commit: str
    config: str
    image_column: str
    label_column: str
    #: the class names: the ClassLabel's, else ``0 … max`` of the training labels
    class_names: tuple[str, ...]
    #: the hub's split names and their row counts (None where the metadata does not say)
    splits: Mapping[str, int | None]
    train_split: str
    #: the hub split behind lsakit's test split; None: a seeded split of ``train_split``
    test_split: str | None
    options: HubOptions

    def hub_split(self, split: str) -> str:
        return self.train_split if split == "train" or self.test_split is None else self.test_split


def _split_names(builder: Any) -> dict[str, int | None]:
    info_splits = builder.info.splits
    if info_splits:
        return {str(key): int(value.num_examples) for key, value in info_splits.items()}
    data_files = getattr(builder.config, "data_files", None)
    if data_files:
        return {str(key): None for key in data_files}
    return {}


def _pick_splits(
    source_name: str, options: HubOptions, splits: Iterable[str]
) -> tuple[str, str | None]:
    available = list(splits)
    listing = ", ".join(available) or "none"
    for key, value in (("train_split", options.train_split), ("test_split", options.test_split)):
        if value is not None and value not in available:
            raise ConfigError(
                f"{source_name} has no split {value!r} (splits: {listing}); fix --data-option "
                f"{key}="
            )
    if options.test_split is not None:
        test: str | None = options.test_split
    else:
        test = next((s for s in TEST_SPLIT_CANDIDATES if s in available), None)
    if test == options.train_split:
        test = None  # the same rows for both: split them instead
    return options.train_split, test


def _features(source_name: str, builder: Any, split: str) -> Mapping[str, Any]:
    features = builder.info.features
    if features is None:  # not in the card: read from the data files' schema (footers only)
        try:
            dataset = (
                builder.as_dataset(split=split)
                if _prepared(builder)
                else builder.as_streaming_dataset(split=split)
            )
            features = dataset.features
        except Exception as err:
            raise DataError(f"cannot read the columns of {source_name}: {one_line(err)}") from None
    if features is None:
        raise DataError(f"cannot read the columns of {source_name}; give a dataset card")
    return dict(features)


def _kind(feature: Any) -> str:
    """A short type name of a feature for messages: Image, ClassLabel, int64, string, …"""
    kind = type(feature).__name__
    return str(getattr(feature, "dtype", kind)) if kind == "Value" else kind


def _is_int_value(feature: Any) -> bool:
    return type(feature).__name__ == "Value" and str(feature.dtype).startswith(("int", "uint"))


def _columns(name: str, options: HubOptions, features: Mapping[str, Any]) -> tuple[str, str]:
    """The image and label columns: as given (checked), else the single Image / ClassLabel."""
    listing = ", ".join(f"{column} ({_kind(f)})" for column, f in features.items())

    def choose(
        key: str, given: str | None, detect: str, wanted: str, fits: Callable[[Any], bool]
    ) -> str:
        if given is not None:
            if given not in features:
                raise ConfigError(
                    f"{name} has no column {given!r} (columns: {listing}); fix --data-option {key}="
                )
            if not fits(features[given]):
                raise ConfigError(
                    f"{name}: column {given!r} is {_kind(features[given])}, not {wanted} (columns: "
                    f"{listing}); fix --data-option {key}="
                )
            return given
        found = [column for column, f in features.items() if _kind(f) == detect]
        if len(found) != 1:
            problem = f"{len(found)} {detect} columns" if found else f"no {detect} column"
            raise ConfigError(
                f"{name}: cannot tell the {key.split('_')[0]} column, {problem} (columns: "
                f"{listing}); give --data-option {key}=NAME"
            )
        return found[0]

    image = choose(
        "image_column", options.image_column, "Image", "an Image", lambda f: _kind(f) == "Image"
    )
    label = choose(
        "label_column",
        options.label_column,
        "ClassLabel",
        "a ClassLabel or integer column",
        lambda f: _kind(f) == "ClassLabel" or _is_int_value(f),
    )
    if image == label:
        raise ConfigError(f"{name}: the image and label columns are both {image!r}")
    return image, label


def resolve(name: str, options: Mapping[str, object]) -> HubSource:
    """Resolve an ``hf:`` data set: revision → commit, splits, columns, classes (ConfigError /
    DataError, one line, for anything missing). Reads metadata, not pixels."""
    repo = repo_of(name)
    parsed = parse_options(options)
    name = name.strip()
    builder = _builder(name, repo, parsed.config, parsed.revision)
    splits = _split_names(builder)
    train, test = _pick_splits(name, parsed, splits)
    features = _features(name, builder, train)
    image_column, label_column = _columns(name, parsed, features)
    label = features[label_column]
    if _kind(label) == "ClassLabel":
        classes = tuple(str(n) for n in label.names)
    else:
        prepared = _prepared_split(builder, train, repo, parsed.revision, parsed.config)
        labels = prepared.with_format("numpy")[label_column]
        top = int(np.max(labels)) if len(labels) else -1
        classes = tuple(str(k) for k in range(top + 1))
    if len(classes) < 2:
        raise DataError(
            f"{name}: label column {label_column!r} has {len(classes)} class(es); a classifier "
            f"needs at least 2"
        )
    return HubSource(
        name=name,
        repo=repo,
        revision=parsed.revision,
        commit=str(builder.hash),
        config=str(builder.config.name),
        image_column=image_column,
        label_column=label_column,
        class_names=classes,
        splits=splits,
        train_split=train,
        test_split=test,
        options=parsed,
    )


def _prepared_split(builder: Any, split: str, repo: str, revision: str, config: str | None) -> Any:
    """The whole hub split as a ``datasets.Dataset``, downloaded and prepared (cached) first."""
    try:
        if not _from_cache_only(builder):
            builder.download_and_prepare()
        return builder.as_dataset(split=split)
    except Exception as err:
        raise _translate(repo, revision, config, err) from None


# ------------------------------------------------------------------------------------ loading


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
    builder = _builder(source.name, source.repo, source.options.config, source.revision)
    hub_split = source.hub_split(split)
    columns = [source.image_column, source.label_column]
    config = source.options.config
    rows: Iterable[Mapping[str, Any]]
    try:
        if source.test_split is None:  # a seeded split of the training rows
            dataset = _prepared_split(builder, hub_split, source.repo, source.revision, config)
            train_idx, test_idx = folder.seeded_split(
                len(dataset), source.options.pixels.test_fraction, source.options.pixels.data_seed
            )
            chosen = (train_idx if split == "train" else test_idx)[:limit].tolist()
            rows = dataset.select_columns(columns).select(chosen)
        elif limit is not None and not _prepared(builder):
            stream = builder.as_streaming_dataset(split=hub_split)
            rows = list(stream.select_columns(columns).take(limit))
        else:
            sliced = hub_split if limit is None else f"{hub_split}[:{limit}]"
            dataset = _prepared_split(builder, sliced, source.repo, source.revision, config)
            rows = dataset.select_columns(columns)
        images: list[Any] = []
        labels: list[Any] = []
        for row in rows:  # one pass: each image is decoded once
            images.append(row[source.image_column])
            labels.append(row[source.label_column])
    except (ConfigError, DataError):
        raise
    except Exception as err:
        raise _translate(source.repo, source.revision, config, err) from None
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
    builder = _builder(source.name, source.repo, source.options.config, source.revision)
    try:
        if _prepared(builder):
            return builder.as_dataset(split=source.train_split)[0][source.image_column]
        stream = builder.as_streaming_dataset(split=source.train_split)
        first = list(stream.select_columns([source.image_column]).take(1))
    except Exception as err:
        raise _translate(source.repo, source.revision, source.options.config, err) from None
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
        "datasets_version": str(getattr(_datasets(name), "__version__", "unknown")),
    }
