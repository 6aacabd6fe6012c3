"""Training: objectives (standard and adversarial), the layer-wise regularizer, the trainer."""

from lsakit.train.config import TrainConfig, dump_config, load_config, validate_config
from lsakit.train.trainer import (
    BEST_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    STATE_NAME,
    TrainingError,
    TrainResult,
    accuracy,
    load_run_config,
    resolve_device,
    train,
)

__all__ = [
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "METRICS_NAME",
    "STATE_NAME",
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
