"""RACL's search: first-order DARTS alternation with a Lipschitz chance constraint.

Dong et al., "Adversarially Robust Neural Architectures", arXiv:2009.00902 (TPAMI 2025). Each
step (as DARTS's first-order variant, Liu et al., ICLR 2019, Alg. 1 with ξ = 0):

1. architecture step on a validation batch, Adam on (μ, ρ) of every α and β:

       L = CE(val) + u·g + (ρ_pen/2)·max(0, g)²,    g = μ_F + σ_F·Φ⁻¹(η) − ln λ̄_F

   (:func:`~lsakit.nas.lipschitz.constraint`; the u and ρ_pen terms only with ``lipschitz=True``);
2. weight step on a training batch, SGD with momentum on everything else, CE loss.

The dual variable follows the augmented-Lagrangian update u ← max(0, u + ρ_pen·g) *(inferred)*.
``lipschitz=False`` drops the constraint terms and the dual update and changes nothing else:
the same batches, the same random samples, the same λ_o, μ_F, σ_F, g computed and reported.

Choices where the paper is silent *(inferred/chosen, all in* :class:`SearchConfig` *)*:

* the dual update runs once per epoch by default (``dual_update="epoch"``), with g at the
  epoch's end (current λ_o, deterministic μ_F, σ_F); ``"step"`` uses each step's g;
* λ̄_F = exp(μ_F⁽⁰⁾)·``lam_bar_factor`` with μ_F⁽⁰⁾ at the first architecture step (after
  ``arch_warmup_epochs``), or the absolute ``lam_bar``; factor 1 asks the 90% quantile of λ_F not
  to exceed the initial median;
* one weight-only warm-up epoch by default (``arch_warmup_epochs`` None: 1, or 0 for a one-epoch
  search; PC-DARTS uses 15 of 50):
  the BN factors of λ_o use the running variances, which start at 1; while they settle on the
  data, μ_F moves for reasons no architecture choice controls (measured on 10×10 random inputs,
  8 channels: +1 nat per step over the first steps), so μ_F⁽⁰⁾ is taken after the warm-up;
* the paper's gradient-norm term (form not recoverable) is left out;
* λ_o are recomputed at every architecture step from the current weights, power iteration
  warm-started with ``power_iters`` steps;
* DARTS's settings otherwise: SGD lr 0.025 cosine-annealed to 0.001, momentum 0.9, weight decay
  3e-4, gradient clipping 5; Adam betas (0.5, 0.999); the architecture lr is 3e-3 (DARTS: 3e-4)
  because a faithful small run has a few epochs; no weight decay on μ, ρ (it would pull every
  confidence to e⁰ = 1, not towards "off").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from lsakit._checks import check_inputs, check_labels
from lsakit._progress import Progress
from lsakit._torch import eval_mode, seed_everything
from lsakit.config.defaults import (
    SEARCH_CELLS,
    SEARCH_CHANNELS,
    SEARCH_EPOCHS,
    SEARCH_LAM_BAR_FACTOR,
    SEARCH_NODES,
)
from lsakit.errors import ConfigError, InputError
from lsakit.nas.genotype import DEFAULT_Z, RULES, Genotype, Rule, discretize
from lsakit.nas.lipschitz import constraint
from lsakit.nas.network import check_reductions
from lsakit.nas.ops import DEFAULT_POOL_BOUND, POOL_BOUNDS, SMALL_SEARCH_OPS, PoolBound
from lsakit.nas.supernet import DEFAULT_SIGMA_INIT, Supernet
from lsakit.validate import (
    choice,
    nonnegative_int,
    number,
    open_unit,
    positive_int,
)

DualUpdate = Literal["epoch", "step"]
#: Weight-only epochs before the first architecture step, by default (PC-DARTS: 15 of 50).
ARCH_WARMUP_EPOCHS = 1
DUAL_UPDATES: tuple[str, ...] = get_args(DualUpdate)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Every setting of a RACL search and its default, in one place.

    Supernet: ``cells``, ``nodes``, ``channels``, ``ops``, ``reductions``, ``stem_multiplier``,
    ``num_classes``, ``sigma_init`` (see :class:`~lsakit.nas.supernet.Supernet`).
    Schedule: ``epochs``, ``batch_size``, ``seed``, ``max_steps`` (per epoch, None = all
    batches), ``arch_warmup_epochs`` (weight-only epochs first, as PC-DARTS; None, the default:
    :data:`ARCH_WARMUP_EPOCHS`, fewer when the search has no more epochs, resolved on creation).
    Weights (SGD): ``weight_lr`` → ``weight_lr_min`` (cosine), ``weight_momentum``,
    ``weight_decay``, ``grad_clip``. Architecture (Adam): ``arch_lr``, ``arch_betas``,
    ``arch_weight_decay``.
    Constraint: ``lipschitz`` (on/off, the only difference between the two arms), ``eta`` (η),
    ``penalty`` (ρ of the augmented Lagrangian, not the ρ of σ = softplus(ρ)), ``lam_bar_factor``
    or an absolute ``lam_bar``, ``dual_update``, ``power_iters``, ``pool_bound``.
    Discretization: ``discretize_rule``, ``discretize_z``.
    """

    cells: int = SEARCH_CELLS
    nodes: int = SEARCH_NODES
    channels: int = SEARCH_CHANNELS
    ops: tuple[str, ...] = SMALL_SEARCH_OPS
    reductions: tuple[int, ...] = ()
    stem_multiplier: int = 3
    num_classes: int = 10
    sigma_init: float = DEFAULT_SIGMA_INIT

    epochs: int = SEARCH_EPOCHS
    batch_size: int = 64
    seed: int = 0
    max_steps: int | None = None
    arch_warmup_epochs: int | None = None

    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    weight_momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-3
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 0.0

    lipschitz: bool = True
    eta: float = 0.9
    penalty: float = 1.0
    lam_bar_factor: float = SEARCH_LAM_BAR_FACTOR
    lam_bar: float | None = None
    dual_update: DualUpdate = "epoch"
    power_iters: int = 3
    pool_bound: PoolBound = DEFAULT_POOL_BOUND

    discretize_rule: Rule = "median"
    discretize_z: float = DEFAULT_Z

    def __post_init__(self) -> None:
        for name in ("cells", "nodes", "channels", "stem_multiplier", "num_classes"):
            positive_int(getattr(self, name), name)
        for name in ("epochs", "batch_size", "power_iters"):
            positive_int(getattr(self, name), name)
        nonnegative_int(self.seed, "seed")
        warmup = self.arch_warmup_epochs
        if warmup is None:  # the default, fewer for a short search: the architecture gets ≥ 1 epoch
            warmup = min(ARCH_WARMUP_EPOCHS, self.epochs - 1)
            object.__setattr__(self, "arch_warmup_epochs", warmup)
        nonnegative_int(warmup, "arch_warmup_epochs")
        if self.max_steps is not None:
            positive_int(self.max_steps, "max_steps")
        if warmup >= self.epochs:
            raise ConfigError(
                f"arch_warmup_epochs ({warmup}) must be < epochs "
                f"({self.epochs}): the architecture would never be trained; lower "
                f"arch_warmup_epochs or give more epochs"
            )
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "reductions", check_reductions(self.reductions, self.cells))
        number(self.sigma_init, "sigma_init", low=0.0, strict=True)
        for name in ("weight_lr", "arch_lr"):
            number(getattr(self, name), name, low=0.0, strict=True)
        for name in (
            "weight_lr_min",
            "weight_momentum",
            "weight_decay",
            "grad_clip",
            "arch_weight_decay",
            "penalty",
        ):
            number(getattr(self, name), name, low=0.0)
        betas = tuple(self.arch_betas)
        if len(betas) != 2 or not all(0.0 <= number(b, "arch_betas") < 1.0 for b in betas):
            raise ConfigError(f"arch_betas must be two numbers in [0, 1), got {self.arch_betas!r}")
        object.__setattr__(self, "arch_betas", (float(betas[0]), float(betas[1])))
        open_unit(self.eta, "eta")
        number(self.lam_bar_factor, "lam_bar_factor", low=0.0, strict=True)
        if self.lam_bar is not None:
            number(self.lam_bar, "lam_bar", low=0.0, strict=True)
        choice(self.dual_update, "dual_update", DUAL_UPDATES)
        choice(self.pool_bound, "pool_bound", POOL_BOUNDS)
        choice(self.discretize_rule, "discretize_rule", RULES)
        number(self.discretize_z, "discretize_z")
        if not isinstance(self.lipschitz, bool):
            raise ConfigError(f"lipschitz must be true or false, got {self.lipschitz!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings.

        Returns:
            ``{field: value}`` for every setting (as resolved on creation), tuples as lists.
        """
        data = asdict(self)
        data["ops"] = list(self.ops)
        data["reductions"] = list(self.reductions)
        data["arch_betas"] = list(self.arch_betas)
        return data


@dataclass(frozen=True)
class SearchRecord:
    """Progress of one step (``kind="step"``) or one epoch (``kind="epoch"``, means over steps).

    ``epoch`` counts from 1 (as ``lsakit train``); ``step`` counts the search's steps from 1.

    ``val_loss`` is the architecture step's CE (NaN during weight-only warm-up epochs);
    ``arch_loss`` the full objective; μ_F, σ_F, g as the step's architecture update used them
    (before it), u after the step (for an epoch record: μ_F, σ_F, g at the epoch's end and u
    after the dual update; losses are the epoch's means). ``val_accuracy`` (epoch records only) uses the
    median architecture in eval mode on the whole validation set.
    """

    kind: Literal["step", "epoch"]
    epoch: int
    step: int
    train_loss: float
    val_loss: float
    arch_loss: float
    mu_f: float
    sigma_f: float
    g: float
    u: float
    log_lam_bar: float
    weight_lr: float
    val_accuracy: float | None = None

    def describe(self) -> str:
        """One line, as ``lsakit search`` prints it; g and u only once they exist (the
        constraint starts with the first architecture step, after the weight-only warm-up).

        Returns:
            ``"epoch E: train loss …, μ_F …, σ_F …, g …, u …, val acc …"`` (``step S`` for a
            step record).
        """
        warm_up = math.isnan(self.g)
        head = f"epoch {self.epoch}" if self.kind == "epoch" else f"step {self.step}"
        parts = [
            f"{head}{' (weight-only warm-up)' if warm_up else ''}: train loss "
            f"{self.train_loss:.4f}",
            f"μ_F {self.mu_f:.3f}",
            f"σ_F {self.sigma_f:.3f}",
        ]
        if not warm_up:
            parts += [f"g {self.g:+.3f}", f"u {self.u:.3f}"]
        if self.val_accuracy is not None:
            parts.append(f"val acc {self.val_accuracy:.3f}")
        return ", ".join(parts)


@dataclass
class SearchResult:
    """The searched supernet, its genotype, the final bound state and the history."""

    config: SearchConfig
    genotype: Genotype
    supernet: Supernet
    mu_f: float
    sigma_f: float
    g: float
    u: float
    log_lam_bar: float
    history: list[SearchRecord] = field(default_factory=list)

    def architecture(self) -> dict[str, dict[str, list[Any]]]:
        """μ and σ of every α (E, O) and β (E,) per cell type, as nested lists.

        Returns:
            ``{kind: {"alpha_mu", "alpha_sigma", "beta_mu", "beta_sigma"}}`` for each of the
            supernet's cell types, each value a nested list of floats.
        """
        out: dict[str, dict[str, list[Any]]] = {}
        for kind in self.supernet.cell_types:
            alpha, beta = self.supernet.alpha(kind), self.supernet.beta(kind)
            out[kind] = {
                "alpha_mu": alpha.mu.detach().cpu().tolist(),
                "alpha_sigma": alpha.sigma.detach().cpu().tolist(),
                "beta_mu": beta.mu.detach().cpu().tolist(),
                "beta_sigma": beta.sigma.detach().cpu().tolist(),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: config, genotype, final μ_F, σ_F, g, u, ln λ̄_F, architecture, history.

        Returns:
            A dict with keys ``config``, ``genotype``, ``ops``, ``mu_f``, ``sigma_f``, ``g``,
            ``u``, ``log_lam_bar``, ``architecture`` and ``history`` (one dict per record); NaN
            (not defined yet) is written as None.
        """
        return {
            "config": self.config.to_dict(),
            "genotype": self.genotype.to_dict(),
            "ops": list(self.supernet.op_names),
            **_finite_or_none(
                {
                    "mu_f": self.mu_f,
                    "sigma_f": self.sigma_f,
                    "g": self.g,
                    "u": self.u,
                    "log_lam_bar": self.log_lam_bar,
                }
            ),
            "architecture": self.architecture(),
            "history": [_finite_or_none(asdict(r)) for r in self.history],
        }


ProgressFn = Callable[[SearchRecord], None]


def _finite_or_none(values: dict[str, Any]) -> dict[str, Any]:
    """NaN (a quantity not defined yet, e.g. g during warm-up) → None: strict JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


def _check_data(
    x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor, num_classes: int
) -> tuple[int, int, int]:
    for name, x, y in (("x_train", x_train, y_train), ("x_val", x_val, y_val)):
        check_inputs(x, name)
        if x.dim() != 4:
            raise InputError(
                f"{name} has shape {tuple(x.shape)}; the search needs images (N, C, H, W)"
            )
        check_labels(y, x.shape[0], "y_train" if name == "x_train" else "y_val", num_classes)
    if x_val.shape[1:] != x_train.shape[1:]:
        raise InputError(
            f"x_val samples have shape {tuple(x_val.shape[1:])}, x_train {tuple(x_train.shape[1:])}"
        )
    c, h, w = (int(s) for s in x_train.shape[1:])
    return c, h, w


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    order = torch.randperm(n, generator=generator)
    return list(torch.split(order, batch_size))


def search(
    config: SearchConfig,
    x_train: Tensor,
    y_train: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    *,
    progress: ProgressFn | None = None,
    show_progress: bool = False,
    device: torch.device | str | None = None,
) -> SearchResult:
    """Run a RACL search (module docstring) and discretize the result.

    Args:
        config: the settings.
        x_train, y_train: the weights' data, images (N, C, H, W) in [0, 1] and labels (N,).
        x_val, y_val: the architecture's data (DARTS splits the training set in halves).
        progress: called with a :class:`SearchRecord` after every step and every epoch.
        show_progress: a bar over each epoch's steps (plain lines where stdout is not a
            terminal; :mod:`lsakit._progress`).
        device: where the supernet runs (default: ``x_train``'s device); batches are moved there.

    Returns:
        A :class:`SearchResult` with the genotype of ``config.discretize_rule``.
    """
    if not isinstance(config, SearchConfig):
        raise InputError(f"config must be a SearchConfig, got {type(config).__name__}")
    input_shape = _check_data(x_train, y_train, x_val, y_val, config.num_classes)
    target = torch.device(device) if device is not None else x_train.device
    seed_everything(config.seed)
    net = Supernet(
        cells=config.cells,
        nodes=config.nodes,
        channels=config.channels,
        in_channels=input_shape[0],
        num_classes=config.num_classes,
        ops=config.ops,
        reductions=config.reductions,
        stem_multiplier=config.stem_multiplier,
        sigma_init=config.sigma_init,
    ).to(target)
    weight_opt = torch.optim.SGD(
        net.weights(),
        lr=config.weight_lr,
        momentum=config.weight_momentum,
        weight_decay=config.weight_decay,
    )
    arch_opt = torch.optim.Adam(
        net.arch_parameters(),
        lr=config.arch_lr,
        betas=config.arch_betas,
        weight_decay=config.arch_weight_decay,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        weight_opt, T_max=config.epochs, eta_min=config.weight_lr_min
    )
    order = torch.Generator().manual_seed(config.seed)
    lipschitz_kw: dict[str, Any] = {"iters": config.power_iters, "pool_bound": config.pool_bound}

    def bound() -> tuple[Tensor, Tensor]:
        return net.lipschitz_lognormal(net.lipschitz_constants(input_shape, **lipschitz_kw))

    u = 0.0
    log_lam_bar: float | None = None
    history: list[SearchRecord] = []
    step = 0
    mu_f = sigma_f = g = torch.zeros(())
    g_end = math.nan  # the constraint at the last epoch end; NaN until λ̄ exists

    def emit(record: SearchRecord) -> None:
        history.append(record)
        if progress is not None:
            progress(record)

    warmup = config.arch_warmup_epochs or 0  # an int once the config exists
    with Progress(show_progress) as shown:
        for epoch in range(1, config.epochs + 1):
            arch_active = epoch > warmup
            train_batches = _batches(x_train.shape[0], config.batch_size, order)
            val_batches = _batches(x_val.shape[0], config.batch_size, order)
            if config.max_steps is not None:
                train_batches = train_batches[: config.max_steps]
            lr = float(weight_opt.param_groups[0]["lr"])
            step_records: list[SearchRecord] = []
            task = shown.add_task(f"epoch {epoch}/{config.epochs}", len(train_batches), "steps")
            for b, idx in enumerate(train_batches):
                val_loss = arch_loss = math.nan
                # -- architecture step (validation batch) --------------------------------------
                net.train()
                with torch.set_grad_enabled(arch_active):
                    mu_f, sigma_f = bound()
                if log_lam_bar is None and arch_active:
                    log_lam_bar = _initial_log_lam_bar(config, float(mu_f.detach()))
                if arch_active:
                    assert log_lam_bar is not None
                    vidx = val_batches[b % len(val_batches)]
                    g = constraint(mu_f, sigma_f, math.exp(log_lam_bar), config.eta)
                    ce_val, loss = _architecture_step(
                        net, arch_opt, x_val[vidx].to(target), y_val[vidx].to(target), g, u, config
                    )
                    if config.lipschitz and config.dual_update == "step":
                        u = max(0.0, u + config.penalty * float(g.detach()))
                    val_loss, arch_loss = float(ce_val), float(loss)
                # -- weight step (training batch) ---------------------------------------------
                ce = _weight_step(
                    net, weight_opt, x_train[idx].to(target), y_train[idx].to(target), config
                )
                step += 1
                record = SearchRecord(
                    kind="step",
                    epoch=epoch,
                    step=step,
                    train_loss=float(ce),
                    val_loss=val_loss,
                    arch_loss=arch_loss,
                    mu_f=float(mu_f.detach()),
                    sigma_f=float(sigma_f.detach()),
                    g=float(g.detach()) if arch_active else math.nan,
                    u=u,
                    log_lam_bar=math.nan if log_lam_bar is None else log_lam_bar,
                    weight_lr=lr,
                )
                step_records.append(record)
                emit(record)
                shown.advance(task, note=f"train loss {record.train_loss:.4f}")
            shown.remove_task(task)
            schedule.step()
            # -- epoch end: the bound with the current weights, the dual update ----------------
            with torch.no_grad():
                mu_f, sigma_f = bound()
                if log_lam_bar is not None:
                    g = constraint(mu_f, sigma_f, math.exp(log_lam_bar), config.eta)
                    g_end = float(g)
            if arch_active and config.lipschitz and config.dual_update == "epoch":
                u = max(0.0, u + config.penalty * g_end)
            emit(
                SearchRecord(
                    kind="epoch",
                    epoch=epoch,
                    step=step,
                    train_loss=_mean(r.train_loss for r in step_records),
                    val_loss=_mean(r.val_loss for r in step_records),
                    arch_loss=_mean(r.arch_loss for r in step_records),
                    mu_f=float(mu_f),
                    sigma_f=float(sigma_f),
                    g=g_end,
                    u=u,
                    log_lam_bar=math.nan if log_lam_bar is None else log_lam_bar,
                    weight_lr=lr,
                    val_accuracy=_accuracy(net, x_val, y_val, config.batch_size, target),
                )
            )
    genotype = discretize(net, config.discretize_rule, config.discretize_z)
    return SearchResult(
        config=config,
        genotype=genotype,
        supernet=net,
        mu_f=float(mu_f),
        sigma_f=float(sigma_f),
        g=g_end,
        u=u,
        log_lam_bar=math.nan if log_lam_bar is None else log_lam_bar,
        history=history,
    )


def _architecture_step(
    net: Supernet,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    g: Tensor,
    u: float,
    config: SearchConfig,
) -> tuple[Tensor, Tensor]:
    """One Adam step on (μ, ρ): CE(val) [+ u·g + (ρ_pen/2)·max(0, g)²]; returns (CE, loss)."""
    ce = F.cross_entropy(net(x), y)
    loss = ce
    if config.lipschitz:
        loss = loss + u * g + config.penalty / 2 * F.relu(g).square()
    arch = net.arch_parameters()
    for p, grad in zip(arch, torch.autograd.grad(loss, arch), strict=True):
        p.grad = grad
    optimizer.step()
    return ce.detach(), loss.detach()


def _weight_step(
    net: Supernet, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, config: SearchConfig
) -> Tensor:
    """One SGD step on the weights with the training CE (clipped gradients); returns the CE."""
    ce = F.cross_entropy(net(x), y)
    weights = net.weights()
    # Gradients for the weights only: the α, β samples of this forward get no update from it.
    grads = torch.autograd.grad(ce, weights, allow_unused=True)
    for p, grad in zip(weights, grads, strict=True):
        p.grad = grad
    torch.nn.utils.clip_grad_norm_(weights, config.grad_clip)
    optimizer.step()
    return ce.detach()


def _initial_log_lam_bar(config: SearchConfig, mu_f0: float) -> float:
    """ln λ̄_F: ln of the absolute ``lam_bar``, else μ_F⁽⁰⁾ + ln ``lam_bar_factor``."""
    if config.lam_bar is not None:
        return math.log(config.lam_bar)
    return mu_f0 + math.log(config.lam_bar_factor)


def _mean(values: Sequence[float] | Any) -> float:
    items = [v for v in values if not math.isnan(v)]
    return sum(items) / len(items) if items else math.nan


def _accuracy(net: Supernet, x: Tensor, y: Tensor, batch_size: int, device: torch.device) -> float:
    correct = 0
    with torch.no_grad(), eval_mode(net):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            correct += int((net(xb).argmax(1) == yb).sum())
    return correct / x.shape[0]


__all__ = [
    "DUAL_UPDATES",
    "DualUpdate",
    "ProgressFn",
    "SearchConfig",
    "SearchRecord",
    "SearchResult",
    "search",
]
