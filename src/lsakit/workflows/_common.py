"""What the workflows share: the model a run analyses or evaluates, its data, and what a result
records of both."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from lsakit.config.options import Options
from lsakit.errors import ArgumentError, CheckpointError

_O = TypeVar("_O", bound=Options)

Log = Callable[[str], None]


def quiet(_: str) -> None:
    """A log that says nothing."""


def slug(spec: str) -> str:
    """A file-name-safe short form of a model or data set spec for default run directories:
    ``timm:resnet18`` → ``timm-resnet18``, ``folder:/data/pets`` → ``folder-pets``,
    ``nets/small.py:make`` → ``small-make``, ``/tmp/x.npz`` → ``x``."""
    parts = [Path(part).stem if ("/" in part or "." in part) else part for part in spec.split(":")]
    text = "-".join(p for p in parts if p) or "model"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def recorded_data_options(checkpoint: Path, dataset: str | None) -> dict[str, Any]:
    """The data options an lsakit checkpoint was trained with, when it names ``dataset`` (or
    ``dataset`` is None); {} for plain state dicts and other data sets."""
    from lsakit.checkpoint import read_meta

    try:
        meta = read_meta(checkpoint)
    except CheckpointError:
        return {}  # not an lsakit checkpoint (or unreadable: loading it says why)
    if dataset is not None and meta.extra.get("dataset") != dataset:
        return {}
    config = meta.extra.get("config")
    options = config.get("data_options") if isinstance(config, dict) else None
    return dict(options) if isinstance(options, dict) else {}


def is_pretrained(model: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether a model spec and its arguments ask for pretrained weights (nothing loaded yet)."""
    from lsakit import models

    return models.resolve(model, dict(kwargs)).pretrained(dict(kwargs))


def load_pretrained(model: str, kwargs: Mapping[str, Any], log: Log) -> Any:
    """Load pretrained weights (:func:`lsakit.models.load`) and say what was loaded."""
    from lsakit import models

    loaded = models.load(model, **kwargs)
    labels = loaded.labels or ()
    shown = ", ".join(labels[:3]) + (", …" if len(labels) > 3 else "")
    classes = f"; {len(labels)} classes ({shown})" if labels else ""
    assert loaded.provenance is not None
    log(f"pretrained {model}: {loaded.provenance.describe()}{classes}")
    if loaded.preprocessing is not None:
        log(f"preprocessing: {loaded.preprocessing.describe()}")
    return loaded


def weights_meta(loaded: Any) -> dict[str, Any]:
    """What a result records of pretrained weights: where they came from, their preprocessing
    and class names."""
    meta: dict[str, Any] = {"weights": loaded.provenance.to_json()}
    if loaded.preprocessing is not None:
        meta["preprocessing"] = loaded.preprocessing.to_json()
    if loaded.labels:
        meta["class_names"] = list(loaded.labels)
    return meta


def data_meta(dataset: str, data_options: Mapping[str, Any]) -> dict[str, Any]:
    """Where a hub data set came from (its resolved commit), for a result's meta."""
    from lsakit.data import hub

    if not hub.is_hub_name(dataset):
        return {}
    return {"data_provenance": hub.provenance(dataset, dict(data_options))}


def transform(preprocessing: Any) -> Any:
    """The data transform of a model's preprocessing (None where it changes nothing)."""
    return None if preprocessing is None or preprocessing.identity else preprocessing.transform


def labels_for(
    net: nn.Module, loader: Any, dataset: str, data_options: Mapping[str, Any], log: Log
) -> Any:
    """``loader``, or — when the model's classes are not the data set's (an ImageNet model on
    CIFAR-10) — the loader with each label replaced by the model's clean prediction."""
    from lsakit import data
    from lsakit._outputs import select_logits
    from lsakit._torch import eval_mode, model_device
    from lsakit.data.transforms import PredictedLabels

    # one sample read from the data set: iterating the loader would draw from torch's global
    # random generator (its worker seed) and change the noises drawn after it
    x = loader.dataset[0][0].unsqueeze(0)
    with torch.no_grad(), eval_mode(net):
        outputs = select_logits(net(x.to(model_device(net)))).shape[-1]
    classes = data.info(dataset, **data_options).num_classes
    if outputs in (classes, 1):  # 1: a binary model's single logit
        return loader
    log(
        f"the model has {outputs} classes and {dataset} has {classes}: each input's label is "
        "the model's own prediction on it (clean accuracy 1 by construction)"
    )
    return PredictedLabels(loader, net)


def check_perturbations(specs: Sequence[str], argument: str) -> list[tuple[str, Any, Any]]:
    """Parse perturbation specs and build each against a stand-in model, so that a bad name or
    value fails before any model is loaded or trained; each name once."""
    from lsakit import perturb

    parsed = [perturb.parse_spec(s) for s in specs]
    names = [name for name, _, _ in parsed]
    if len(set(names)) != len(names):
        raise ArgumentError(
            f"each perturbation may be given once in {{{argument}}}, got {', '.join(names)}"
        )
    for name, strength, params in parsed:
        perturb.build(name, model=nn.Identity(), strength=strength, **params)
    return parsed


def build_perturbations(model: nn.Module, parsed: Sequence[tuple[str, Any, Any]]) -> dict[str, Any]:
    """The perturbations of parsed specs, built against ``model``."""
    from lsakit import perturb

    return {
        name: perturb.build(name, model=model, strength=strength, **params)
        for name, strength, params in parsed
    }


def split_model(
    model: nn.Module | str | None, cls: type[_O], options: dict[str, Any]
) -> tuple[nn.Module | None, _O]:
    """A workflow's first argument and its options: a model spec joins the options as ``model``;
    an ``nn.Module`` stays apart (used as it is); anything else is refused."""
    if isinstance(model, str):
        if "model" in options:
            raise ArgumentError("the model is given twice; pass {model} once")
        options = {**options, "model": model}
        model = None
    elif model is not None and not isinstance(model, nn.Module):
        raise ArgumentError(
            f"{{model}} must be an nn.Module, a model spec or None, got {type(model).__name__}"
        )
    return model, cls.build(options)


@dataclass
class Subject:
    """The model a workflow runs on, and what its results record about it."""

    model: nn.Module
    name: str
    kwargs: dict[str, Any]
    preprocessing: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    trained_on: str | None = None


def from_checkpoint(
    checkpoint: Path, model: str | None, kwargs: Mapping[str, Any], device: torch.device
) -> Subject:
    """The model of an lsakit checkpoint or a plain state dict of ``model``."""
    from lsakit.checkpoint import load_weights

    net, meta = load_weights(
        checkpoint, model=model, model_kwargs=dict(kwargs), map_location=device
    )
    return Subject(
        net, meta.model, dict(meta.model_kwargs), meta.preprocessing,
        trained_on=meta.extra.get("dataset"),
    )  # fmt: skip


def own_module(model: nn.Module, device: torch.device) -> Subject:
    """A model the caller built (``nn.Module``), used as it is."""
    name = f"{type(model).__module__}.{type(model).__qualname__}"
    return Subject(model.to(device), name, {})


def main_rank(device: torch.device) -> bool:
    """Under torchrun: join the process group. True on the rank that writes and logs."""
    from lsakit import distributed

    distributed.init(device)
    return distributed.is_main_process()
