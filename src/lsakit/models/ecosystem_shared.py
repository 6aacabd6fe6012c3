"""What the model ecosystems' sources share (:mod:`lsakit.models.ecosystems`).

The ``preprocessing`` argument a checkpoint stores instead of the weights' arguments, yes/no
model arguments, the normalization put inside a model, loading weights where the shapes agree,
the Hugging Face hub's errors and cache (timm and transformers both read the hub), and the
interpolation names of the ecosystems' transforms.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsakit._io import one_line
from lsakit.errors import ConfigError
from lsakit.models.pretrained import (
    INTERPOLATIONS,
    Interpolation,
    Preprocessing,
    add_input_normalization,
)
from lsakit.models.sources import ModelSpec

#: what a checkpoint stores instead of the weights' arguments
PREPROCESSING = "preprocessing"


def flag(value: object, what: str) -> bool:
    """A yes/no model argument (YAML reads ``true``/``false``; text is accepted too)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{what} must be true or false, got {value!r}")


def recorded_preprocessing(kwargs: dict[str, Any]) -> Preprocessing | None:
    """Pop a checkpoint's ``preprocessing`` argument (see :mod:`lsakit.models.ecosystems`)."""
    value = kwargs.pop(PREPROCESSING, None)
    return None if value is None else Preprocessing.from_json(value)


def normalized(model: nn.Module, preprocessing: Preprocessing | None) -> nn.Module:
    """``model`` with the preprocessing's normalization inside it (when it has one)."""
    if preprocessing is not None and preprocessing.mean is not None:
        assert preprocessing.std is not None
        add_input_normalization(model, preprocessing.mean, preprocessing.std)
    return model


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> list[str]:
    """Load ``state`` into ``model`` where the shapes agree; return the keys left as they were
    (a new classifier head: another ``num_classes``). Any other difference is one ConfigError."""
    own = model.state_dict()
    kept = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(
            f"{what} do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}; "
            "pass the architecture's own arguments"
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in kept}, strict=False)
    return kept


def hub_error(spec: ModelSpec, error: BaseException) -> ConfigError | None:
    """One line for a Hugging Face hub failure (unknown repo or revision, offline and not
    cached, a missing file), from the error or its causes; None when it is none of those."""
    seen: BaseException | None = error
    chain: list[BaseException] = []
    while seen is not None and len(chain) < 6:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {type(e).__name__ for e in chain}
    text = " ".join(one_line(e) for e in chain)
    if "RepositoryNotFoundError" in names or "is not a valid model identifier" in text:
        return ConfigError(
            f"model {spec.text!r}: no such repository on the Hugging Face hub (check the name, or "
            "HF_TOKEN for a private one)"
        )
    if "RevisionNotFoundError" in names or "is not a valid git identifier" in text:
        return ConfigError(
            f"model {spec.text!r}: no such revision (a branch, tag or commit of the repository)"
        )
    offline = "LocalEntryNotFoundError" in names or "couldn't connect" in text.lower()
    if offline or "OfflineModeIsEnabled" in names:
        return ConfigError(
            f"model {spec.text!r}: not in the local cache and the hub cannot be reached "
            "(HF_HUB_OFFLINE is set, or no network); run once where the hub is reachable "
            "(HF_ENDPOINT) to fill the cache (HF_HOME)"
        )
    if "EntryNotFoundError" in names or "RemoteEntryNotFoundError" in names:
        return ConfigError(
            f"model {spec.text!r}: a file it needs is not in the repository ({text})"
        )
    return None


def cached_hub_file(
    repo: str, filenames: list[str], revision: str | None
) -> tuple[Path, str] | None:
    """(path, commit) of the first of ``filenames`` in the Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in filenames:
        found = try_to_load_from_cache(repo, filename, revision=revision or "main")
        if isinstance(found, str):
            path = Path(found)
            return path, path.parent.name  # …/snapshots/<commit>/<file>
    return None


#: Pillow's resampling codes (transformers' processors store them): NEAREST, BILINEAR, BICUBIC
_PIL_RESAMPLING = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def interpolation_of(name: object) -> Interpolation:
    """The interpolation mode an ecosystem's transform names (or a Pillow resampling code)."""
    if isinstance(name, int) and not isinstance(name, bool):
        name = _PIL_RESAMPLING.get(int(name), name)
    text = str(getattr(name, "name", name)).lower()
    for mode in INTERPOLATIONS:
        if mode in text:
            return mode
    raise ConfigError(f"interpolation {name!r} is not one of {', '.join(INTERPOLATIONS)}")
