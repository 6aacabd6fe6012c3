"""Config files: a YAML file of options (:func:`load_config`) and a run directory's own
``config.yaml`` (:func:`load_run_config`, written with :func:`lsakit.config.dump_config`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lsakit.config.presets import train_config
from lsakit.config.train import TrainConfig, merge_options, read_config_file, validate_config

#: The file of a run directory holding the run's complete config (written by the trainer).
CONFIG_NAME = "config.yaml"


def load_config(path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
    """Read a YAML config file (every TrainConfig field allowed) and apply the overrides.

    Like ``lsakit train``'s flags, a file starts from its data set's preset
    (:func:`lsakit.config.presets.train_config`): ``dataset: moons`` alone is the moons recipe
    (model A, lr 0.01, batch 32, 20 epochs), and the same options as a file or as flags give the
    same config.

    Args:
        path: the YAML file, a mapping of option: value (an empty file is no options).
        overrides: options over the file's, as ``lsakit train``'s flags; None values are ignored,
            and a mapping option (``model_kwargs``, ``data_options``) is merged key by key
            (:func:`lsakit.config.merge_options`).

    Returns:
        The validated config: the data set's preset, the file's options over it, the overrides
        over those.
    """
    return train_config(merge_options(read_config_file(path), overrides), source=str(path))


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The config a run directory was started with (for ``--resume``): its complete
    ``config.yaml``, read as it is (no preset).

    Args:
        run_dir: the run directory, holding the :data:`CONFIG_NAME` file the trainer wrote.

    Returns:
        The validated config of that file.
    """
    path = Path(run_dir) / CONFIG_NAME
    return validate_config(read_config_file(path), source=str(path))


__all__ = ["CONFIG_NAME", "load_config", "load_run_config"]
