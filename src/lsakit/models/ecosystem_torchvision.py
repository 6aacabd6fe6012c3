"""``torchvision:NAME`` models: torchvision's builders, and its weights API for pretrained ones.

``weights=DEFAULT`` (or a weights enum name, or a ``torchvision.models.Weights`` object) loads
the weights through torch.hub into ``$TORCH_HOME/hub/checkpoints``, hash checked, with
``weights_only=True``; their ``transforms()`` give the preprocessing (see
:mod:`lsakit.models.ecosystems`).
"""

from __future__ import annotations

import difflib
import pickle
import re
import urllib.error
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsakit._io import one_line
from lsakit.errors import ConfigError
from lsakit.models.ecosystem_shared import (
    PREPROCESSING,
    interpolation_of,
    load_matching,
    normalized,
    recorded_preprocessing,
)
from lsakit.models.pretrained import Loaded, Preprocessing, Provenance, normalization, sha256_of
from lsakit.models.sources import (
    ModelSource,
    ModelSpec,
    call,
    ecosystem,
    refuse,
    unknown_name,
)

#: torch.hub's own pattern for the sha256 prefix in a weights file's name ("resnet18-f37072fd.pth")
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")


def _both(spec: ModelSpec, weights: str) -> ConfigError:
    return ConfigError(
        f"model {spec.text!r}: give {weights} or {PREPROCESSING} (a checkpoint's), not both"
    )


def _torchvision_weights(tv: Any, spec: ModelSpec, value: object) -> Any:
    """torchvision's weights for ``value`` (None: random weights)."""
    if value is None or value is False or (isinstance(value, str) and value.lower() == "none"):
        return None
    if isinstance(value, tv.models.WeightsEnum | tv.models.Weights):
        return value
    try:
        enum = tv.models.get_model_weights(spec.target)
    except (ValueError, KeyError):
        raise ConfigError(f"model {spec.text!r} has no pretrained weights in torchvision") from None
    try:
        return enum.verify(str(value))
    except (KeyError, ValueError):
        choices = ", ".join(["DEFAULT", *enum.__members__])
        close = difflib.get_close_matches(str(value), list(enum.__members__), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"model {spec.text!r}: unknown weights {value!r}; {hint}choose one of {choices}"
        ) from None


def _weights_name(tv: Any, weights: Any) -> str:
    if isinstance(weights, tv.models.WeightsEnum):
        return f"{type(weights).__name__}.{weights.name}"
    return Path(urllib.parse.urlparse(weights.url).path).name


def _torchvision_preprocessing(spec: ModelSpec, tv: Any, weights: Any) -> Preprocessing:
    transform = weights.transforms()
    needed = ("resize_size", "crop_size", "mean", "std", "interpolation")
    if not all(hasattr(transform, attribute) for attribute in needed):
        raise ConfigError(
            f"model {spec.text!r}: weights {_weights_name(tv, weights)} are not an image "
            "classifier's (their transforms() have no resize, crop, mean and std); lsakit "
            "loads classifiers"
        )
    crop = [int(c) for c in transform.crop_size]
    mean, std = normalization(transform.mean, transform.std, "the weights'")
    return Preprocessing(
        resize=tuple(int(s) for s in transform.resize_size),
        crop=(crop[0], crop[-1]),
        interpolation=interpolation_of(transform.interpolation.value),
        antialias=bool(getattr(transform, "antialias", True)),
        channels=3,
        mean=mean,
        std=std,
        source=f"torchvision {_weights_name(tv, weights)}.transforms()",
    )


def _torchvision_state(
    spec: ModelSpec, tv: Any, weights: Any
) -> tuple[dict[str, torch.Tensor], Provenance]:
    """Download (or read from the cache) through torchvision's own code, hash checked."""
    url = str(weights.url)
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    found = _HASH_IN_NAME.search(file.name)
    prefix = found.group(1) if found else ""
    # torch checks the hash when it downloads, never again: a file damaged in the cache since,
    # or put there by hand, is caught here and removed, so that the next run downloads it.
    if file.is_file() and prefix:
        digest = sha256_of(file)
        if not digest.startswith(prefix):
            file.unlink()
            raise ConfigError(
                f"model {spec.text!r}: the cached weights file {file} is corrupted (its sha256 "
                f"{digest[:12]}… does not begin with the {prefix} of its name); removed it from "
                "the cache — run again to download it"
            )
    try:
        # WeightsEnum.get_state_dict is this call; a plain Weights object has no method for it
        state: dict[str, torch.Tensor] = torch.hub.load_state_dict_from_url(
            url, progress=True, check_hash=True, weights_only=True
        )
    except urllib.error.URLError as err:
        raise ConfigError(
            f"model {spec.text!r}: cannot download {url} ({err.reason}); offline, put "
            f"the file at {file} ($TORCH_HOME/hub/checkpoints)"
        ) from None
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"model {spec.text!r}: {file} holds more than tensors, and lsakit loads weights with "
            f"weights_only=True only ({one_line(err)})"
        ) from None
    except RuntimeError as err:
        if "hash" not in str(err):
            raise
        raise ConfigError(
            f"model {spec.text!r}: the file downloaded from {url} failed its hash check "
            f"({one_line(err)}); nothing was kept in the cache"
        ) from None
    provenance = Provenance(
        source="torchvision", name=_weights_name(tv, weights), file=str(file),
        sha256=sha256_of(file), url=url,
    )  # fmt: skip
    return state, provenance


def torchvision_source(spec: ModelSpec) -> ModelSource:
    tv = ecosystem(spec)
    known: list[str] = sorted(tv.models.list_models())
    if spec.target not in known:
        unknown_name(spec, known, "torchvision.models.list_models()")

    def build(kwargs: dict[str, Any]) -> nn.Module:
        model: nn.Module = call(
            f"torchvision model {spec.target!r}",
            lambda **kw: tv.models.get_model(spec.target, weights=None, **kw),
            kwargs,
        )
        return model

    def load(kwargs: dict[str, Any]) -> Loaded:
        recorded = recorded_preprocessing(kwargs)
        weights = _torchvision_weights(tv, spec, kwargs.pop("weights", None))
        refuse(spec, kwargs, ("pretrained", "progress"), "use weights=DEFAULT or a weights name")
        if weights is None:
            return Loaded(normalized(build(kwargs), recorded), recorded)
        if recorded is not None:
            raise _both(spec, "weights")
        preprocessing = _torchvision_preprocessing(spec, tv, weights)
        state, provenance = _torchvision_state(spec, tv, weights)
        categories = tuple(str(c) for c in weights.meta.get("categories") or ())
        same_head = kwargs.get("num_classes") in (None, len(categories))
        if isinstance(weights, tv.models.WeightsEnum) and same_head:
            # torchvision's own builder (it sets what its weights need, e.g. googlenet's
            # transform_input); it reads the file just checked and loaded with weights_only
            model: nn.Module = call(
                f"torchvision model {spec.target!r}",
                lambda **kw: tv.models.get_model(spec.target, weights=weights, **kw),
                kwargs,
            )
            new_head: list[str] = []
        else:
            model = build(kwargs)
            new_head = load_matching(model, state, f"the weights {provenance.name}")
        labels = categories if categories and not new_head else None
        return Loaded(normalized(model, preprocessing), preprocessing, labels, provenance)

    def portable(kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        weights = _torchvision_weights(tv, spec, kwargs.pop("weights", None))
        if weights is not None:
            kwargs[PREPROCESSING] = _torchvision_preprocessing(spec, tv, weights).to_json()
        return kwargs

    def pretrained(kwargs: Mapping[str, Any]) -> bool:
        return _torchvision_weights(tv, spec, kwargs.get("weights")) is not None

    return ModelSource(spec, load, portable, pretrained=pretrained)
