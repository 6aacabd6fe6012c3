"""What an ``hf:`` data set resolves to (:mod:`lsakit.data.hub`): its options, repo and splits.

The names (``hf:ORG/NAME``) and the validated options (:class:`HubOptions`); :func:`resolve`
reads the metadata — revision → commit, splits, image and label columns, classes — into a
:class:`HubSource`, without reading pixels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from lsakit._io import one_line
from lsakit.data import folder
from lsakit.data.hub_backend import hub_builder, is_prepared, prepared_split
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
DEFAULT_REVISION: Final = "main"
DEFAULT_TRAIN_SPLIT: Final = "train"
#: lsakit's test split, when ``test_split`` is not given: the first of these the hub has.
TEST_SPLIT_CANDIDATES: Final = ("test", "validation")

_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO_RE = re.compile(rf"(?:{_REPO_PART}/)?{_REPO_PART}")


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
                if is_prepared(builder)
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
    builder = hub_builder(name, repo, parsed.config, parsed.revision)
    splits = _split_names(builder)
    train, test = _pick_splits(name, parsed, splits)
    features = _features(name, builder, train)
    image_column, label_column = _columns(name, parsed, features)
    label = features[label_column]
    if _kind(label) == "ClassLabel":
        classes = tuple(str(n) for n in label.names)
    else:
        prepared = prepared_split(builder, train, repo, parsed.revision, parsed.config)
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
