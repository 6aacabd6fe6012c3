"""Models of the ecosystems researchers use: torchvision, timm and Hugging Face transformers.

Each source builds random weights by default and loads pretrained weights in the ecosystem's own
words, through the ecosystem's own loading code (its downloads, caches, hash checks and offline
switches), never a copy of it:

=====================================================  ===============================================
spec and model arguments                                weights
=====================================================  ===============================================
``torchvision:NAME weights=DEFAULT|ENUM_NAME``          torchvision's weights API: ``Weights.get_state_dict
                                                        (check_hash=True, weights_only=True)`` into
                                                        ``$TORCH_HOME/hub/checkpoints``; a
                                                        ``torchvision.models.Weights`` object works too
``timm:NAME[.TAG] pretrained=true``,                    ``timm.create_model(…, pretrained=True)``: the
``timm:hf-hub:ORG/REPO[@REV]``                          Hugging Face hub (``HF_HOME``, ``HF_ENDPOINT``,
                                                        ``HF_HUB_OFFLINE``) or the torch hub cache
``hf:ORG/NAME revision=REV``                            ``AutoModelFor…Classification.from_pretrained``
                                                        with safetensors only and no remote code
``hf:DIR`` (a local folder or config.json)              a config: random weights (as before)
=====================================================  ===============================================

A pretrained model comes back as a :class:`~lsakit.models.pretrained.Loaded`: the weights'
preprocessing split into the data transform and a normalization inside the model
(:mod:`lsakit.models.pretrained`), the class names of the weights' metadata and where the weights
came from (:class:`~lsakit.models.pretrained.Provenance`: the file's sha256, the resolved commit
of a hub repo).

For a checkpoint, the weights' arguments are replaced by ``preprocessing`` (the normalization's
constants and the data transform, :meth:`ModelSource.portable`): rebuilding a fine-tuned model
from its checkpoint builds the architecture and its normalization and never downloads.
"""

from __future__ import annotations

import difflib
import json
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
from lsakit._outputs import select_logits
from lsakit.errors import ConfigError
from lsakit.models.pretrained import (
    INTERPOLATIONS,
    Interpolation,
    Loaded,
    Preprocessing,
    Provenance,
    add_input_normalization,
    normalization,
    sha256_of,
)
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
#: Tasks of ``hf:`` models → the transformers auto class that builds them.
HF_TASKS: dict[str, str] = {
    "image-classification": "AutoModelForImageClassification",
    "sequence-classification": "AutoModelForSequenceClassification",
    "audio-classification": "AutoModelForAudioClassification",
}
_HF_TASK_ALIASES = {"text-classification": "sequence-classification"}
#: what a checkpoint stores instead of the weights' arguments
PREPROCESSING = "preprocessing"


# -- shared -------------------------------------------------------------------------------------


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
    """Pop a checkpoint's ``preprocessing`` argument (see the module docstring)."""
    value = kwargs.pop(PREPROCESSING, None)
    return None if value is None else Preprocessing.from_json(value)


def normalized(model: nn.Module, preprocessing: Preprocessing | None) -> nn.Module:
    """``model`` with the preprocessing's normalization inside it (when it has one)."""
    if preprocessing is not None and preprocessing.mean is not None:
        assert preprocessing.std is not None
        add_input_normalization(model, preprocessing.mean, preprocessing.std)
    return model


def _both(spec: ModelSpec, weights: str) -> ConfigError:
    return ConfigError(
        f"model {spec.text!r}: give {weights} or {PREPROCESSING} (a checkpoint's), not both"
    )


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


# -- torchvision --------------------------------------------------------------------------------


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
        interpolation=_interpolation(transform.interpolation.value),
        antialias=bool(getattr(transform, "antialias", True)),
        channels=3,
        mean=mean,
        std=std,
        source=f"torchvision {_weights_name(tv, weights)}.transforms()",
    )


#: Pillow's resampling codes (transformers' processors store them): NEAREST, BILINEAR, BICUBIC
_PIL_RESAMPLING = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _interpolation(name: object) -> Interpolation:
    if isinstance(name, int) and not isinstance(name, bool):
        name = _PIL_RESAMPLING.get(int(name), name)
    text = str(getattr(name, "name", name)).lower()
    for mode in INTERPOLATIONS:
        if mode in text:
            return mode
    raise ConfigError(f"interpolation {name!r} is not one of {', '.join(INTERPOLATIONS)}")


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


# -- timm ---------------------------------------------------------------------------------------


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
        resize=resize, crop=(height, width), interpolation=_interpolation(config["interpolation"]),
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


# -- transformers -------------------------------------------------------------------------------


class HFClassifier(nn.Module):
    """A transformers classification model whose forward takes one tensor and returns the logits.

    lsakit's stages call ``model(x)`` and read a logits tensor; transformers models return a
    ``ModelOutput``. An image or audio classifier gets ``x`` as its first input (``pixel_values``
    / ``input_values``); a sequence classifier gets float ``x`` (N, L, hidden) as
    ``inputs_embeds`` (attacks then work in embedding space; declare an unbounded domain) and
    integer ``x`` as ``input_ids``. The transformers model is ``self.model``.
    """

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        if task not in HF_TASKS:
            raise ConfigError(f"unknown transformers task {task!r}; use {', '.join(HF_TASKS)}")
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
        resize=resize, crop=crop, interpolation=_interpolation(getattr(processor, "resample", 2)),
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
