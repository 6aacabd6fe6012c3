"""RobustBench's model zoo: ``--model robustbench:NAME`` (optional extra ``lsakit[robustbench]``).

``robustbench:NAME --model-arg dataset=cifar10|cifar100|imagenet --model-arg
threat_model=Linf|L2|corruptions --model-arg model_dir=DIR`` loads the zoo model through
RobustBench's own ``robustbench.utils.load_model``: the weights are
``DIR/DATASET/THREAT/NAME.pt`` (``DIR`` defaults to RobustBench's own ``./models``), downloaded
(from Google Drive, by ``gdown``) only when that file is missing. Every zoo model normalizes
inside, so lsakit adds no normalization; an ImageNet model's input transform is RobustBench's
``get_preprocessing`` for that model (e.g. resize 256, center crop 224).

Installing RobustBench 1.1.1 as published does not work beside current libraries
(``hubs.md``): it pins ``timm==1.0.9``, which would downgrade timm and break timm's own hub
loading in the same environment; it imports ``pkg_resources``, which setuptools ≥ 81 no longer
has; and its package ``__init__`` imports ``autoattack``, which PyPI names ``pyautoattack``.
lsakit's choice: the extra ``lsakit[robustbench]`` installs what RobustBench's model zoo needs
(gdown, geotorch, torchdiffeq, requests, tqdm), and RobustBench itself is installed with
``pip install --no-deps robustbench==1.1.1``; :func:`import_robustbench` then imports only the
zoo's modules (``robustbench.utils``, ``.model_zoo``, ``.data``) without running the package's
``__init__`` (no AutoAttack, no pandas), with a one-function ``pkg_resources`` stand-in
(``resource_filename``, the only call RobustBench makes) while they import. ``pip check`` reports
RobustBench's unmet pins afterwards; that is expected.

:data:`LEADERBOARD` holds a few entries of RobustBench's leaderboard (``model_info`` JSON
files in its GitHub repository, not in the wheel), and :func:`leaderboard_entry` reads a
``model_info`` JSON a user names, so ``lsakit evaluate --suite standard`` prints the published
clean and AutoAttack accuracy beside lsakit's.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import pickle
import sys
import threading
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lsakit._io import one_line
from lsakit._optional import ECOSYSTEMS
from lsakit.errors import ConfigError
from lsakit.models.ecosystems import PREPROCESSING, recorded_preprocessing
from lsakit.models.pretrained import Loaded, Preprocessing, Provenance, sha256_of
from lsakit.models.sources import ModelSource, ModelSpec, unknown_name

DATASETS = ("cifar10", "cifar100", "imagenet")
THREAT_MODELS = ("Linf", "L2", "corruptions")
#: RobustBench's own default model folder (``load_model(model_dir="./models")``)
DEFAULT_MODEL_DIR = "models"
_LOCK = threading.Lock()


def _resource_filename(package: str, resource: str) -> str:
    """``pkg_resources.resource_filename``, the one function of it RobustBench calls."""
    module = sys.modules.get(package) or importlib.import_module(package)
    return os.path.join(os.path.dirname(str(module.__file__)), *resource.split("/"))


def import_robustbench() -> tuple[Any, Any, Any]:
    """``(robustbench.utils, robustbench.model_zoo, robustbench.data)``, without running the
    package's ``__init__`` (see the module docstring); one ConfigError line if not installed."""
    install = ECOSYSTEMS["robustbench"][1]
    with _LOCK:
        if "robustbench" not in sys.modules:
            spec = importlib.util.find_spec("robustbench")
            if spec is None or spec.submodule_search_locations is None:
                raise ConfigError(
                    f"robustbench: models need the robustbench package, which is not installed: "
                    f"{install}"
                )
            # the package as a namespace: its __path__ is set, its __init__ is not run
            sys.modules["robustbench"] = importlib.util.module_from_spec(spec)
        shim = None
        if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
            sys.modules["pkg_resources"] = shim
        try:
            with warnings.catch_warnings():  # its imports of timm's deprecated module paths
                warnings.simplefilter("ignore", FutureWarning)
                modules = tuple(
                    importlib.import_module(f"robustbench.{name}")
                    for name in ("utils", "model_zoo", "data")
                )
        except ImportError as err:
            raise ConfigError(
                f"robustbench: models need RobustBench's model zoo, which cannot be imported "
                f"({one_line(err)}); {install}"
            ) from None
        finally:
            if shim is not None:
                sys.modules.pop("pkg_resources", None)  # robustbench.loaders keeps its reference
    return modules[0], modules[1], modules[2]


def _choice(kwargs: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = str(kwargs.get(key, default))
    if value not in choices:
        raise ConfigError(f"robustbench: {key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _enums(dataset: str, threat: str) -> tuple[Any, Any]:
    enums = importlib.import_module("robustbench.model_zoo.enums")
    return enums.BenchmarkDataset(dataset), enums.ThreatModel(threat)


def _preprocessing(data: Any, enums: tuple[Any, Any], name: str) -> Preprocessing | None:
    """RobustBench's input transform for the model (a torchvision Compose), as lsakit's."""
    compose = data.get_preprocessing(enums[0], enums[1], name, None)
    resize: tuple[int, ...] | None = None
    crop: tuple[int, int] | None = None
    interpolation = "bilinear"
    for step in getattr(compose, "transforms", []):
        kind = type(step).__name__
        if kind == "Resize":
            size = step.size
            resize = (int(size),) if isinstance(size, int) else tuple(int(s) for s in size)
            interpolation = str(step.interpolation.value)
        elif kind == "CenterCrop":
            size = step.size
            crop = (int(size[0]), int(size[-1])) if not isinstance(size, int) else (size, size)
        elif kind not in ("ToTensor", "PILToTensor", "ConvertImageDtype"):
            raise ConfigError(
                f"robustbench:{name}: its preprocessing has a {kind} step, which lsakit does "
                "not reproduce"
            )
    if resize is None and crop is None:
        return None  # CIFAR: the images as they are (ToTensor)
    return Preprocessing(
        resize=resize, crop=crop, interpolation=interpolation,  # type: ignore[arg-type]
        channels=3, source=f"robustbench get_preprocessing({enums[0].value}, {name})",
    )  # fmt: skip


def _labels(dataset: str) -> tuple[str, ...] | None:
    if dataset == "cifar10":
        from lsakit import data

        return data.info("cifar10").class_names
    if dataset == "imagenet":
        try:
            from timm.data import ImageNetInfo
        except ImportError:
            return None
        return tuple(str(d).split(",")[0] for d in ImageNetInfo().label_descriptions())
    return None


def robustbench_source(spec: ModelSpec) -> ModelSource:
    utils, zoo, data = import_robustbench()

    def entry(kwargs: Mapping[str, Any]) -> tuple[str, str, Any, tuple[Any, Any]]:
        dataset = _choice(kwargs, "dataset", DATASETS, "cifar10")
        threat = _choice(kwargs, "threat_model", THREAT_MODELS, "Linf")
        enums = _enums(dataset, threat)
        models = zoo.model_dicts.get(enums[0], {}).get(enums[1], {})
        if spec.target not in models:
            unknown_name(
                spec, list(models), f"RobustBench's {dataset} {threat} zoo (its leaderboard)"
            )
        return dataset, threat, models[spec.target], enums

    def check(kwargs: dict[str, Any]) -> tuple[str, str, Any, tuple[Any, Any]]:
        unknown = sorted(set(kwargs) - {"dataset", "threat_model", "model_dir", PREPROCESSING})
        if unknown:
            raise ConfigError(
                f"model {spec.text!r} has no argument {unknown[0]!r}; robustbench: models take "
                "dataset=, threat_model= and model_dir="
            )
        return entry(kwargs)

    def load(kwargs: dict[str, Any]) -> Loaded:
        dataset, threat, item, enums = check(kwargs)
        recorded = kwargs.pop(PREPROCESSING, None)
        if recorded is not None:  # a checkpoint's: the architecture alone, no download
            model: nn.Module = item["model"]()
            return Loaded(model, recorded_preprocessing({PREPROCESSING: recorded}))
        model_dir = Path(str(kwargs.get("model_dir", DEFAULT_MODEL_DIR))).expanduser()
        file = model_dir / dataset / threat / f"{spec.target}.pt"
        created = [d for d in (model_dir, file.parent.parent, file.parent) if not d.exists()]
        try:
            with contextlib.redirect_stdout(sys.stderr):  # its "Downloading …" line
                model = utils.load_model(
                    spec.target, model_dir=str(model_dir), dataset=dataset, threat_model=threat
                )
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            if file.is_file() and not isinstance(err, RuntimeError):
                file.unlink()  # e.g. Google Drive's HTML page saved as NAME.pt
                raise ConfigError(
                    f"model {spec.text!r}: {file} is not a checkpoint ({one_line(err)}); removed "
                    "it — run again to download it"
                ) from None
            raise ConfigError(
                f"model {spec.text!r}: RobustBench cannot load it ({one_line(err)})"
            ) from None
        except OSError as err:  # requests' ConnectionError is an OSError
            for folder in reversed(created):  # RobustBench made them for the download
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise ConfigError(
                f"model {spec.text!r}: {file} is not there and cannot be downloaded "
                f"({one_line(err)}); offline, put the checkpoint there (model_dir=DIR)"
            ) from None
        drive = item.get("gdrive_id")
        provenance = Provenance(
            source="robustbench", name=spec.target,
            file=str(file) if file.is_file() else None,
            sha256=sha256_of(file) if file.is_file() else None,
            url=f"https://drive.google.com/uc?id={drive}" if isinstance(drive, str) else None,
            details={"dataset": dataset, "threat_model": threat},
        )  # fmt: skip
        preprocessing = _preprocessing(data, enums, spec.target)
        return Loaded(model.train(), preprocessing, _labels(dataset), provenance)

    def portable(kwargs: dict[str, Any]) -> dict[str, Any]:
        _, _, _, enums = entry(kwargs)
        out = {k: v for k, v in kwargs.items() if k in ("dataset", "threat_model")}
        pre = _preprocessing(data, enums, spec.target) or Preprocessing(source="robustbench")
        return {**out, PREPROCESSING: pre.to_json()}

    def pretrained(kwargs: Mapping[str, Any]) -> bool:
        return PREPROCESSING not in kwargs

    return ModelSource(spec, load, portable, check, pretrained=pretrained)


# -- the leaderboard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderboardEntry:
    """A RobustBench leaderboard entry: clean and AutoAttack accuracy (%) at ε."""

    name: str
    dataset: str
    threat_model: str
    eps: str  # as RobustBench writes it, e.g. "8/255"
    clean_acc: float
    autoattack_acc: float
    source: str  # where the numbers come from

    @property
    def eps_value(self) -> float:
        top, _, bottom = self.eps.partition("/")
        return float(top) / float(bottom) if bottom else float(top)


_MODEL_INFO = "https://github.com/RobustBench/robustbench/blob/master/model_info"
#: Entries of RobustBench's leaderboard, copied from its model_info JSON files (facts, with
#: their source); :func:`leaderboard_entry` reads any other from a JSON file the user names.
LEADERBOARD: dict[tuple[str, str, str], LeaderboardEntry] = {
    (e.dataset, e.threat_model, e.name): e
    for e in (
        LeaderboardEntry("Standard", "cifar10", "Linf", "8/255", 94.78, 0.0,
                         f"{_MODEL_INFO}/cifar10/Linf/Standard.json"),
        LeaderboardEntry("Carmon2019Unlabeled", "cifar10", "Linf", "8/255", 89.69, 59.53,
                         f"{_MODEL_INFO}/cifar10/Linf/Carmon2019Unlabeled.json"),
        LeaderboardEntry("Salman2020Do_R50", "imagenet", "Linf", "4/255", 64.02, 34.96,
                         f"{_MODEL_INFO}/imagenet/Linf/Salman2020Do_R50.json"),
    )
}  # fmt: skip


def leaderboard_entry(
    name: str, dataset: str, threat_model: str, file: str | os.PathLike[str] | None = None
) -> LeaderboardEntry | None:
    """The leaderboard's entry for a zoo model: from ``file`` (a RobustBench ``model_info``
    JSON), else from :data:`LEADERBOARD`; None when neither has it."""
    if file is None:
        return LEADERBOARD.get((dataset, threat_model, name))
    path = Path(file)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return LeaderboardEntry(
            name=name, dataset=dataset, threat_model=threat_model, eps=str(info["eps"]),
            clean_acc=float(info["clean_acc"]), autoattack_acc=float(info["autoattack_acc"]),
            source=str(path),
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"leaderboard file {path}: not a RobustBench model_info JSON with eps, clean_acc and "
            f"autoattack_acc ({one_line(err)})"
        ) from None
