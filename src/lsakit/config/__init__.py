"""The configuration layer: :class:`TrainConfig`, its defaults, the per-data-set presets and
config files.

A leaf of the package: importing it loads pydantic, PyYAML and :mod:`lsakit.errors`, never torch
or another lsakit module (``tests/test_imports.py``). The modules that run a config (the trainer,
the regularizers, LSA) import their shared defaults from here (:mod:`lsakit.config.defaults`).

* :mod:`lsakit.config.defaults`: the defaults and option types shared with the runtime modules.
* :mod:`lsakit.config.train`: :class:`TrainConfig`, :func:`validate_config`, YAML helpers.
* :mod:`lsakit.config.presets`: the per-data-set recipes (:func:`train_config`, :func:`preset`).
* :mod:`lsakit.config.files`: :func:`load_config`, :func:`load_run_config`.
"""

from __future__ import annotations

from lsakit.config.defaults import (
    DEFAULT_BANDWIDTH,
    DEFAULT_ETA,
    DEFAULT_GAMMA,
    DEFAULT_GRAD_THROUGH,
    DEFAULT_LSP_WEIGHT,
    DEFAULT_PERPLEXITY,
    Amp,
    Bandwidth,
    GradThrough,
    LSPOn,
    LSPVariant,
    TrackingBackend,
)
from lsakit.config.files import CONFIG_NAME, load_config, load_run_config
from lsakit.config.presets import (
    DEFAULT_DATASET,
    PRESETS,
    USER_EPS_PER_WIDTH,
    USER_EPS_UNBOUNDED,
    USER_TRAIN,
    Preset,
    preset,
    train_config,
    user_preset,
)
from lsakit.config.train import (
    Method,
    Regularizer,
    Schedule,
    TrainConfig,
    dump_config,
    merge_options,
    read_config_file,
    validate_config,
)

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_BANDWIDTH",
    "DEFAULT_DATASET",
    "DEFAULT_ETA",
    "DEFAULT_GAMMA",
    "DEFAULT_GRAD_THROUGH",
    "DEFAULT_LSP_WEIGHT",
    "DEFAULT_PERPLEXITY",
    "PRESETS",
    "USER_EPS_PER_WIDTH",
    "USER_EPS_UNBOUNDED",
    "USER_TRAIN",
    "Amp",
    "Bandwidth",
    "GradThrough",
    "LSPOn",
    "LSPVariant",
    "Method",
    "Preset",
    "Regularizer",
    "Schedule",
    "TrackingBackend",
    "TrainConfig",
    "dump_config",
    "load_config",
    "load_run_config",
    "merge_options",
    "preset",
    "read_config_file",
    "train_config",
    "user_preset",
    "validate_config",
]
