"""LSP: local structure preserving regularization (Wei, Zhou & Wu 2023, arXiv:2303.16861).

LSP keeps the local structure of the input space in the learned embedding space, so an adversarial
point near a clean sample stays near it in the embedding. The paper's equations were not available
(spec ``companion-methods.md`` §B); everything below is a reconstruction *(inferred)* in two
configurable forms, with the embedding z = h(x) taken at the penultimate layer by default:

* ``"kl"`` (t-SNE-like): input affinities P and embedding affinities Q of the same form,

      p_{j|i} = exp(−‖x_i − x_j‖² / 2s_i²) / Σ_{l≠i} exp(−‖x_i − x_l‖² / 2s_i²),   p_{i|i} = 0,

  and L = mean_i KL(P_i ‖ Q_i) (:func:`lsp_kl_loss`);
* ``"laplacian"``: L = (1/N) Σ_i Σ_{j∈kNN_x(i)} w_ij ‖z_i − z_j‖² / mean_i ‖z_i − z̄‖²,
  w_ij = exp(−‖x_i − x_j‖² / t) (:func:`lsp_laplacian_loss`).

The training loss is CE(f(x), y) + λ·L without adversarial training and CE(f(x̂), y) + λ·L with it,
L computed on the clean batch or on clean ∪ adversarial (:class:`LocalStructureRegularizer`). The
mechanism check is the k-NN overlap between input and embedding space (:func:`knn_overlap`,
:func:`embedding_knn_overlap`), which LSP should raise.

Choices made here (the paper is silent on all of them):

* Points are flattened per sample; squared distances use the Gram form on batch-centred points
  (exact in exact arithmetic; centring limits cancellation when features share a large offset).
* Median heuristic: s_i² = the median (the mean of the two middle values for an even count) of
  row i's candidate squared distances — all j ≠ i, or the k nearest when ``k`` is set.
* Perplexity: t-SNE's calibration (van der Maaten & Hinton 2008): s_i such that the entropy of P_i
  (natural log) is log(perplexity), found by :data:`PERPLEXITY_SEARCH_STEPS` vectorised bisection
  steps on log β_i, β_i = 1/2s_i², over e^±30 times the row's mean candidate distance. A
  perplexity ≥ the number of candidates cannot be reached: the row is then uniform (β_i = 0).
* Bandwidth floor: s_i² ≥ :data:`BANDWIDTH_FLOOR` × the batch's mean non-self squared distance
  (and ≥ 1e-12), so a row whose median neighbour is a duplicate keeps a finite, scale-relative
  bandwidth instead of an infinite one (huge gradients).
* Bandwidths are constants in the backward pass (computed on detached points, as t-SNE calibrates
  them once): a gradient through a median or a bisection is ill-defined or noise.
* ``k`` restricts P only (its other entries are 0 before normalising); Q always spans every j ≠ i,
  as in Barnes–Hut t-SNE, so every pair gets a gradient: x-neighbours are pulled together and
  non-neighbours pushed apart through the normalisation. Consequently L = 0 at z = x only for
  ``k=None``; with ``k`` the minimum has each x-neighbourhood tighter in z than the rest.
* log Q is clamped at log(1e-12) (:data:`LOG_Q_FLOOR`): the loss stays finite for degenerate rows.
* Laplacian: the sum over i is divided by N (the spec writes Σ_i): λ then does not depend on the
  batch size and shares a scale with the KL form, which is a mean over i. The normaliser is the
  centred second moment mean_i ‖z_i − z̄‖² by default: with the spec's raw mean ‖z‖² the network
  can shrink the loss by adding a shared offset to z (the failure the layer-wise regularizer showed
  at large γ, see :mod:`lsakit.train.regularizers`); ``centered=False`` gives the spec's form.
  t defaults to the median of the N·k input kNN squared distances.
* Ties among equidistant neighbours are broken by :func:`torch.topk`.
* "Penultimate" is the input of the model's last ``nn.Linear`` (:func:`penultimate_layer`).
* :data:`DEFAULT_WEIGHT` λ = 0.1, the low end of the spec's grid {0.1, 0.5, 1, 2}: on MNIST
  (model B, 3000 images, 1 epoch) λ = 1 with the median bandwidth and no k-NN restriction
  collapsed training to a constant classifier — on 784-dim inputs the median bandwidth makes P
  nearly uniform, and matching it spreads the embedding of every class — while λ = 0.1 with
  k = 10 trained like λ = 0. Not tuned further.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from lsakit._checks import check_inputs
from lsakit._torch import eval_mode, model_device
from lsakit.errors import ConfigError, InputError
from lsakit.probe import LayerProbe

Bandwidth = Literal["median", "perplexity"]
LSPVariant = Literal["kl", "laplacian"]
LSPOn = Literal["clean", "clean+adv"]

#: Default way to set s_i: the median heuristic (no search, cheapest).
DEFAULT_BANDWIDTH: Bandwidth = "median"
#: Default perplexity for ``bandwidth="perplexity"`` (t-SNE's customary value).
DEFAULT_PERPLEXITY = 30.0
#: Default λ: the low end of the spec's grid {0.1, 0.5, 1, 2} (see the module docstring).
DEFAULT_WEIGHT = 0.1
#: Bisection steps of the perplexity calibration: the bracket [−30, 30] on log β shrinks to 5e-14.
PERPLEXITY_SEARCH_STEPS = 50
#: s_i² ≥ this fraction of the batch's mean non-self squared distance.
BANDWIDTH_FLOOR = 1e-3
#: log q_{j|i} is clamped from below at this value (q ≥ 1e-12), so KL stays finite.
LOG_Q_FLOOR = math.log(1e-12)

_TINY = 1e-12
_LOG_BETA_RANGE = 30.0
_BANDWIDTHS: tuple[str, ...] = get_args(Bandwidth)
_VARIANTS: tuple[str, ...] = get_args(LSPVariant)
_ONS: tuple[str, ...] = get_args(LSPOn)
_LABEL = re.compile(r"^L(\d+)$")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _check_k(k: object, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{name} must be an integer ≥ 1 (neighbours per point), got {k!r}")
    return k


def _check_optional_k(k: object) -> int | None:
    return None if k is None else _check_k(k)


def _check_bandwidth(bandwidth: object) -> Bandwidth:
    if bandwidth not in _BANDWIDTHS:
        raise ConfigError(f"bandwidth must be one of {', '.join(_BANDWIDTHS)}, got {bandwidth!r}")
    return bandwidth  # type: ignore[return-value]


def _check_number(value: object, name: str, *, minimum: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    bad = v <= minimum if strict else v < minimum
    if not math.isfinite(v) or bad:
        relation = ">" if strict else "≥"
        raise ConfigError(f"{name} must be a finite number {relation} {minimum:g}, got {value!r}")
    return v


def _check_perplexity(perplexity: object) -> float:
    return _check_number(perplexity, "perplexity", minimum=1.0, strict=False)


def _points(t: object, name: str, *, finite: bool = False) -> Tensor:
    """A batch (N, …) of N ≥ 2 floating points (the loss functions), flattened to (N, D)."""
    return _batch(t, name, min_points=2, finite_fix=_DATA_FIX if finite else None).flatten(1)


def _batch(t: object, name: str, *, min_points: int, finite_fix: str | None) -> Tensor:
    """A floating-point batch (N, …) with N ≥ ``min_points``, finite when ``finite_fix`` names
    the fix for NaN/inf (the regularizer's call allows N = 1: a last partial batch contributes 0;
    the loss functions need N ≥ 2). Any value range is accepted (unlike check_inputs' [0, 1]): LSP also runs
    on raw features such as moons coordinates."""
    if not isinstance(t, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise InputError(
            f"{name} has dtype {t.dtype}; convert it to floating point ({name}.float())"
        )
    if t.dim() < 2:
        raise InputError(
            f"{name} has shape {tuple(t.shape)}; expected a batch (N, ...) with one point per row"
        )
    if t.shape[0] < min_points:
        raise InputError(
            f"{name} is an empty batch (shape {tuple(t.shape)}); pass at least one sample"
            if min_points == 1
            else f"{name} has {t.shape[0]} point(s); local structure needs a batch of at least "
            f"{min_points}"
        )
    # One reduction per tensor, on the detached values: the check is no part of the loss.
    if finite_fix is not None and not bool(torch.isfinite(t.detach()).all()):
        raise InputError(f"{name} contains NaN or inf values; {finite_fix}")
    return t


def _check_same_batch(x: Tensor, z: Tensor, x_name: str = "x", z_name: str = "z") -> None:
    if x.shape[0] != z.shape[0]:
        raise InputError(
            f"{x_name} has {x.shape[0]} points but {z_name} has {z.shape[0]}; "
            f"{z_name} must be the embedding of {x_name}, row for row"
        )


_DATA_FIX = "clean the data first"
_ATTACK_FIX = "check the attack that produced it"
_EMBEDDING_FIX = "the embedding diverged: check the model's inputs, the learning rate and λ"


def _check_k_fits(k: int | None, n: int) -> None:
    if k is not None and k > n - 1:
        raise InputError(
            f"k = {k} neighbours need at least {k + 1} points, got a batch of {n}; "
            f"lower k or use larger batches"
        )


# --------------------------------------------------------------------------------------------
# Distances, neighbours, bandwidths
# --------------------------------------------------------------------------------------------
def squared_distances(points: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances (N, D) → (N, N), diagonal exactly 0, differentiable.

    Gram form on batch-centred points (distances are translation invariant), clamped at 0 so
    rounding never makes a distance negative; no square root, so duplicates give no NaN gradient.
    """
    centred = points - points.mean(dim=0, keepdim=True)
    sq = centred.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * centred @ centred.T).clamp_min(0.0)
    eye = torch.eye(d2.shape[0], dtype=torch.bool, device=d2.device)
    return d2.masked_fill(eye, 0.0)


def _knn_from_distances(d2: Tensor, k: int) -> Tensor:
    """Indices (N, k) of each row's k nearest other points (self excluded), nearest first."""
    eye = torch.eye(d2.shape[0], dtype=torch.bool, device=d2.device)
    return d2.detach().masked_fill(eye, math.inf).topk(k, dim=1, largest=False).indices


def knn_indices(points: Tensor, k: int) -> Tensor:
    """Indices (N, k) of the k nearest neighbours of each point (self excluded), nearest first.

    ``points`` (N, …) is flattened per sample. Ties are broken by :func:`torch.topk`.
    """
    flat = _points(points, "points")
    k = _check_k(k)
    _check_k_fits(k, flat.shape[0])
    return _knn_from_distances(squared_distances(flat.detach()), k)


def _support(d2: Tensor, k: int | None) -> Tensor:
    """Boolean (N, N): the candidate neighbours j of each row i — all j ≠ i, or the k nearest."""
    n = d2.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=d2.device)
    if k is None:
        return ~eye
    support = torch.zeros_like(eye)
    return support.scatter(1, _knn_from_distances(d2, k), True)


def _perplexity_beta(candidates: Tensor, perplexity: float) -> Tensor:
    """β_i = 1/2s_i² with entropy(P_i) = log(perplexity), by bisection on log β (t-SNE)."""
    n, count = candidates.shape
    if perplexity >= count:
        # The entropy of c candidates is at most log c: the target is reached only by uniform rows.
        return candidates.new_zeros(n)
    scale = candidates.mean(dim=1).clamp_min(_TINY)
    scaled = candidates / scale[:, None]
    target = math.log(perplexity)
    lo = candidates.new_full((n,), -_LOG_BETA_RANGE)
    hi = candidates.new_full((n,), _LOG_BETA_RANGE)
    for _ in range(PERPLEXITY_SEARCH_STEPS):
        mid = (lo + hi) / 2
        p = torch.softmax(-mid.exp()[:, None] * scaled, dim=1)
        too_flat = torch.special.entr(p).sum(dim=1) > target  # entropy falls as β grows
        lo = torch.where(too_flat, mid, lo)
        hi = torch.where(too_flat, hi, mid)
    beta: Tensor = ((lo + hi) / 2).exp() / scale
    return beta


def _beta(d2: Tensor, support: Tensor, bandwidth: Bandwidth, perplexity: float) -> Tensor:
    """Precisions β_i = 1/2s_i² (N,), computed without gradient, floored as documented."""
    n = d2.shape[0]
    candidates = d2[support].view(n, -1)  # each row has the same number of candidates
    off_diagonal = d2[~torch.eye(n, dtype=torch.bool, device=d2.device)]
    floor = (BANDWIDTH_FLOOR * off_diagonal.mean()).clamp_min(_TINY)
    if bandwidth == "median":
        s2 = torch.quantile(candidates, 0.5, dim=1).clamp_min(floor)
        return 1.0 / (2.0 * s2)
    return _perplexity_beta(candidates, perplexity).clamp_max(1.0 / (2.0 * floor))


def _log_affinities(
    points: Tensor, bandwidth: Bandwidth, perplexity: float, k: int | None
) -> Tensor:
    """log p_{j|i} (N, N) on flattened points: −inf off the support (diagonal, non-kNN)."""
    d2 = squared_distances(points)
    with torch.no_grad():
        support = _support(d2, k)
        beta = _beta(d2.detach(), support, bandwidth, perplexity)
    logits = (-d2 * beta[:, None]).masked_fill(~support, -math.inf)
    return torch.log_softmax(logits, dim=1)


def _affinity_options(
    bandwidth: object, perplexity: object, k: object
) -> tuple[Bandwidth, float, int | None]:
    return _check_bandwidth(bandwidth), _check_perplexity(perplexity), _check_optional_k(k)


# --------------------------------------------------------------------------------------------
# Affinities and the two losses
# --------------------------------------------------------------------------------------------
def embedding_affinities(
    z: Tensor,
    *,
    bandwidth: Bandwidth = DEFAULT_BANDWIDTH,
    perplexity: float = DEFAULT_PERPLEXITY,
    k: int | None = None,
) -> Tensor:
    """Row-stochastic affinities (N, N) of a batch, differentiable (the Q of LSP's KL form).

    q_{j|i} = softmax_j(−‖z_i − z_j‖² / 2s_i²) over the candidates j (all j ≠ i, or the k nearest
    when ``k`` is set; the others are 0), zero diagonal. s_i by the median heuristic or by
    perplexity (see the module docstring); the bandwidths are constants in the backward pass.

    Args:
        z: points (N, …), N ≥ 2, flattened per sample.
        bandwidth: ``"median"`` (default) or ``"perplexity"``.
        perplexity: target perplexity (≥ 1) when ``bandwidth="perplexity"``.
        k: restrict each row to its k nearest neighbours (1 ≤ k ≤ N − 1); ``None``: all.
    """
    bandwidth, perplexity, k = _affinity_options(bandwidth, perplexity, k)
    flat = _points(z, "z")
    _check_k_fits(k, flat.shape[0])
    return _log_affinities(flat, bandwidth, perplexity, k).exp()


def input_affinities(
    x: Tensor,
    *,
    bandwidth: Bandwidth = DEFAULT_BANDWIDTH,
    perplexity: float = DEFAULT_PERPLEXITY,
    k: int | None = None,
) -> Tensor:
    """The input affinities P (N, N) of LSP: :func:`embedding_affinities` on x, without gradient.

    Each row sums to 1, the diagonal is 0; e.g. for the points 0, 1, 3 on a line (median
    heuristic, two candidates per row, so s_0² = (1 + 9)/2 = 5): p_{1|0} = 1/(1 + e^{−(9−1)/10}).
    """
    bandwidth, perplexity, k = _affinity_options(bandwidth, perplexity, k)
    flat = _points(x, "x", finite=True)
    _check_k_fits(k, flat.shape[0])
    with torch.no_grad():
        return _log_affinities(flat.detach(), bandwidth, perplexity, k).exp()


def lsp_kl_loss(
    x: Tensor,
    z: Tensor,
    *,
    bandwidth: Bandwidth = DEFAULT_BANDWIDTH,
    perplexity: float = DEFAULT_PERPLEXITY,
    k: int | None = None,
) -> Tensor:
    """L = mean_i KL(P_i ‖ Q_i): P from the inputs (no gradient), Q from the embeddings z.

    ``k`` restricts P to each input's k nearest neighbours; Q always spans every j ≠ i (see the
    module docstring). Finite for degenerate rows (duplicates, all-identical batches): 0·log 0 = 0
    and log q ≥ :data:`LOG_Q_FLOOR`. Returns a differentiable 0-d tensor in z's dtype and device.

    Args:
        x: inputs (N, …), flattened per sample; its gradient is never taken.
        z: embeddings (N, …) of the same N points.
        bandwidth, perplexity: how s_i is set, for P and Q alike.
        k: the input neighbourhood size (1 ≤ k ≤ N − 1) or ``None`` for all points.
    """
    bandwidth, perplexity, k = _affinity_options(bandwidth, perplexity, k)
    xf = _points(x, "x", finite=True)
    zf = _points(z, "z")
    _check_same_batch(xf, zf)
    _check_k_fits(k, xf.shape[0])
    with torch.no_grad():
        p = _log_affinities(xf.detach(), bandwidth, perplexity, k).exp()
    p = p.to(device=zf.device, dtype=zf.dtype)
    log_q = _log_affinities(zf, bandwidth, perplexity, None).clamp_min(LOG_Q_FLOOR)
    kl_rows = (torch.xlogy(p, p) - p * log_q).sum(dim=1)
    return kl_rows.mean()


def lsp_laplacian_loss(
    x: Tensor, z: Tensor, *, k: int, t: float | None = None, centered: bool = True
) -> Tensor:
    """L = (1/N) Σ_i Σ_{j∈kNN_x(i)} w_ij ‖z_i − z_j‖² / mean_i ‖z_i − z̄‖², w_ij = exp(−‖x_i − x_j‖²/t).

    The graph-Laplacian form of LSP (spec B, alternative). kNN_x(i) are the k nearest inputs to
    x_i (self excluded). The weights carry no gradient.

    Args:
        x: inputs (N, …), flattened per sample.
        z: embeddings (N, …) of the same points.
        k: neighbours per point, 1 ≤ k ≤ N − 1.
        t: heat-kernel temperature > 0; ``None``: the median of the N·k kNN squared distances
            (floored at 1e-12).
        centered: normalise by the centred second moment mean_i ‖z_i − z̄‖² (default,
            shift-invariant) or, with ``False``, by the spec's raw mean_i ‖z_i‖².
    """
    k = _check_k(k)
    if t is not None:
        t = _check_number(t, "t", minimum=0.0, strict=True)
    if not isinstance(centered, bool):
        raise ConfigError(f"centered must be True or False, got {centered!r}")
    xf = _points(x, "x", finite=True)
    zf = _points(z, "z")
    _check_same_batch(xf, zf)
    _check_k_fits(k, xf.shape[0])
    with torch.no_grad():
        d2x = squared_distances(xf.detach())
        neighbours = _knn_from_distances(d2x, k)
        d2_knn = d2x.gather(1, neighbours)
        temperature = (
            torch.quantile(d2_knn.flatten(), 0.5).clamp_min(_TINY)
            if t is None
            else torch.tensor(t, dtype=d2_knn.dtype, device=d2_knn.device)
        )
        weights = torch.exp(-d2_knn / temperature).to(device=zf.device, dtype=zf.dtype)
    neighbours = neighbours.to(zf.device)
    d2z = (zf[:, None, :] - zf[neighbours]).pow(2).sum(dim=-1)  # (N, k), exact, no Gram form
    numerator = (weights * d2z).sum(dim=1).mean()
    reference = zf - zf.mean(dim=0, keepdim=True) if centered else zf
    denominator = reference.pow(2).sum(dim=1).mean().clamp_min(_TINY)
    return numerator / denominator


# --------------------------------------------------------------------------------------------
# Mechanism metric
# --------------------------------------------------------------------------------------------
def knn_overlap(x: Tensor, z: Tensor, k: int) -> float:
    """mean_i |kNN_x(i) ∩ kNN_z(i)| / k: how much of each input neighbourhood the embedding keeps.

    1 when z preserves every k-neighbourhood, 0 when none is kept; self is excluded from both.
    Points are flattened per sample; ties are broken by :func:`torch.topk`.
    """
    k = _check_k(k)
    xf = _points(x, "x", finite=True)
    zf = _points(z, "z", finite=True)
    _check_same_batch(xf, zf)
    _check_k_fits(k, xf.shape[0])
    with torch.no_grad():
        near_x = _knn_from_distances(squared_distances(xf.detach()), k)
        near_z = _knn_from_distances(squared_distances(zf.detach()), k).to(near_x.device)
        shared = (near_x[:, :, None] == near_z[:, None, :]).any(dim=2).sum(dim=1)
        return float(shared.double().mean()) / k


def _candidate_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in registration order; an nn.Linear counts as a leaf (parametrizations)."""
    out: list[tuple[str, nn.Module]] = []
    linear_prefixes: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(p) for p in linear_prefixes):
            continue
        if isinstance(module, nn.Linear):
            linear_prefixes.append(name + ".")
            out.append((name, module))
        elif next(module.children(), None) is None:
            out.append((name, module))
    return out


def penultimate_layer(model: nn.Module, example: Tensor | None = None) -> str:
    """The name of the module whose output feeds the model's last ``nn.Linear`` (LSP's default z).

    "Last" and "feeds" follow registration order (``named_modules()``, leaves only): the module
    registered just before the last registered ``nn.Linear``, e.g. ``"relu4"`` (the ReLU before
    ``fc2``) for model B, ``"elu3"`` for model A, ``"flatten"`` for the CIFAR networks. That is the
    forward order for ``nn.Sequential`` and for every lsakit model; for a custom model pass
    ``example`` (a batch of inputs) to check it on a forward pass: the last Linear applied to the
    captured output must reproduce the Linear's captured output, else ConfigError.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    leaves = _candidate_modules(model)
    positions = [i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.Linear)]
    if not positions:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear, so no penultimate layer; pass layer= "
            f"(a module name or an L<k> label)"
        )
    last = positions[-1]
    linear_name, linear = leaves[last]
    if last == 0:
        raise ConfigError(
            f"the last nn.Linear {linear_name!r} is the model's first layer: its input is the raw "
            f"input, not an embedding; pass layer= explicitly"
        )
    name = leaves[last - 1][0]
    if example is not None:
        _verify_feeds(model, name, linear_name, linear, example)
    return name


def _verify_feeds(
    model: nn.Module, name: str, linear_name: str, linear: nn.Module, example: Tensor
) -> None:
    """Check on one forward that ``linear(output of name)`` reproduces the Linear's output."""
    with torch.no_grad(), eval_mode(model), LayerProbe(model, [name, linear_name]) as probe:
        model(example.to(model_device(model)))
        try:
            reps = probe.take()
            layers = probe.layers
        except RuntimeError:  # neither module ran in the forward
            reps, layers = [], []
        outs = [i for i, layer in enumerate(layers) if layer.module_name == linear_name]
        feeds = [
            i
            for i, layer in enumerate(layers)
            if layer.module_name == name and outs and i < outs[-1]
        ]
        ok = False
        if feeds:
            try:
                ok = bool(torch.allclose(linear(reps[feeds[-1]]), reps[outs[-1]], atol=1e-5))
            except RuntimeError:  # shape mismatch: the module does not feed the Linear
                ok = False
    if not ok:
        raise ConfigError(
            f"{name!r} (registered before the last nn.Linear {linear_name!r}) does not feed it in "
            f"the forward pass; pass layer= with the module whose output enters {linear_name!r}"
        )


def embedding_knn_overlap(
    model: nn.Module, layer: str | None, x: Tensor, k: int, *, batch_size: int = 256
) -> float:
    """:func:`knn_overlap` between inputs ``x`` and the model's representation at ``layer``.

    The representation is captured with a :class:`~lsakit.probe.LayerProbe` in eval mode, without
    gradient, in chunks of ``batch_size`` (the overlap itself is over the whole of ``x``).

    Args:
        model: the network; its device is used.
        layer: a module name, an ``L<k>`` label, or ``None`` for :func:`penultimate_layer`.
        x: inputs (N, …) in [0, 1], N ≥ k + 1.
        k: neighbours per point.
        batch_size: forward chunk size (≥ 1).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    k = _check_k(k)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    check_inputs(x, "x")
    name = _check_layer(layer) or penultimate_layer(model)
    device = model_device(model)
    chunks: list[Tensor] = []
    with torch.no_grad(), eval_mode(model), LayerProbe(model, [name]) as probe:
        for start in range(0, x.shape[0], batch_size):
            model(x[start : start + batch_size].to(device))
            reps = probe.take()
            if len(reps) != 1:
                raise InputError(
                    f"layer {name!r} produced {len(reps)} representations in one forward (a module "
                    f"used more than once); pick a layer called once"
                )
            chunks.append(reps[0].flatten(1))
    return knn_overlap(x, torch.cat(chunks), k)


# --------------------------------------------------------------------------------------------
# The regularizer
# --------------------------------------------------------------------------------------------
def _check_layer(layer: object) -> str | None:
    if layer is None:
        return None
    if not isinstance(layer, str) or not layer:
        raise ConfigError(
            f"layer must be a module name, an L<k> label or None (penultimate), got {layer!r}"
        )
    if any(c in layer for c in "*?["):
        raise ConfigError(f"layer {layer!r} is a glob; LSP embeds at one layer: name it exactly")
    if layer.lower() == "mvl":
        raise ConfigError("LSP embeds at one layer, not an MVL list; name a layer or pass None")
    return layer


class LocalStructureRegularizer:
    """λ·L_LSP: keep the input's local structure in the embedding (Wei et al. 2023, spec B).

    Added to the base loss: CE(f(x), y) + λ·L without adversarial training, CE(f(x̂), y) + λ·L with
    it. L is :func:`lsp_kl_loss` (``variant="kl"``) or :func:`lsp_laplacian_loss`
    (``"laplacian"``), computed on the clean batch (``on="clean"``) or on clean ∪ adversarial
    (``"clean+adv"``), where each adversarial point has its clean source as a near neighbour.

    Args:
        weight: λ ≥ 0 (spec grid {0.1, 0.5, 1, 2}); default :data:`DEFAULT_WEIGHT`.
        variant: ``"kl"`` (default) or ``"laplacian"``.
        layer: where z is taken: a module name, an ``L<k>`` label, or ``None`` for the
            penultimate layer (:func:`penultimate_layer`), resolved by :meth:`probe_layers`.
        on: ``"clean"`` (default) or ``"clean+adv"``.
        k: neighbourhood size; optional for ``"kl"`` (restricts P), required for ``"laplacian"``.
        bandwidth, perplexity: how s_i is set (``"kl"`` only).
        t: heat-kernel temperature (``"laplacian"`` only; ``None``: the median kNN distance).
        centered: the Laplacian's normaliser (``"laplacian"`` only), see :func:`lsp_laplacian_loss`.

    Attributes:
        last_loss: after a call, the unweighted L as a detached 0-d tensor (no device sync).

    Example::

        reg = LocalStructureRegularizer(weight=1.0, on="clean+adv")
        with LayerProbe(model, reg.probe_layers(model), detach=False) as probe:
            out = objective(model, x, y, probe)          # captures φ(x) and φ(x̂)
            loss = out.loss + reg(x, out.clean_reps[0], out.x_adv, out.adv_reps[0])
    """

    def __init__(
        self,
        *,
        weight: float = DEFAULT_WEIGHT,
        variant: LSPVariant = "kl",
        layer: str | None = None,
        on: LSPOn = "clean",
        k: int | None = None,
        bandwidth: Bandwidth = DEFAULT_BANDWIDTH,
        perplexity: float = DEFAULT_PERPLEXITY,
        t: float | None = None,
        centered: bool = True,
    ) -> None:
        self.weight = _check_number(weight, "weight (λ)", minimum=0.0, strict=False)
        if variant not in _VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(_VARIANTS)}, got {variant!r}")
        if on not in _ONS:
            raise ConfigError(f"on must be one of {', '.join(_ONS)}, got {on!r}")
        self.variant: LSPVariant = variant
        self.on: LSPOn = on
        self.layer = _check_layer(layer)
        self.k = _check_optional_k(k)
        self.bandwidth = _check_bandwidth(bandwidth)
        self.perplexity = _check_perplexity(perplexity)
        if not isinstance(centered, bool):
            raise ConfigError(f"centered must be True or False, got {centered!r}")
        self.centered = centered
        if variant == "laplacian" and self.k is None:
            raise ConfigError("the laplacian variant needs k (neighbours per point), e.g. k=5")
        if t is not None:
            if variant != "laplacian":
                raise ConfigError("t is the laplacian variant's temperature; drop it for kl")
            t = _check_number(t, "t", minimum=0.0, strict=True)
        self.t = t
        self.last_loss: Tensor | None = None

    def probe_layers(self, model: nn.Module, example: Tensor | None = None) -> list[str]:
        """``[layer]`` for ``LayerProbe(model, ..., detach=False)``: the given layer or the
        penultimate one (``example`` checks the latter on a forward, see
        :func:`penultimate_layer`)."""
        if self.layer is not None:
            if not _LABEL.match(self.layer):
                named = dict(model.named_modules())
                if self.layer not in named:
                    close = difflib.get_close_matches(self.layer, list(named), n=3)
                    hint = f"did you mean {', '.join(close)}?" if close else "see named_modules()"
                    raise ConfigError(f"unknown layer {self.layer!r} for LSP: {hint}")
            return [self.layer]
        return [penultimate_layer(model, example)]

    def loss(self, x: Tensor, z: Tensor) -> Tensor:
        """The unweighted L on one set of points (inputs ``x``, embeddings ``z``).

        A batch too small for k neighbours (the last, partial batch of an epoch) uses k = N − 1;
        a batch of one point has no neighbourhood and contributes 0.
        """
        n = x.shape[0]
        if n < 2:
            return z.sum() * 0.0
        k = min(self.k, n - 1) if self.k is not None else None
        if self.variant == "kl":
            return lsp_kl_loss(x, z, bandwidth=self.bandwidth, perplexity=self.perplexity, k=k)
        assert k is not None  # enforced by the constructor
        return lsp_laplacian_loss(x, z, k=k, t=self.t, centered=self.centered)

    def __call__(
        self,
        x: Tensor,
        z: Tensor,
        x_adv: Tensor | None = None,
        z_adv: Tensor | None = None,
    ) -> Tensor:
        """λ·L: a differentiable scalar. ``x_adv``/``z_adv`` are used only with ``on="clean+adv"``.

        Args:
            x: the clean batch (N, …), N ≥ 1, floating point, finite, any value range; moved to
                z's device if it is elsewhere.
            z: its embedding (N, …) with gradient, floating point, finite.
            x_adv: the adversarial batch, x's shape; z_adv: its embedding, z's shape and device.

        Raises:
            InputError: a missing, non-tensor, non-floating, unbatched, empty or non-finite
                argument, or batches whose sizes or shapes disagree (the message names it).
        """
        x = _batch(x, "x", min_points=1, finite_fix=_DATA_FIX)
        z = _batch(z, "z", min_points=1, finite_fix=_EMBEDDING_FIX)
        _check_same_batch(x, z)
        x = x.to(z.device)
        if self.on == "clean+adv":
            if x_adv is None or z_adv is None:
                missing = "x_adv" if x_adv is None else "z_adv"
                raise InputError(
                    f"on='clean+adv' needs the adversarial batch and its embedding; {missing} is "
                    f"missing (use on='clean' without adversarial training)"
                )
            if isinstance(z_adv, Tensor) and z_adv.device != z.device:
                raise InputError(
                    f"z_adv is on {z_adv.device} but z on {z.device}; take both embeddings from "
                    f"the same model"
                )
            x_adv = _batch(x_adv, "x_adv", min_points=1, finite_fix=_ATTACK_FIX)
            z_adv = _batch(z_adv, "z_adv", min_points=1, finite_fix=_EMBEDDING_FIX)
            for name, clean, adv in (("x", x, x_adv), ("z", z, z_adv)):
                if clean.shape != adv.shape:
                    raise InputError(
                        f"{name} has shape {tuple(clean.shape)} but {name}_adv has "
                        f"{tuple(adv.shape)}; the adversarial batch must match the clean one"
                    )
            x = torch.cat([x, x_adv.to(z.device)])
            z = torch.cat([z, z_adv])
        value = self.loss(x, z)
        self.last_loss = value.detach()
        return self.weight * value

    def describe(self) -> dict[str, Any]:
        """JSON-able settings: the variant's options only."""
        settings: dict[str, Any] = {
            "method": "lsp",
            "variant": self.variant,
            "weight": self.weight,
            "layer": self.layer,
            "on": self.on,
            "k": self.k,
        }
        if self.variant == "kl":
            settings.update(bandwidth=self.bandwidth, perplexity=self.perplexity)
        else:
            settings.update(t=self.t, centered=self.centered)
        return settings

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "method")
        return f"LocalStructureRegularizer({settings})"


__all__ = [
    "BANDWIDTH_FLOOR",
    "DEFAULT_BANDWIDTH",
    "DEFAULT_PERPLEXITY",
    "DEFAULT_WEIGHT",
    "LOG_Q_FLOOR",
    "PERPLEXITY_SEARCH_STEPS",
    "Bandwidth",
    "LSPOn",
    "LSPVariant",
    "LocalStructureRegularizer",
    "embedding_affinities",
    "embedding_knn_overlap",
    "input_affinities",
    "knn_indices",
    "knn_overlap",
    "lsp_kl_loss",
    "lsp_laplacian_loss",
    "penultimate_layer",
    "squared_distances",
]
