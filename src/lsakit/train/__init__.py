"""Training: objectives (standard and adversarial), the regularizers, the loop, the trainer.

The configuration (:class:`TrainConfig`, config files) is :mod:`lsakit.config`'s, re-exported here.
"""

from lsakit.config import (
    CONFIG_NAME,
    TrainConfig,
    dump_config,
    load_config,
    load_run_config,
    validate_config,
)
from lsakit.train.loop import Callback, Run, TrainingError
from lsakit.train.parts import accuracy, resolve_device
from lsakit.train.regularizers import (
    GradThrough,
    LayerwiseRegularizer,
    LRReduction,
    Regularizer,
    RegularizerInputs,
)
from lsakit.train.rundir import BEST_NAME, CHECKPOINT_NAME, METRICS_NAME, STATE_NAME
from lsakit.train.trainer import TrainResult, train

__all__ = [
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "METRICS_NAME",
    "STATE_NAME",
    "Callback",
    "GradThrough",
    "LRReduction",
    "LayerwiseRegularizer",
    "Regularizer",
    "RegularizerInputs",
    "Run",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "accuracy",
    "dump_config",
    "load_config",
    "load_run_config",
    "resolve_device",
    "train",
    "validate_config",
]
