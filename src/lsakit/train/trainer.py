"""Training: the config, the loop, per-epoch evaluation, atomic checkpoints and ``metrics.jsonl``.

This issue's trainer does normal (clean cross-entropy) training, the first step of LSA's
Algorithm 2 ("train normally → attack → select the MVL list"). Adversarial objectives and the
layer-wise regularizer plug into the same loop in the AT-LR issue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lsakit import data as datasets
from lsakit import models
from lsakit._io import atomic_write_text
from lsakit._torch import eval_mode, model_device, seed_everything
from lsakit.checkpoint import save_checkpoint
from lsakit.errors import ConfigError

CHECKPOINT_NAME = "model.safetensors"
METRICS_NAME = "metrics.jsonl"


class TrainConfig(BaseModel):
    """Every training option and its default, in one place (the CLI and presets read these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="model name in the registry (lsakit models)")
    dataset: str = Field(description="data set name in the registry (lsakit datasets)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    data_options: dict[str, Any] = Field(
        default_factory=dict, description="data set options, e.g. moons noise/n_samples"
    )
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    limit: int | None = Field(None, ge=1, description="use only the first N training samples")
    test_limit: int | None = Field(None, ge=1, description="evaluate on the first N test samples")


@dataclass
class TrainResult:
    """The trained model, one metrics record per epoch, and where the checkpoint went."""

    model: nn.Module
    metrics: list[dict[str, Any]]
    checkpoint: Path | None


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for but CUDA is not available; use --device cpu"
        )
    return dev


def accuracy(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Clean top-1 accuracy over a loader (model in eval mode, restored afterwards)."""
    device = model_device(model)
    correct = total = 0
    with torch.no_grad(), eval_mode(model):
        for x, y in loader:
            pred = model(x.to(device)).argmax(dim=1)
            correct += int((pred == y.to(device)).sum())
            total += len(y)
    return correct / max(total, 1)


def _optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    device: str = "auto",
    data_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` with clean cross-entropy.

    After every epoch the test accuracy is measured, a line is appended to ``metrics.jsonl`` and the
    checkpoint ``model.safetensors`` is rewritten atomically (the previous one stays intact until
    the new one is complete). The run is deterministic on CPU for a given seed.
    """
    seed_everything(config.seed)
    dev = resolve_device(device)
    model = models.build(config.model, **config.model_kwargs).to(dev)
    common = {"data_dir": data_dir, "seed": config.seed, **config.data_options}
    train_loader = datasets.load(
        config.dataset,
        "train",
        batch_size=config.batch_size,
        shuffle=True,
        limit=config.limit,
        **common,
    )
    test_loader = datasets.load(
        config.dataset,
        "test",
        batch_size=max(config.batch_size, 256),
        shuffle=False,
        limit=config.test_limit,
        **common,
    )
    optimizer = _optimizer(config, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    out = Path(out_dir) if out_dir is not None else None
    metrics: list[dict[str, Any]] = []
    checkpoint: Path | None = None

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True, disable=not progress) as bar:
        for epoch in range(1, config.epochs + 1):
            task = bar.add_task("train", total=len(train_loader), epoch=epoch, loss=0.0, acc=0.0)
            model.train()
            started = time.perf_counter()
            loss_sum = correct = seen = 0.0
            for x, y in train_loader:
                x, y = x.to(dev), y.to(dev)
                logits = model(x)
                loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(y)
                correct += float((logits.argmax(dim=1) == y).sum())
                seen += len(y)
                bar.update(task, advance=1, loss=loss_sum / seen, acc=correct / seen)
            bar.remove_task(task)
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "test_accuracy": accuracy(model, test_loader),
                "seconds": time.perf_counter() - started,
            }
            metrics.append(record)
            if log is not None:
                log(
                    f"epoch {epoch}/{config.epochs}: loss {record['train_loss']:.4f}, train acc "
                    f"{record['train_accuracy']:.4f}, test acc {record['test_accuracy']:.4f}"
                )
            if out is not None:
                checkpoint = save_checkpoint(
                    out / CHECKPOINT_NAME,
                    model,
                    model_name=config.model,
                    model_kwargs=dict(config.model_kwargs),
                    extra={
                        "dataset": config.dataset,
                        "epoch": epoch,
                        "metrics": record,
                        "config": config.model_dump(),
                    },
                )
                lines = "".join(json.dumps(m) + "\n" for m in metrics)
                atomic_write_text(out / METRICS_NAME, lines)
    return TrainResult(model=model, metrics=metrics, checkpoint=checkpoint)
