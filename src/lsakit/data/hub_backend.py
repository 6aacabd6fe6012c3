"""The ``datasets`` library behind ``hf:`` data sets (:mod:`lsakit.data.hub`).

Importing it with an install hint, its builders (metadata only, kept per process), whether a
split is prepared in the cache or read from the cache alone (and then whether the cached commit
is the revision's), preparing a split, and its exceptions as one-line lsakit errors.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from lsakit._io import one_line
from lsakit._optional import import_optional
from lsakit.errors import ConfigError, DataError

INSTALL: Final = "pip install 'lsakit[datasets]'"
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def import_datasets(name: str) -> ModuleType:
    """The ``datasets`` module, or one ConfigError line saying what to install."""
    return import_optional("datasets", f"data set {name.strip()!r}", INSTALL)


def _offline() -> bool:
    """Whether the ``datasets`` library runs offline (it read ``HF_HUB_OFFLINE`` at import)."""
    config = importlib.import_module("datasets.config")
    return bool(getattr(config, "HF_HUB_OFFLINE", False))


def translate_error(repo: str, revision: str, config: str | None, err: BaseException) -> Exception:
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
            "{data_options} revision=refs/convert/parquet"
        )
    if type(err).__name__ == "DatasetNotFoundError" or isinstance(err, FileNotFoundError):
        if text.startswith("Revision "):
            return ConfigError(
                f"{where} has no revision {revision!r} (a branch, tag or commit); fix "
                "{data_options} revision=, or leave it out for main"
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
def hub_builder(name: str, repo: str, config: str | None, revision: str) -> Any:
    """The ``datasets`` builder of a repo: metadata only (the card, the file listing), no data.

    Kept per process, so :func:`describe` and the loads of both splits resolve the revision once
    and agree on the commit.
    """
    datasets = import_datasets(name)
    kwargs: dict[str, Any] = {"revision": revision}
    if config is not None:
        kwargs["name"] = config
    # datasets < 4 still has the argument (and would otherwise prompt); 4+ never runs scripts.
    if "trust_remote_code" in inspect.signature(datasets.load_dataset_builder).parameters:
        kwargs["trust_remote_code"] = False
    try:
        builder = datasets.load_dataset_builder(repo, **kwargs)
    except Exception as err:
        raise translate_error(repo, revision, config, err) from None
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


def is_prepared(builder: Any) -> bool:
    """Whether the builder's splits are already prepared (Arrow files) in the local cache."""
    info_file = os.path.join(str(builder.cache_dir), "dataset_info.json")
    return _from_cache_only(builder) or os.path.isfile(info_file)


def prepared_split(builder: Any, split: str, repo: str, revision: str, config: str | None) -> Any:
    """The whole hub split as a ``datasets.Dataset``, downloaded and prepared (cached) first."""
    try:
        if not _from_cache_only(builder):
            builder.download_and_prepare()
        return builder.as_dataset(split=split)
    except Exception as err:
        raise translate_error(repo, revision, config, err) from None
