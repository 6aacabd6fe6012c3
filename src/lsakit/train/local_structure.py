"""The functional core of LSP (:mod:`lsakit.train.lsp`): distances, neighbours, bandwidths, the
affinities P and Q, the two losses and the k-NN overlap. The choices they make (median heuristic,
perplexity calibration, bandwidth floor, kNN restriction, normalisers) are listed in
:mod:`lsakit.train.lsp`'s docstring.
"""

from __future__ import annotations

import math
from typing import get_args

import torch
from torch import Tensor

from lsakit.config.defaults import DEFAULT_BANDWIDTH, DEFAULT_PERPLEXITY, Bandwidth
from lsakit.errors import ConfigError, InputError
from lsakit.validate import choice, number, positive_int

#: Bisection steps of the perplexity calibration: the bracket [−30, 30] on log β shrinks to 5e-14.
PERPLEXITY_SEARCH_STEPS = 50
#: s_i² ≥ this fraction of the batch's mean non-self squared distance.
BANDWIDTH_FLOOR = 1e-3
#: log q_{j|i} is clamped from below at this value (q ≥ 1e-12), so KL stays finite.
LOG_Q_FLOOR = math.log(1e-12)

_TINY = 1e-12
_LOG_BETA_RANGE = 30.0
_BANDWIDTHS: tuple[str, ...] = get_args(Bandwidth)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _check_optional_k(k: object) -> int | None:
    return None if k is None else positive_int(k, "k")


def _check_bandwidth(bandwidth: object) -> Bandwidth:
    return choice(bandwidth, "bandwidth", _BANDWIDTHS)  # type: ignore[return-value]


def _check_perplexity(perplexity: object) -> float:
    return number(perplexity, "perplexity", low=1.0)


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
    k = positive_int(k, "k")
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
    k = positive_int(k, "k")
    if t is not None:
        t = number(t, "t", low=0.0, strict=True)
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
    k = positive_int(k, "k")
    xf = _points(x, "x", finite=True)
    zf = _points(z, "z", finite=True)
    _check_same_batch(xf, zf)
    _check_k_fits(k, xf.shape[0])
    with torch.no_grad():
        near_x = _knn_from_distances(squared_distances(xf.detach()), k)
        near_z = _knn_from_distances(squared_distances(zf.detach()), k).to(near_x.device)
        shared = (near_x[:, :, None] == near_z[:, None, :]).any(dim=2).sum(dim=1)
        return float(shared.double().mean()) / k


__all__ = [
    "BANDWIDTH_FLOOR",
    "LOG_Q_FLOOR",
    "PERPLEXITY_SEARCH_STEPS",
    "embedding_affinities",
    "input_affinities",
    "knn_indices",
    "knn_overlap",
    "lsp_kl_loss",
    "lsp_laplacian_loss",
    "squared_distances",
]
