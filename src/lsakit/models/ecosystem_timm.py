"""``timm:NAME[.TAG]`` and ``timm:hf-hub:ORG/REPO[@REV]`` models, through ``timm.create_model``.

``pretrained=true`` (the default for ``hf-hub:`` names) loads timm's weights from the Hugging Face
hub or the torch hub cache; the preprocessing is timm's eval transform of the model's data config
(see :mod:`lsakit.models.ecosystems`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsakit.errors import ConfigError
from lsakit.models.ecosystem_shared import (
    PREPROCESSING,
    cached_hub_file,
    flag,
    hub_error,
    interpolation_of,
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


def _timm_preprocessing(spec: ModelSpec, config: Mapping[str, Any]) -> Preprocessing:
    """timm's eval transform (``transforms_imagenet_eval``) for ``resolve_model_data_config``."""
    channels, height, width = (int(v) for v in config["input_size"])
    crop_pct = float(config.get("crop_pct") or 0.875)
    mode = config.get("crop_mode") or "center"
    scale = (int(height / crop_pct), int(width / crop_pct))
    if mode == "squash":
        resize: tuple[int, ...] = scale
    elif mode == "center" and scale[0] == scale[1]:
        resize = (scale[0],)
    else:
        raise ConfigError(
            f"model {spec.text!r}: timm's crop_mode {mode!r} with a non-square input is not "
            "supported; resize the data yourself and load the model without its preprocessing"
        )
    mean, std = normalization(config["mean"], config["std"], "timm's")
    return Preprocessing(
        resize=resize, crop=(height, width), interpolation=interpolation_of(config["interpolation"]),
        channels=channels, mean=mean, std=std,
        source="timm resolve_model_data_config()",
    )  # fmt: skip


def _timm_labels(timm: Any, model: nn.Module) -> tuple[str, ...] | None:
    config = getattr(model, "pretrained_cfg", None) or {}
    names = config.get("label_names")
    if names:
        return tuple(str(n) for n in names)
    subset = timm.data.infer_imagenet_subset(model)
    if subset is None:
        return None
    described = timm.data.ImageNetInfo(subset).label_descriptions()
    return tuple(str(d).split(",")[0] for d in described)


def _timm_provenance(spec: ModelSpec, model: nn.Module) -> Provenance:
    config = getattr(model, "pretrained_cfg", None) or {}
    hub_id = config.get("hf_hub_id")
    if hub_id:
        repo, _, revision = str(hub_id).partition("@")
        filenames = [f for f in (config.get("hf_hub_filename"),) if f] + [
            "model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
        ]  # fmt: skip
        found = cached_hub_file(repo, filenames, revision or None)
        if found is not None:
            path, commit = found
            return Provenance(
                source="timm", name=f"hf-hub:{repo}", revision=commit, file=str(path),
                sha256=sha256_of(path),
            )  # fmt: skip
    url = config.get("url")
    if url:
        file = (
            Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
        )
        if file.is_file():
            return Provenance(
                source="timm", name=spec.target, file=str(file), sha256=sha256_of(file), url=url
            )
    file_name = config.get("file")
    if file_name and Path(file_name).is_file():
        return Provenance(source="timm", name=spec.target, file=str(file_name),
                          sha256=sha256_of(file_name))  # fmt: skip
    return Provenance(source="timm", name=spec.target)


def timm_source(spec: ModelSpec) -> ModelSource:
    timm = ecosystem(spec)
    hub = spec.target.startswith(("hf-hub:", "hf_hub:", "local-dir:"))
    if not hub and not timm.is_model(spec.target):
        unknown_name(spec, list(timm.list_models()), "timm.list_models()")

    def wants_weights(kwargs: Mapping[str, Any]) -> bool:
        return flag(kwargs.get("pretrained", hub), "pretrained") and PREPROCESSING not in kwargs

    def create(kwargs: dict[str, Any], pretrained: bool) -> nn.Module:
        try:
            model: nn.Module = call(
                f"timm model {spec.target!r}",
                lambda **kw: timm.create_model(spec.target, pretrained=pretrained, **kw),
                kwargs,
            )
        except ConfigError as err:
            translated = hub_error(spec, err)
            if translated is not None:
                raise translated from None
            raise
        return model

    def load(kwargs: dict[str, Any]) -> Loaded:
        pretrained = wants_weights(kwargs)
        kwargs.pop("pretrained", None)
        recorded = recorded_preprocessing(kwargs)
        refuse(
            spec, kwargs, ("checkpoint_path", "cache_dir", "pretrained_cfg"), "use pretrained=true"
        )
        if not pretrained:
            return Loaded(normalized(create(kwargs, False), recorded), recorded)
        model = create(kwargs, True)
        preprocessing = _timm_preprocessing(spec, timm.data.resolve_model_data_config(model))
        provenance = _timm_provenance(spec, model)
        return Loaded(
            normalized(model, preprocessing), preprocessing, _timm_labels(timm, model), provenance
        )

    def portable(kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        if wants_weights(kwargs):
            kwargs.pop("pretrained", None)
            with torch.device("meta"):
                model = create(dict(kwargs), False)
            config = timm.data.resolve_model_data_config(model)
            kwargs[PREPROCESSING] = _timm_preprocessing(spec, config).to_json()
        return kwargs

    return ModelSource(spec, load, portable, pretrained=wants_weights)
