"""Training (normal training now; adversarial objectives and AT-LR build on the same loop)."""

from lsakit.train.trainer import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    TrainConfig,
    TrainResult,
    accuracy,
    resolve_device,
    train,
)

__all__ = [
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "resolve_device",
    "train",
]
