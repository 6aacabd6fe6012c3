"""``hf:`` models: Hugging Face transformers classifiers, from a config or from the hub.

``hf:DIR`` (a local folder or config.json, or a checkpoint's whole ``config``) builds random
weights; ``hf:ORG/NAME`` loads the hub repo with ``AutoModelFor…Classification.from_pretrained``,
safetensors only and never remote code, and the image processor's preprocessing (see
:mod:`lsakit.models.ecosystems`). :class:`HFClassifier` makes the model take one tensor and
return the logits.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsakit._io import one_line
from lsakit._outputs import select_logits
from lsakit.errors import ConfigError
from lsakit.models.ecosystem_shared import (
    PREPROCESSING,
    cached_hub_file,
    hub_error,
    interpolation_of,
    normalized,
    recorded_preprocessing,
)
from lsakit.models.pretrained import Loaded, Preprocessing, Provenance, normalization, sha256_of
from lsakit.models.sources import ModelSource, ModelSpec, call, ecosystem

#: Tasks of ``hf:`` models → the transformers auto class that builds them.
HF_TASKS: dict[str, str] = {
    "image-classification": "AutoModelForImageClassification",
    "sequence-classification": "AutoModelForSequenceClassification",
    "audio-classification": "AutoModelForAudioClassification",
}
_HF_TASK_ALIASES = {"text-classification": "sequence-classification"}


class HFClassifier(nn.Module):
    """A transformers classification model whose forward takes one tensor and returns the logits.

    lsakit's stages call ``model(x)`` and read a logits tensor; transformers models return a
    ``ModelOutput``. An image or audio classifier gets ``x`` as its first input (``pixel_values``
    / ``input_values``); a sequence classifier gets float ``x`` (N, L, hidden) as
    ``inputs_embeds`` (attacks then work in embedding space; declare an unbounded domain) and
    integer ``x`` as ``input_ids``. The transformers model is ``self.model``.

    Args:
        model: the transformers classification model (an ``AutoModelFor…Classification``).
        task: ``image-classification``, ``sequence-classification`` or
            ``audio-classification`` (ConfigError otherwise).
    """

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        if task not in HF_TASKS:
            raise ConfigError(f"unknown transformers task {task!r}; use {', '.join(HF_TASKS)}")
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the transformers model on one tensor and take the logits from its output.

        Args:
            x: the batch: ``pixel_values`` / ``input_values`` of an image or audio classifier;
                for a sequence classifier, float ``inputs_embeds`` ``(N, L, hidden)`` or integer
                ``input_ids`` ``(N, L)``.

        Returns:
            The logits, ``(N, num_labels)``.
        """
        if self.task == "sequence-classification":
            if x.is_floating_point():
                output = self.model(inputs_embeds=x)
            else:
                output = self.model(input_ids=x)
        else:
            output = self.model(x)
        return select_logits(output)  # a ModelOutput is a mapping holding "logits"


def hf_is_local(target: str) -> bool:
    """Whether an ``hf:`` target is a local folder or file (else a hub repo id ORG/NAME)."""
    if Path(target).expanduser().exists():
        return True
    return not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", target) or target.endswith(".json")


def _hf_config_dict(spec: ModelSpec) -> dict[str, Any]:
    path = Path(spec.target).expanduser()
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(
            f"model {spec.text!r}: no {file} — hf: takes a hub repo (ORG/NAME), a local "
            "directory holding config.json (config.save_pretrained(DIR)) or a config.json file"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"model {spec.text!r}: cannot read {file} ({one_line(err)}); give a transformers "
            f"config.json"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ConfigError(
            f"model {spec.text!r}: {file} has no model_type; give a transformers config.json"
        )
    return data


def _hf_task(spec: ModelSpec, config: Mapping[str, Any], task: object) -> str:
    if task is not None:
        key = _HF_TASK_ALIASES.get(str(task), str(task))
        if key not in HF_TASKS:
            raise ConfigError(
                f"model {spec.text!r}: unknown task {task!r}; use task= one of "
                f"{', '.join(HF_TASKS)}"
            )
        return key
    for architecture in config.get("architectures") or []:
        for candidate in HF_TASKS:
            suffix = "For" + "".join(w.title() for w in candidate.split("-"))
            if str(architecture).endswith(suffix):
                return candidate
    raise ConfigError(
        f"model {spec.text!r}: the config's architectures {config.get('architectures')} name no "
        f"classifier; pass --model-arg task= one of {', '.join(HF_TASKS)}"
    )


def _no_remote_code(spec: ModelSpec, config: Mapping[str, Any]) -> None:
    if "auto_map" in config:
        raise ConfigError(
            f"model {spec.text!r}: the config needs remote code (auto_map), which lsakit "
            f"never runs; use an architecture built into transformers"
        )


def _set_attributes(spec: ModelSpec, config: Any, kwargs: Mapping[str, Any]) -> None:
    for key, value in kwargs.items():
        if not hasattr(config, key):
            close = difflib.get_close_matches(key, list(config.to_dict()), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"model {spec.text!r}: the {type(config).__name__} has no attribute {key!r}; "
                f"{hint}model arguments of hf: models are task=, revision= and config attributes"
            )
        setattr(config, key, value)


def _hf_preprocessing(spec: ModelSpec, processor: Any) -> Preprocessing | None:
    """The data transform and normalization of a transformers image processor."""
    if processor is None:
        return None
    size = getattr(processor, "size", None) or {}
    crop_size = getattr(processor, "crop_size", None) or {}

    def get(key: str) -> Any:
        return _field(size, key)

    def crop_get(key: str) -> Any:
        return _field(crop_size, key)

    resize: tuple[int, ...] | None = None
    crop: tuple[int, int] | None = None
    if getattr(processor, "do_resize", True):
        if get("height") and get("width"):
            resize = (int(get("height")), int(get("width")))
        elif get("shortest_edge"):
            edge = int(get("shortest_edge"))
            crop_pct = getattr(processor, "crop_pct", None)
            if crop_pct and edge < 384:  # ConvNeXT's processor (also microsoft/resnet-*)
                resize, crop = (int(edge / float(crop_pct)),), (edge, edge)
            elif crop_pct:
                resize = (edge, edge)
            else:
                resize = (edge,)
        elif any(get(k) for k in ("longest_edge", "max_pixels", "max_height")):
            raise ConfigError(
                f"model {spec.text!r}: its image processor resizes by longest edge or pixel "
                "count, which lsakit does not reproduce; give images of the model's size"
            )
    if getattr(processor, "do_center_crop", False) and crop_get("height") and crop_get("width"):
        crop = (int(crop_get("height")), int(crop_get("width")))
    rescale = float(getattr(processor, "rescale_factor", 1 / 255))
    if getattr(processor, "do_rescale", True) and abs(rescale * 255 - 1) > 1e-6:
        raise ConfigError(
            f"model {spec.text!r}: its image processor rescales pixels by {rescale}, not 1/255; "
            "lsakit's images are in [0, 1]"
        )
    mean = std = None
    if getattr(processor, "do_normalize", False):
        mean, std = normalization(processor.image_mean, processor.image_std, "the processor's")
    return Preprocessing(
        resize=resize, crop=crop, interpolation=interpolation_of(getattr(processor, "resample", 2)),
        channels=3, mean=mean, std=std,
        source=f"transformers {type(processor).__name__}",
    )  # fmt: skip


def _field(value: object, key: str) -> Any:
    """``value[key]`` of a dict, or the attribute (transformers' SizeDict); None if absent."""
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


def hf_source(spec: ModelSpec, kwargs: Mapping[str, Any] | None = None) -> ModelSource:
    transformers = ecosystem(spec)
    local = hf_is_local(spec.target)
    # A checkpoint's kwargs carry the whole config: then no file (nor the hub) is needed.
    carried = kwargs is not None and "config" in kwargs
    file_config = _hf_config_dict(spec) if local and not carried else None

    def config_and_task(kwargs: dict[str, Any]) -> tuple[Any, str]:
        kwargs = dict(kwargs)
        kwargs.pop(PREPROCESSING, None)
        kwargs.pop("revision", None)
        given = kwargs.pop("config", None)
        raw = dict(given if given is not None else file_config or _hf_config_dict(spec))
        if not isinstance(given, dict | None) or not isinstance(raw.get("model_type"), str):
            raise ConfigError(
                f"model {spec.text!r}: config must be a transformers config dict, got {given!r}"
            )
        _no_remote_code(spec, raw)
        task = _hf_task(spec, raw, kwargs.pop("task", None))
        model_type = raw.pop("model_type")
        raw.pop("transformers_version", None)
        try:
            config = transformers.AutoConfig.for_model(model_type, **raw)
        except (ValueError, TypeError, KeyError) as err:
            raise ConfigError(
                f"model {spec.text!r}: transformers cannot read this config ({one_line(err)})"
            ) from None
        _set_attributes(spec, config, kwargs)
        return config, task

    def from_config(kwargs: dict[str, Any]) -> Loaded:
        recorded = recorded_preprocessing(dict(kwargs))
        config, task = config_and_task(kwargs)
        auto = getattr(transformers, HF_TASKS[task])
        model: nn.Module = call(
            f"{HF_TASKS[task]} for {type(config).__name__}",
            lambda: auto.from_config(config, trust_remote_code=False),
            {},
        )
        return Loaded(normalized(HFClassifier(model, task), recorded), recorded)

    def from_hub(kwargs: dict[str, Any]) -> tuple[Loaded, dict[str, Any]]:
        revision = kwargs.pop("revision", None)
        task_arg = kwargs.pop("task", None)
        try:
            config = transformers.AutoConfig.from_pretrained(
                spec.target, revision=revision, trust_remote_code=False
            )
        except (OSError, ValueError) as err:
            raise _hf_error(spec, err) from None
        raw = config.to_dict()
        if getattr(config, "auto_map", None):
            raw["auto_map"] = config.auto_map
        _no_remote_code(spec, raw)
        task = _hf_task(spec, raw, task_arg)
        auto = getattr(transformers, HF_TASKS[task])
        labels_before = dict(getattr(config, "id2label", {}) or {})
        _set_attributes(spec, config, kwargs)  # e.g. num_labels for a new head
        _require_safetensors(spec, revision)
        try:
            model = auto.from_pretrained(
                spec.target, revision=revision, config=config, trust_remote_code=False,
                use_safetensors=True, ignore_mismatched_sizes=bool(kwargs),
            )  # fmt: skip
        except (OSError, ValueError) as err:
            raise _hf_error(spec, err) from None
        processor = None
        if task == "image-classification":
            try:
                processor = transformers.AutoImageProcessor.from_pretrained(
                    spec.target, revision=revision, trust_remote_code=False
                )
            except (OSError, ValueError) as err:
                raise _hf_error(spec, err) from None
        preprocessing = _hf_preprocessing(spec, processor)
        commit = getattr(config, "_commit_hash", None) or revision
        found = cached_hub_file(
            spec.target, ["model.safetensors", "model.safetensors.index.json"], commit
        )
        provenance = Provenance(
            source="hf", name=spec.target, revision=found[1] if found else commit,
            file=str(found[0]) if found else None,
            sha256=sha256_of(found[0]) if found else None,
        )  # fmt: skip
        id2label = dict(getattr(model.config, "id2label", {}) or {})
        labels = None
        if id2label and id2label == labels_before:
            labels = tuple(str(id2label[i]) for i in sorted(id2label))
        wrapped = normalized(HFClassifier(model, task), preprocessing)
        record = {"task": task, "config": json.loads(model.config.to_json_string(use_diff=False))}
        if preprocessing is not None:
            record[PREPROCESSING] = preprocessing.to_json()
        return Loaded(wrapped, preprocessing, labels, provenance), record

    #: the checkpoint arguments of hub models loaded in this process (see portable)
    loaded_records: dict[str, dict[str, Any]] = {}

    def key(kwargs: Mapping[str, Any]) -> str:
        return json.dumps(dict(kwargs), sort_keys=True, default=str)

    def from_hub_here(kwargs: dict[str, Any]) -> Loaded:
        original = key(kwargs)
        loaded, record = from_hub(kwargs)
        loaded_records[original] = record
        return loaded

    def load(kwargs: dict[str, Any]) -> Loaded:
        if local or "config" in kwargs:
            return from_config(kwargs)
        return from_hub_here(kwargs)

    def portable(kwargs: dict[str, Any]) -> dict[str, Any]:
        if local or "config" in kwargs:
            recorded = kwargs.get(PREPROCESSING)
            config, task = config_and_task(kwargs)
            out = {"task": task, "config": json.loads(config.to_json_string(use_diff=False))}
            return out if recorded is None else {**out, PREPROCESSING: recorded}
        if key(kwargs) not in loaded_records:  # not loaded here yet: load it (from the cache)
            from_hub_here(dict(kwargs))
        return loaded_records[key(kwargs)]

    def check(kwargs: dict[str, Any]) -> object:
        return config_and_task(kwargs) if local or "config" in kwargs else None

    def pretrained(kwargs: Mapping[str, Any]) -> bool:
        return not local and "config" not in kwargs

    return ModelSource(spec, load, portable, check, pretrained=pretrained)


def _require_safetensors(spec: ModelSpec, revision: str | None) -> None:
    """Refuse a repo without safetensors weights before transformers looks for a pickle.

    The weights file is fetched here through the hub client (or found in its cache), so
    ``from_pretrained`` reads it from the cache afterwards.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for filename in ("model.safetensors", "model.safetensors.index.json"):
        try:
            hf_hub_download(spec.target, filename, revision=revision)
            return
        except EntryNotFoundError:
            continue
        except Exception as err:
            translated = hub_error(spec, err)
            if translated is not None:
                raise translated from None
            raise
    raise ConfigError(
        f"model {spec.text!r}: the repository has no safetensors weights (model.safetensors), "
        "and lsakit loads only safetensors (no pickled pytorch_model.bin)"
    )


def _hf_error(spec: ModelSpec, error: BaseException) -> ConfigError:
    translated = hub_error(spec, error)
    if translated is not None:
        return translated
    text = one_line(error)
    if "trust_remote_code" in text or "custom code" in text:
        return ConfigError(
            f"model {spec.text!r}: it needs remote code, which lsakit never runs; use an "
            "architecture built into transformers"
        )
    if "safetensors" in text.lower():
        return ConfigError(
            f"model {spec.text!r}: the repository has no safetensors weights, and lsakit loads "
            "only safetensors (no pickled pytorch_model.bin)"
        )
    return ConfigError(f"model {spec.text!r}: transformers cannot load it ({text})")
