"""The trainer: objective + layer-wise regularizer, schedules, validation, checkpoints, resume.

One loop serves every method (standard, FGSM, fast, PGD, TRADES, MART, APGD adversarial
training) with or without the AT-LR regularizer (Khalooei et al. 2022, Eq. 13):

    min_θ E[ J(θ, x̂, y) + Σ_{l∈M} γ_l · CM(φ_l(x), φ_l(x̂)) ]

The representations come from a :class:`~lsakit.probe.LayerProbe` (gradients kept) around the
forward passes the objective already runs; only objectives without a clean forward (FGSM, fast,
PGD, APGD) need one extra clean forward, and no extra adversarial forward is ever run.

A run directory holds ``config.yaml``, ``model.safetensors`` (last epoch), ``best.safetensors``
(best robust validation accuracy), ``metrics.jsonl`` and ``state.pt`` (everything needed to resume,
the data directory included, in one atomically written file, loaded with ``weights_only=True``). Each epoch's randomness (data
order, random starts) is re-seeded from (seed, epoch), so a resumed run ends with exactly the same
weights and metrics as an uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lsakit import data as datasets
from lsakit import distributed, models, speed
from lsakit._io import atomic_write, atomic_write_text
from lsakit._torch import eval_mode, model_device, seed_everything
from lsakit.checkpoint import save_checkpoint
from lsakit.data.transforms import Transformed
from lsakit.defenses.noise import add_noise_injection, noise_layers, parameter_groups
from lsakit.defenses.sparsity import (
    SparsityRegularizer,
    add_mask_buffers,
    apply_masks,
    enforce_masks_after_steps,
    magnitude_masks,
    masked_layers,
    sparsity_report,
)
from lsakit.domain import input_domain
from lsakit.errors import CheckpointError, ConfigError, LsakitError
from lsakit.perturb.base import ZeroGradientWarning
from lsakit.probe import LayerProbe
from lsakit.speed import Amp
from lsakit.tracking import TrackingSetup, open_trackers
from lsakit.tracking import require as require_tracking
from lsakit.train.config import TrainConfig, dump_config, read_config_file, validate_config
from lsakit.train.lsp import LocalStructureRegularizer

CHECKPOINT_NAME = "model.safetensors"
BEST_NAME = "best.safetensors"
METRICS_NAME = "metrics.jsonl"
STATE_NAME = "state.pt"
CONFIG_NAME = "config.yaml"
STATE_FORMAT = 1


class TrainingError(LsakitError):
    """Training cannot go on (e.g. a NaN loss); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """The trained model, one metrics record per epoch, and where the checkpoints went."""

    model: nn.Module
    metrics: list[dict[str, Any]]
    checkpoint: Path | None
    best_checkpoint: Path | None = None
    regularized_layers: list[str] | None = None


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (checked).

    Under torchrun, ``auto`` and ``cuda`` mean this rank's GPU, ``cuda:LOCAL_RANK``.
    """
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return distributed.local_device(dev)
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for but CUDA is not available; use --device cpu"
        )
    return distributed.local_device(dev)


def accuracy(model: nn.Module, loader: DataLoader[Any] | list[Any]) -> float:
    """Clean top-1 accuracy over a loader (model in eval mode, restored afterwards).

    Under torchrun every rank takes its share of the batches and the counts are summed.
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
# Pieces of a run
# --------------------------------------------------------------------------------------------
def _objective_params(config: TrainConfig, scale: float = 1.0) -> dict[str, Any]:
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


def _build_model(config: TrainConfig) -> models.Loaded:
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


def _companion_regularizers(config: TrainConfig) -> tuple[Any, Any]:
    """(LSP, sparsity penalty) as configured; None for those switched off."""
    lsp = None
    if "lsp" in config.regularizer:
        lsp = LocalStructureRegularizer(
            weight=config.lsp_weight, variant=config.lsp_variant, layer=config.lsp_layer,
            on=config.lsp_on, k=config.lsp_k, bandwidth=config.lsp_bandwidth,
            perplexity=config.lsp_perplexity,
        )  # fmt: skip
    sparsity = None
    if "lasso" in config.regularizer or "group_lasso" in config.regularizer:
        sparsity = SparsityRegularizer(
            lasso=config.lasso_weight if "lasso" in config.regularizer else 0.0,
            group_lasso=config.group_lasso_weight if "group_lasso" in config.regularizer else 0.0,
        )
    return lsp, sparsity


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params: Any = model.parameters()
    if noise_layers(model):
        # PNI: no weight decay on the noise scales α, or they decay to 0 (He et al. 2019).
        params = parameter_groups(model, config.weight_decay, exclude_bias_and_norm=False)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@dataclass
class _Data:
    train: DataLoader[Any]
    val: DataLoader[Any] | None
    test: DataLoader[Any]
    generator: torch.Generator
    #: two training inputs, for resolving probe layers with a dry forward
    example: torch.Tensor
    #: under torchrun: this rank's share of each epoch's order (``set_epoch`` every epoch)
    sampler: distributed.ShuffleShardSampler | None = None


def _load_data(
    config: TrainConfig, data_dir: str | Path | None, preprocessing: models.Preprocessing | None
) -> _Data:
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
            train_set, num_replicas=world, rank=distributed.rank(), seed=_epoch_seed(config, 0)
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
    return _Data(
        train=train, val=val, test=test, generator=generator, example=example, sampler=sampler
    )


def _eps_scale(config: TrainConfig, iteration: int, steps_per_epoch: int) -> float:
    """The ε warm-up factor at training ``iteration`` (1-based, counted over all epochs).

    Linear from 1/W to 1 over the first W = eps_warmup × steps_per_epoch iterations, then 1 (a
    common remedy when PGD-AT from scratch at the full ε does not start learning, e.g. small
    networks on MNIST at ε 0.3; the published recipes of this toolkit use none).
    """
    warmup = config.eps_warmup * steps_per_epoch
    return 1.0 if warmup <= 0 else min(1.0, iteration / warmup)


def _epoch_seed(config: TrainConfig, epoch: int) -> int:
    return (config.seed * 1_000_003 + epoch) % (2**63)


class _NonFiniteLoss(Exception):
    def __init__(self, value: float) -> None:
        self.value = value


#: Maps a probe's captured layer names and representations to (AT-LR reps, LSP embedding).
Split = Callable[
    [list[str], list[torch.Tensor]], tuple[list[torch.Tensor] | None, torch.Tensor | None]
]


def training_step(
    model: nn.Module,
    objective: Any,
    regularizer: Any,
    probe: LayerProbe | None,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lsp: Any = None,
    sparsity: Any = None,
    split: Split | None = None,
    amp: Amp = "off",
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, float, torch.Tensor | None]:
    """One optimizer step of ``objective`` + regularizers: (loss, regularizer terms, logits).

    The regularizers add to the objective's loss: the layer-wise one (AT-LR) and LSP read the
    representations the objective captured on its own forwards — an objective without a clean
    forward (FGSM, fast, PGD, APGD) costs one extra clean forward, and no extra adversarial
    forward is ever run —; the sparsity penalty (RSR) reads the weights. With one probe serving
    both AT-LR and LSP, ``split`` maps its capture to (AT-LR representations, LSP embedding).
    ``logits`` are those accuracy is reported on (adversarial when the objective has them).
    Raises _NonFiniteLoss before any update (on every rank when any rank's loss is not finite).
    ``model`` may be a DistributedDataParallel wrapper: its training forwards synchronize the
    gradients, and the probe must sit on the wrapped module. ``amp`` autocasts the forwards (the
    loss is summed in float32); ``scaler`` (fp16) scales the loss for the backward pass.
    """
    with speed.autocast(amp, x.device):
        loss, reg_value, output = _losses(
            model, objective, regularizer, probe, x, y, lsp=lsp, sparsity=sparsity, split=split
        )
    value = loss.item()
    # Under torchrun every rank must take the same branch, or the others wait in backward.
    if (
        distributed.any_rank(not math.isfinite(value))
        if distributed.is_distributed()
        else (not math.isfinite(value))
    ):
        raise _NonFiniteLoss(value)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        torch.autograd.backward(loss)
        optimizer.step()
    else:  # fp16: steps whose scaled gradients overflow are skipped and the scale lowered
        torch.autograd.backward(scaler.scale(loss))
        scaler.step(optimizer)
        scaler.update()
    logits = output.adv_logits if output.adv_logits is not None else output.clean_logits
    return value, reg_value, logits


def _losses(
    model: nn.Module,
    objective: Any,
    regularizer: Any,
    probe: LayerProbe | None,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lsp: Any,
    sparsity: Any,
    split: Split | None,
) -> tuple[torch.Tensor, float, Any]:
    """The forward half of :func:`training_step`: (total loss in float32, regularizer terms,
    the objective's output)."""
    output = objective(model, x, y, probe)
    loss = output.loss.float()
    reg_value = 0.0
    if regularizer is not None or lsp is not None:
        if probe is None:
            raise ConfigError("the layer-wise and LSP regularizers need a probe")
        clean_reps = output.clean_reps
        if clean_reps is None:
            model(x)
            clean_reps = probe.take()
        names = [layer.name for layer in probe.layers]

        def cut(reps: list[torch.Tensor]) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
            return split(names, reps) if split is not None else (reps, None)

        lr_clean, z_clean = cut(clean_reps)
        lr_adv, z_adv = cut(output.adv_reps) if output.adv_reps is not None else (None, None)
        if regularizer is not None:
            if lr_adv is None:
                raise ConfigError("the layer-wise regularizer needs an adversarial objective")
            term = regularizer(lr_clean, lr_adv)
            loss = loss + term
            reg_value += term.detach().item()
        if lsp is not None:
            term = lsp(x, z_clean, output.x_adv, z_adv)
            loss = loss + term
            reg_value += term.detach().item()
    if sparsity is not None:
        term = sparsity(distributed.unwrap(speed.uncompiled(model)))
        loss = loss + term
        reg_value += term.detach().item()
    return loss, reg_value, output


def _captured_names(model: nn.Module, layers: Any, example: torch.Tensor) -> list[str]:
    """The names (forward order) a probe on ``layers`` captures: labels and globs resolved."""
    with LayerProbe(model, layers) as probe, eval_mode(model), torch.no_grad():
        model(example)
        probe.take()
        return [layer.name for layer in probe.layers]


def _probe_plan(
    model: nn.Module, regularizer: Any, lsp: Any, example: torch.Tensor
) -> tuple[list[str] | None, Split | None]:
    """The layers of the one training probe, and the ``split`` of its captures (or None).

    AT-LR alone keeps its own layer spec (labels such as ``L2`` included); with LSP the probe
    captures the union, by module name, and ``split`` hands each regularizer its own.
    """
    if lsp is None:
        return (list(regularizer.layers) if regularizer is not None else None), None
    lsp_name = lsp.probe_layers(model, example)[0]
    [lsp_name] = _captured_names(model, [lsp_name], example)
    lr_names = (
        _captured_names(model, list(regularizer.layers), example) if regularizer is not None else []
    )
    union = list(dict.fromkeys([*lr_names, lsp_name]))
    if any("#" in name for name in union):
        raise ConfigError(
            "LSP together with AT-LR needs layers called once per forward; pick other layers"
        )

    def split(
        names: list[str], reps: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor] | None, torch.Tensor]:
        lr = [reps[names.index(n)] for n in lr_names] if regularizer is not None else None
        return lr, reps[names.index(lsp_name)]

    return union, split


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _in_data_domain(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``train`` under the input domain of its config's data set (lsakit.domain): every
    attack of the objective, the validation attacks and the MVL analysis follow it."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        config = args[0] if args else kwargs["config"]
        assert isinstance(config, TrainConfig)
        with (
            input_domain(datasets.domain(config.dataset, **config.data_options)),
            warnings.catch_warnings(),
        ):
            # Training attacks meet zero gradients routinely (a zero-initialised head, TRADES'
            # KL at its start): that is not the evaluation-time problem the warning is for.
            warnings.simplefilter("ignore", ZeroGradientWarning)
            return fn(*args, **kwargs)

    return wrapper


@_in_data_domain
def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    device: str = "auto",
    data_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    tracking: TrackingSetup | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``config.dataset`` with ``config.method`` (+ AT-LR if configured).

    After every epoch: validation (clean and PGD-``val_steps`` robust accuracy on the held-out
    tail of the training split), clean test accuracy, a ``metrics.jsonl`` line, the last and best
    checkpoints and the resume state, each written atomically. With ``resume=True`` the run in
    ``out_dir`` continues from its last completed epoch: ``config`` must be the run's own
    (:func:`load_run_config`), save ``epochs`` (more extends the run), and ``data_dir`` defaults
    to the directory the run recorded. A directory that already holds a run is
    refused unless ``overwrite=True``, which first deletes that run's files (so a new run that
    fails early never leaves a mix of two runs). A NaN/inf loss raises TrainingError.

    ``config.log_to`` also logs the run to TensorBoard / MLflow (:mod:`lsakit.tracking`; names
    and store from ``tracking``): the config, each epoch's ``metrics.jsonl`` record and, at the
    end, the run's files. A resumed run continues the same tracked run.
    """
    from lsakit.train.objectives import build_objective
    from lsakit.train.regularizers import LayerwiseRegularizer

    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume needs the run directory")
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other; choose one")
    if config.log_to:
        if out is None:
            raise ConfigError("log_to needs a run directory to track; give out_dir (--out)")
        require_tracking(config.log_to)  # a missing package is said before any training
    seed_everything(config.seed)  # the same on every rank: the initial weights agree
    dev = resolve_device(device)
    distributed.init(dev)
    main = distributed.is_main_process()
    if not main:
        log, progress = None, False
    if out is not None and not resume:
        _claim_run_dir(out, overwrite=overwrite)  # every rank checks before rank 0 writes
        distributed.barrier()
    state = _resume_state(out, config) if resume and out is not None else None
    if state is not None and data_dir is None:
        data_dir = state.get("data_dir")  # where the run found its data (None: before recorded)
    loaded = _build_model(config)
    model = loaded.model.to(dev)
    if config.channels_last:
        model = speed.channels_last_model(model)
    scaler = speed.grad_scaler(config.amp, dev)
    data = _load_data(config, data_dir, loaded.preprocessing)
    objective = build_objective(config.method, **_objective_params(config))
    optimizer = _optimizer(config, model)
    if masked_layers(model):
        # Pruned weights stay exactly zero: re-applied after every step (momentum/Adam state
        # would otherwise move them), see lsakit.defenses.sparsity.
        enforce_masks_after_steps(optimizer, model)
    lsp, sparsity = _companion_regularizers(config)
    steps_per_epoch = len(data.train)
    eps_scale = 1.0  # the ε scale the objective was built with
    total_iterations = max(config.epochs * steps_per_epoch, 1)
    # Stepped once per iteration: the cyclic schedule of fast AT needs iteration resolution.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda iteration: _schedule(config, iteration / total_iterations)
    )

    metrics: list[dict[str, Any]] = []
    best_score = -math.inf
    bad_epochs = 0
    start_epoch = 0
    lr_layers: list[str] | None = None
    if config.lr_layers is not None and config.lr_layers != ["mvl"]:
        lr_layers = list(config.lr_layers)

    if out is not None:
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            metrics = list(state["metrics"])
            best_score, bad_epochs = float(state["best_score"]), int(state["bad_epochs"])
            start_epoch = int(state["epoch"])
            lr_layers = list(state["lr_layers"]) if state["lr_layers"] is not None else lr_layers
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        if main and (state is None or load_run_config(out).epochs != config.epochs):
            atomic_write_text(out / CONFIG_NAME, dump_config(config))  # new, or extended

    regularizer = (
        LayerwiseRegularizer(lr_layers, gamma=config.gamma, grad_through=config.grad_through)
        if lr_layers is not None
        else None
    )
    if config.lr_layers == ["mvl"] and lr_layers is None and config.mvl_checkpoint is not None:
        regularizer = _mvl_regularizer(config, _load_for_mvl(config, dev), data, log)
        lr_layers = regularizer.layers

    best_path = out / BEST_NAME if out is not None else None
    # Recorded in the resume state, so `--resume` finds the data without --data-dir.
    recorded_data_dir = str(datasets.resolve_data_dir(data_dir).absolute())
    # Under torchrun the objective trains through DDP (its backward averages the gradients);
    # probes, attacks, validation and checkpoints use the bare module. `net` is that module.
    net = model
    model = distributed.wrap(net)
    if config.compile:
        model = speed.compiled(model)
    from lsakit._progress import Progress

    trackers = open_trackers(
        config.log_to, out, tracking, after_step=start_epoch if resume else None, enabled=main
    )
    if log is not None and trackers:
        log(trackers.describe())
    with trackers, Progress(progress) as bar:
        trackers.start(config.model_dump(), metrics)
        for epoch in range(start_epoch + 1, config.epochs + 1):
            if (
                config.lr_layers == ["mvl"]
                and regularizer is None
                and epoch == config.mvl_epoch + 1
            ):
                regularizer = _mvl_regularizer(config, net, data, log)
                lr_layers = regularizer.layers
            # Random starts and dropout differ between ranks; the data order is shared.
            torch.manual_seed(distributed.rank_seed(_epoch_seed(config, epoch)))
            data.generator.manual_seed(_epoch_seed(config, epoch))
            if data.sampler is not None:
                data.sampler.set_epoch(epoch)
            task = bar.add_task(f"epoch {epoch}/{config.epochs}", steps_per_epoch, "steps")
            started = time.perf_counter()
            sums = {"loss": 0.0, "reg": 0.0, "correct": 0.0, "seen": 0.0}
            model.train()
            # The regularizer over exact representation names (a module run twice per forward
            # is two terms): the probe then captures exactly what the term compares.
            active = regularizer.resolve(net, data.example.to(dev)) if regularizer else None
            probe_layers, split = _probe_plan(net, active, lsp, data.example.to(dev))
            probe_ctx = (
                LayerProbe(net, probe_layers, detach=False)
                if probe_layers is not None
                else contextlib.nullcontext()
            )
            with probe_ctx as probe:
                for step, (xb, yb) in enumerate(data.train, start=1):
                    x = speed.to_channels_last(xb.to(dev), config.channels_last)
                    y = yb.to(dev)
                    scale = _eps_scale(
                        config, (epoch - 1) * steps_per_epoch + step, steps_per_epoch
                    )
                    if scale != eps_scale:  # ε warm-up: the objective at this step's ε
                        eps_scale = scale
                        objective = build_objective(
                            config.method, **_objective_params(config, scale)
                        )
                    try:
                        loss, reg_value, logits = training_step(
                            model, objective, active, probe, optimizer, x, y,
                            lsp=lsp, sparsity=sparsity, split=split, amp=config.amp, scaler=scaler,
                        )  # fmt: skip
                    except _NonFiniteLoss as e:
                        kept = (
                            f"; the last good checkpoint is in {out}"
                            if out is not None and (out / CHECKPOINT_NAME).exists()
                            else ""
                        )
                        raise TrainingError(
                            f"the loss became {e.value} at epoch {epoch}, step {step}{kept}; "
                            f"lower the learning rate or check the data"
                        ) from None
                    scheduler.step()
                    n = len(y)
                    sums["loss"] += loss * n
                    sums["reg"] += reg_value * n
                    if logits is not None:
                        sums["correct"] += float((logits.argmax(dim=1) == y).sum())
                    sums["seen"] += n
                    bar.advance(task, note=f"loss {sums['loss'] / sums['seen']:.4f}  "
                                f"acc {sums['correct'] / sums['seen']:.3f}")  # fmt: skip
            bar.remove_task(task)
            if distributed.is_distributed():  # sums of every rank's samples, not mean of means
                sums = dict(zip(sums, distributed.all_reduce_sum(list(sums.values())), strict=True))
            record = _evaluate_epoch(config, net, data, epoch, sums, started, optimizer)
            record["train_eps"] = config.eps * eps_scale  # ε of the epoch's last step
            if masked_layers(net):
                record["sparsity"] = sparsity_report(net)["sparsity"]  # counted from weights
            metrics.append(record)
            score = (
                record["val_robust"] if record["val_robust"] is not None else record["val_clean"]
            )
            improved = score is not None and score > best_score
            if improved:
                best_score, bad_epochs = float(score), 0
            else:
                bad_epochs += 1
            if out is not None and main:
                extra = {"dataset": config.dataset, "epoch": epoch, "metrics": record,
                         "config": config.model_dump(), "lr_layers": lr_layers}  # fmt: skip
                if loaded.provenance is not None:  # the pretrained weights it started from
                    extra["initial_weights"] = loaded.provenance.to_json()
                save_checkpoint(out / CHECKPOINT_NAME, net, model_name=config.model,
                                model_kwargs=dict(config.model_kwargs), extra=extra)  # fmt: skip
                if improved and best_path is not None:
                    save_checkpoint(best_path, net, model_name=config.model,
                                    model_kwargs=dict(config.model_kwargs), extra=extra)  # fmt: skip
                atomic_write_text(
                    out / METRICS_NAME, "".join(json.dumps(m) + "\n" for m in metrics)
                )
                _save_state(out, {
                    "format": STATE_FORMAT, "epoch": epoch, "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "metrics": metrics, "best_score": best_score, "bad_epochs": bad_epochs,
                    "lr_layers": lr_layers,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "data_dir": recorded_data_dir,
                })  # fmt: skip
                trackers.log_metrics(record, step=epoch)  # the record metrics.jsonl got
            distributed.barrier()  # the others wait until rank 0 has written the epoch's files
            if log is not None:  # after the files: a run that printed "epoch k" can resume from k
                log(_describe(record, config))
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
            if config.early_stopping is not None and bad_epochs >= config.early_stopping:
                if log is not None:
                    log(f"early stopping: no better validation accuracy for {bad_epochs} epochs")
                break
        if out is not None:
            trackers.log_artifacts(
                out / name for name in (CONFIG_NAME, METRICS_NAME, CHECKPOINT_NAME, BEST_NAME)
            )
    return TrainResult(
        model=net,
        metrics=metrics,
        checkpoint=out / CHECKPOINT_NAME if out is not None else None,
        best_checkpoint=best_path if best_path is not None and best_path.exists() else None,
        regularized_layers=lr_layers,
    )


def _schedule(config: TrainConfig, t: float) -> float:
    """The learning-rate multiplier at training progress ``t`` ∈ [0, 1]."""
    t = min(max(t, 0.0), 1.0)
    if config.schedule == "multistep":
        return float(config.lr_decay ** sum(t >= m for m in config.milestones))
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if config.schedule == "cyclic":  # Wong et al. 2020: linearly up to the peak at half, then to 0
        return 2 * t if t < 0.5 else 2 * (1 - t)
    return 1.0


def _evaluate_epoch(
    config: TrainConfig,
    model: nn.Module,
    data: _Data,
    epoch: int,
    sums: dict[str, float],
    started: float,
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any]:
    val_clean = accuracy(model, data.val) if data.val is not None else None
    val_robust = None
    if data.val is not None and config.eps > 0:
        from lsakit.evaluate import robust_accuracy
        from lsakit.perturb import PGD

        attack = PGD(model, eps=config.eps, alpha=config.eps / 4, steps=config.val_steps,
                     seed=distributed.rank_seed(_epoch_seed(config, epoch)))  # fmt: skip
        with speed.attack_precision(config.amp):
            val_robust = robust_accuracy(model, data.val, attack)
    seen = max(sums["seen"], 1.0)
    return {
        "epoch": epoch,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": sums["loss"] / seen,
        "train_reg": sums["reg"] / seen,
        "train_accuracy": sums["correct"] / seen,
        "val_clean": val_clean,
        "val_robust": val_robust,
        "test_accuracy": accuracy(model, data.test),
        "seconds": time.perf_counter() - started,
    }


def _describe(record: dict[str, Any], config: TrainConfig) -> str:
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


def _load_for_mvl(config: TrainConfig, device: torch.device) -> nn.Module:
    from lsakit.checkpoint import load_checkpoint

    assert config.mvl_checkpoint is not None
    model, meta = load_checkpoint(config.mvl_checkpoint, map_location=device, model=config.model)
    if meta.model != config.model:
        raise ConfigError(
            f"mvl_checkpoint {config.mvl_checkpoint} holds a {meta.model}, not {config.model}; "
            f"its layers would not match"
        )
    return model


def _mvl_regularizer(
    config: TrainConfig, model: nn.Module, data: _Data, log: Callable[[str], None] | None
) -> Any:
    """Algorithm 2: LSA of ``model`` under PGD at the training ε, regularizing the MVL list."""
    from lsakit.perturb import PGD
    from lsakit.train.regularizers import LayerwiseRegularizer

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


#: The files a training run writes into its directory; the resume state first, so an overwrite
#: that dies part-way leaves no resumable half of the old run.
RUN_FILES = (STATE_NAME, CONFIG_NAME, CHECKPOINT_NAME, BEST_NAME, METRICS_NAME)


def check_run_dir(out: str | Path, *, overwrite: bool) -> None:
    """Refuse ``out`` for a new run when it holds one and ``overwrite`` is not given (writes
    nothing: the CLI asks before it prints anything)."""
    out = Path(out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        raise ConfigError(
            f"{out} already holds a training run ({', '.join(found)}); continue it with "
            f"--resume {out}, start it over with --overwrite, or choose another --out"
        )


def _claim_run_dir(out: Path, *, overwrite: bool) -> None:
    """Make ``out`` ready for a new run: refuse one that holds a run, or delete that run's files."""
    check_run_dir(out, overwrite=overwrite)
    if overwrite and distributed.is_main_process():
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)


def _save_state(out: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(out / STATE_NAME, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def _load_state(out: Path, *, mmap: bool = False) -> dict[str, Any]:
    path = out / STATE_NAME
    if not path.exists():
        raise CheckpointError(
            f"cannot resume: {path} not found (no completed epoch in {out}); start the run anew"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # any unpickling/format error: the file is not a usable state
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"cannot resume from {path}: {first}; start the run anew") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not an lsakit training state; start the run anew")
    return state


def _resume_state(out: Path, config: TrainConfig) -> dict[str, Any]:
    """The resume state of the run in ``out``, once ``config`` is known to continue that run:
    the run's own config, ``epochs`` aside (a longer run extends it)."""
    state = _load_state(out)
    recorded = load_run_config(out).model_dump()
    differ = [k for k, v in config.model_dump().items() if k != "epochs" and recorded.get(k) != v]
    if differ:
        raise ConfigError(
            f"the config differs from the one {out} was trained with ({', '.join(differ)}); "
            f"resume with the run's own config (load_run_config), or start a new run"
        )
    if config.epochs < int(state["epoch"]):
        raise ConfigError(
            f"{out} has already trained {state['epoch']} epochs; epochs {config.epochs} would "
            "shorten it"
        )
    return state


@dataclass(frozen=True)
class ResumePoint:
    """Where a run directory stands: epochs done of its config's, and whether it is finished."""

    run_dir: Path
    epoch: int
    epochs: int
    #: early stopping ended the run before ``epochs``
    stopped_early: bool

    @property
    def complete(self) -> bool:
        return self.stopped_early or self.epoch >= self.epochs


def resume_point(run_dir: str | Path, epochs: int | None = None) -> ResumePoint:
    """How far the run in ``run_dir`` got (its resume state), against its own epochs or
    ``epochs`` (a resume that extends it); CheckpointError / ConfigError lines as ``--resume``."""
    out = Path(run_dir)
    state = _load_state(out, mmap=True)
    config = load_run_config(out)
    stopped = config.early_stopping is not None and int(state["bad_epochs"]) >= (
        config.early_stopping
    )
    return ResumePoint(out, int(state["epoch"]), epochs or config.epochs, stopped)


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The config a run directory was started with (for ``--resume``): its complete
    ``config.yaml``, read as it is (no preset)."""
    path = Path(run_dir) / CONFIG_NAME
    return validate_config(read_config_file(path), source=str(path))


def iter_metrics(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The records of ``metrics.jsonl`` in a run directory."""
    path = Path(run_dir) / METRICS_NAME
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)
