"""The pieces of a training run, built from its :class:`~lsakit.config.TrainConfig`: the model,
the data, the objective's arguments, the regularizers, the optimizer and its schedule, the
per-epoch seeds, validation and the MVL selection of AT-LR (Khalooei et al. 2022, Algorithm 2).

:func:`lsakit.train.train` assembles them; the loop (:mod:`lsakit.train.loop`) and the callbacks
(:mod:`lsakit.train.callbacks`) use them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lsakit import data as datasets
from lsakit import distributed, models, speed
from lsakit._torch import eval_mode, model_device
from lsakit.config import TrainConfig
from lsakit.data.transforms import Transformed
from lsakit.defenses.noise import add_noise_injection, noise_layers, parameter_groups
from lsakit.defenses.sparsity import (
    SparsityRegularizer,
    add_mask_buffers,
    apply_masks,
    magnitude_masks,
)
from lsakit.errors import ArgumentError, ConfigError
from lsakit.train.lsp import LocalStructureRegularizer
from lsakit.train.regularizers import LayerwiseRegularizer, Regularizer

if TYPE_CHECKING:
    from lsakit.train.loop import Totals


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (checked).

    Under torchrun, ``auto`` and ``cuda`` mean this rank's GPU, ``cuda:LOCAL_RANK``.

    Args:
        device: ``"auto"`` or a torch device name (``"cpu"``, ``"cuda"``, ``"cuda:N"``, …).

    Returns:
        The device to use. An unknown name raises ConfigError, CUDA without a GPU
        ArgumentError.
    """
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return distributed.local_device(dev)
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(
            f"device {device!r} asked for but CUDA is not available; use {{device}} cpu"
        )
    return distributed.local_device(dev)


def accuracy(model: nn.Module, loader: DataLoader[Any] | list[Any]) -> float:
    """Clean top-1 accuracy over a loader (model in eval mode, restored afterwards).

    Under torchrun every rank takes its share of the batches and the counts are summed.

    Args:
        model: the classifier; its output is taken as the logits ``(N, classes)``.
        loader: ``(x, y)`` batches (a DataLoader or a list), moved to the model's device.

    Returns:
        The fraction of samples whose arg-max class is the label, in [0, 1] (0 without data).
    """
    device = model_device(model)
    distributed.init(device)
    correct = total = 0
    with torch.no_grad(), eval_mode(model):
        for x, y in distributed.shard_batches(loader):
            pred = model(x.to(device)).argmax(dim=1)
            correct += int((pred == y.to(device)).sum())
            total += len(y)
    summed_correct, summed_total = distributed.all_reduce_sum([correct, total])
    return summed_correct / max(summed_total, 1)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
def class_path(module: nn.Module) -> str:
    """``module:QualifiedName`` of a module's class: the model spec a user's module is recorded
    under (``lsakit.models.build`` builds it again when the class takes no arguments)."""
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def build_model(config: TrainConfig) -> models.Loaded:
    """The model with the config's defenses: noise layers, initial weights, masks; pretrained
    weights (the model's arguments ask for them) come with their preprocessing and provenance."""
    loaded = models.load(config.model, **config.model_kwargs)
    model = loaded.model
    if config.noise_injection:
        add_noise_injection(model, alpha_init=config.alpha_init)
    if config.init_checkpoint is not None:
        from lsakit.checkpoint import describe_mismatch, load_checkpoint

        initial, meta = load_checkpoint(config.init_checkpoint, model=config.model)
        if meta.model != config.model:
            raise ConfigError(
                f"init_checkpoint {config.init_checkpoint} holds a {meta.model}, not a "
                f"{config.model}; give a checkpoint of the same model"
            )
        state = initial.state_dict()
        add_mask_buffers(model, state.keys())
        mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        problem = describe_mismatch(
            expected=mine, found={k: tuple(v.shape) for k, v in state.items()}
        )
        if problem is not None:
            raise ConfigError(
                f"init_checkpoint {config.init_checkpoint} does not fit this config ({problem}); "
                "noise_injection must match the checkpoint's"
            )
        model.load_state_dict(state)
    if config.prune_sparsity is not None:
        apply_masks(model, magnitude_masks(model, config.prune_sparsity, scope=config.prune_scope))
    return loaded


def own_model(config: TrainConfig, module: nn.Module) -> models.Loaded:
    """The caller's module as the run's model, with the config's noise layers (its weights are
    the module's own: the registry options that build or load a model do not apply)."""
    if not isinstance(module, nn.Module):
        raise ArgumentError(
            f"{{model}} must be a torch.nn.Module, got {type(module).__name__}; give a registry "
            "name as the config's model instead"
        )
    if config.model_kwargs:
        raise ArgumentError(
            "model_kwargs are the arguments that build a registry model; a {model} module is "
            "built already: drop them"
        )
    if config.init_checkpoint is not None:
        raise ArgumentError(
            "init_checkpoint loads a registry model's weights; load them into the {model} "
            "module before training instead"
        )
    if config.noise_injection:
        add_noise_injection(module, alpha_init=config.alpha_init)
    return models.Loaded(module)


# --------------------------------------------------------------------------------------------
# Objective, regularizers, optimizer, schedule
# --------------------------------------------------------------------------------------------
def objective_params(config: TrainConfig, scale: float = 1.0) -> dict[str, Any]:
    """The objective's keyword arguments from the config (each method takes what it uses).

    ``scale`` ∈ (0, 1] multiplies ε and a configured α (ε warm-up); a method's own default α is
    either relative to ε already (fast: 1.25 ε) or an absolute step that PGD's projection caps.
    """
    params: dict[str, Any] = {}
    if config.method == "standard":
        return params
    params["eps"] = config.eps * scale
    if config.method in ("pgd", "trades", "mart", "apgd", "pni"):
        params["steps"] = config.steps
    if config.alpha is not None and config.method in ("fast", "pgd", "trades", "mart", "pni"):
        params["alpha"] = config.alpha * scale
    if config.method in ("trades", "mart"):
        params["beta"] = config.beta
    return params


def layerwise_regularizer(config: TrainConfig, layers: list[str]) -> LayerwiseRegularizer:
    """AT-LR on ``layers`` with the config's γ and gradient path."""
    return LayerwiseRegularizer(layers, gamma=config.gamma, grad_through=config.grad_through)


def companion_regularizers(config: TrainConfig) -> list[Regularizer]:
    """The configured penalties besides AT-LR, in the order their terms are added: LSP, then
    the sparsity penalty (lasso / group lasso)."""
    terms: list[Regularizer] = []
    if "lsp" in config.regularizer:
        terms.append(
            LocalStructureRegularizer(
                weight=config.lsp_weight, variant=config.lsp_variant, layer=config.lsp_layer,
                on=config.lsp_on, k=config.lsp_k, bandwidth=config.lsp_bandwidth,
                perplexity=config.lsp_perplexity,
            )
        )  # fmt: skip
    if "lasso" in config.regularizer or "group_lasso" in config.regularizer:
        terms.append(
            SparsityRegularizer(
                lasso=config.lasso_weight if "lasso" in config.regularizer else 0.0,
                group_lasso=config.group_lasso_weight
                if "group_lasso" in config.regularizer
                else 0.0,
            )
        )
    return terms


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params: Any = model.parameters()
    if noise_layers(model):
        # PNI: no weight decay on the noise scales α, or they decay to 0 (He et al. 2019).
        params = parameter_groups(model, config.weight_decay, exclude_bias_and_norm=False)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, t: float) -> float:
    """The learning-rate multiplier at training progress ``t`` ∈ [0, 1]."""
    t = min(max(t, 0.0), 1.0)
    if config.schedule == "multistep":
        return float(config.lr_decay ** sum(t >= m for m in config.milestones))
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if config.schedule == "cyclic":  # Wong et al. 2020: linearly up to the peak at half, then to 0
        return 2 * t if t < 0.5 else 2 * (1 - t)
    return 1.0


def scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per iteration: the cyclic schedule of fast AT needs iteration resolution."""
    total_iterations = max(config.epochs * steps_per_epoch, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: lr_factor(config, iteration / total_iterations)
    )


def eps_scale(config: TrainConfig, iteration: int, steps_per_epoch: int) -> float:
    """The ε warm-up factor at training ``iteration`` (1-based, counted over all epochs).

    Linear from 1/W to 1 over the first W = eps_warmup × steps_per_epoch iterations, then 1 (a
    common remedy when PGD-AT from scratch at the full ε does not start learning, e.g. small
    networks on MNIST at ε 0.3; the published recipes of this toolkit use none).
    """
    warmup = config.eps_warmup * steps_per_epoch
    return 1.0 if warmup <= 0 else min(1.0, iteration / warmup)


def epoch_seed(config: TrainConfig, epoch: int) -> int:
    return (config.seed * 1_000_003 + epoch) % (2**63)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class Data:
    train: DataLoader[Any]
    val: DataLoader[Any] | None
    test: DataLoader[Any]
    generator: torch.Generator
    #: two training inputs, for resolving probe layers with a dry forward
    example: torch.Tensor
    #: under torchrun: this rank's share of each epoch's order (``set_epoch`` every epoch)
    sampler: distributed.ShuffleShardSampler | None = None

    def seed_epoch(self, config: TrainConfig, epoch: int) -> None:
        """Re-seed the epoch's randomness from (seed, epoch): the data order, shared by the
        ranks, and torch's global generator (random starts, dropout), which differs per rank."""
        torch.manual_seed(distributed.rank_seed(epoch_seed(config, epoch)))
        self.generator.manual_seed(epoch_seed(config, epoch))
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)


def load_data(
    config: TrainConfig, data_dir: str | Path | None, preprocessing: models.Preprocessing | None
) -> Data:
    """Train split minus a held-out validation tail, and the test split; a pretrained model's
    input transform (resize, crop) applied to each sample as it is read."""
    options = {"data_dir": data_dir, **config.data_options}
    x, y = datasets.load_tensors(config.dataset, "train", limit=config.limit, **options)
    n_val = round(len(y) * config.val_fraction)
    if len(y) - n_val < 1:
        raise ConfigError(f"val_fraction {config.val_fraction} leaves no training samples")
    generator = torch.Generator().manual_seed(config.seed)
    transform = None if preprocessing is None or preprocessing.identity else preprocessing.transform

    def dataset(a: torch.Tensor, b: torch.Tensor) -> Dataset[Any]:
        plain = TensorDataset(a, b)
        return plain if transform is None else Transformed(plain, transform)

    train_set = dataset(x[: len(y) - n_val], y[: len(y) - n_val])
    sampler = None
    if distributed.is_distributed():
        # batch_size stays the global batch: the ranks' shares of step k together are exactly
        # the single process's batch k (same order, see ShuffleShardSampler), and DDP's mean of
        # the ranks' mean gradients is the gradient of the global batch's mean loss.
        world = distributed.world_size()
        sampler = distributed.ShuffleShardSampler(
            train_set, num_replicas=world, rank=distributed.rank(), seed=epoch_seed(config, 0)
        )
        train = DataLoader(
            train_set,
            batch_size=distributed.per_rank_batch_size(config.batch_size, world),
            sampler=sampler,
            generator=generator,
        )
    else:
        train = DataLoader(
            train_set, batch_size=config.batch_size, shuffle=True, generator=generator
        )
    eval_batch = max(config.batch_size, 256)
    val = (
        DataLoader(dataset(x[len(y) - n_val :], y[len(y) - n_val :]), batch_size=eval_batch)
        if n_val
        else None
    )
    test = datasets.load(
        config.dataset, "test", batch_size=eval_batch, shuffle=False, limit=config.test_limit,
        transform=transform, **options,
    )  # fmt: skip
    example = x[:2] if transform is None else transform(x[:2])
    return Data(
        train=train, val=val, test=test, generator=generator, example=example, sampler=sampler
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def evaluate_epoch(
    config: TrainConfig,
    model: nn.Module,
    data: Data,
    epoch: int,
    totals: Totals,
    started: float,
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any]:
    """The epoch's metrics record: training sums, validation (clean and PGD-``val_steps``) and
    clean test accuracy."""
    val_clean = accuracy(model, data.val) if data.val is not None else None
    val_robust = None
    if data.val is not None and config.eps > 0:
        from lsakit.evaluate import robust_accuracy
        from lsakit.perturb import PGD

        attack = PGD(model, eps=config.eps, alpha=config.eps / 4, steps=config.val_steps,
                     seed=distributed.rank_seed(epoch_seed(config, epoch)))  # fmt: skip
        with speed.attack_precision(config.amp):
            val_robust = robust_accuracy(model, data.val, attack)
    seen = max(totals.seen, 1.0)
    return {
        "epoch": epoch,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": totals.loss / seen,
        "train_reg": totals.reg / seen,
        "train_accuracy": totals.correct / seen,
        "val_clean": val_clean,
        "val_robust": val_robust,
        "test_accuracy": accuracy(model, data.test),
        "seconds": time.perf_counter() - started,
    }


def describe(record: dict[str, Any], config: TrainConfig) -> str:
    """The one log line of an epoch's record."""
    parts = [f"epoch {record['epoch']}/{config.epochs}: loss {record['train_loss']:.4f}"]
    if config.regularized or config.regularizer:
        parts.append(f"reg {record['train_reg']:.4f}")  # the regularizers' terms, not the lr
    parts.append(f"train acc {record['train_accuracy']:.4f}")
    parts.append(f"lr {record['lr']:.3g}")
    if record["val_clean"] is not None:
        parts.append(f"val {record['val_clean']:.4f}")
    if record["val_robust"] is not None:
        parts.append(f"val PGD-{config.val_steps} {record['val_robust']:.4f}")
    parts.append(f"test acc {record['test_accuracy']:.4f}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# MVL selection (AT-LR's lr_layers mvl)
# --------------------------------------------------------------------------------------------
def load_for_mvl(
    config: TrainConfig, device: torch.device, like: nn.Module | None = None
) -> nn.Module:
    """The model of ``mvl_checkpoint``: rebuilt from the checkpoint, or, for a run of the
    caller's module (``like``), a copy of that module with the checkpoint's weights."""
    from lsakit.checkpoint import describe_mismatch, load_checkpoint, read_meta

    path = config.mvl_checkpoint
    assert path is not None
    if like is None:
        model, meta = load_checkpoint(path, map_location=device, model=config.model)
    else:  # the caller's module: its class is what the checkpoint must name
        meta = read_meta(path)
    if meta.model != config.model:
        raise ConfigError(
            f"mvl_checkpoint {path} holds a {meta.model}, not {config.model}; "
            f"its layers would not match"
        )
    if like is not None:
        import safetensors.torch

        model = copy.deepcopy(like)
        state = safetensors.torch.load_file(path, device=str(device))
        add_mask_buffers(model, state.keys())
        problem = describe_mismatch(
            expected={k: tuple(v.shape) for k, v in model.state_dict().items()},
            found={k: tuple(v.shape) for k, v in state.items()},
        )
        if problem is not None:
            raise ConfigError(
                f"mvl_checkpoint {path} does not fit the module ({problem}); its layers would "
                "not match"
            )
        model.load_state_dict(state)
        model.eval()
    return model


def mvl_regularizer(
    config: TrainConfig,
    model: nn.Module,
    data: Data,
    log: Callable[[str], None] | None,
) -> LayerwiseRegularizer:
    """Algorithm 2: LSA of ``model`` under PGD at the training ε, regularizing the MVL list."""
    from lsakit.perturb import PGD

    source = data.val if data.val is not None else data.train
    attack = PGD(
        model, eps=config.eps, alpha=config.eps / 4, steps=config.val_steps, seed=config.seed
    )
    regularizer = LayerwiseRegularizer.from_mvl(
        model, source, eta=config.eta, attack=attack,
        gamma=config.gamma if isinstance(config.gamma, float) else float(config.gamma[0]),
        grad_through=config.grad_through, layers=config.mvl_layers,
    )  # fmt: skip
    if log is not None:
        log(f"MVL (η = {config.eta:g}) to regularize: {', '.join(regularizer.layers)}")
    return regularizer
