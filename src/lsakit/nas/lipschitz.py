"""Lipschitz bounds and log-normal algebra of RACL (Dong et al., arXiv:2009.00902, TPAMI 2025).

RACL bounds the network's Lipschitz constant by a product over cells and intermediate nodes,

    λ_F ≲ C · Π_cells Π_nodes Σ_{i<j} β^(i,j) Σ_o α_o^(i,j) λ_o,

with α, β log-normal "confidences" and λ_o the (constant) Lipschitz bounds of the candidate ops.
A product of independent log-normals is log-normal (add the log-means, add the log-variances);
a sum is approximated by one log-normal matching its mean and variance (Fenton–Wilkinson), so
λ_F ≈ LN(μ_F, σ_F²) and the chance constraint Pr(λ_F ≤ λ̄_F) ≥ η becomes

    g = μ_F + σ_F · Φ⁻¹(η) − ln λ̄_F ≤ 0.

This module holds the pure pieces: power iteration for the spectral norm of a convolution (on
the actual ``conv2d``; its adjoint is ``conv_transpose2d``), the BatchNorm factor, Fenton–Wilkinson,
:func:`network_lognormal` and :func:`constraint`. Everything is plain torch; the log-normal
functions are differentiable in the log-means and log-standard deviations (the λ_o are constants).

Choices where the paper is silent *(inferred)*:

* **exact zeros** (the ``zero`` op, λ_o = 0) enter the log-space sums as the finite stand-in
  :data:`ZERO_LOG` instead of −∞, so gradients stay finite; e^ZERO_LOG underflows to exactly 0;
* **cells that share α and β** (DARTS shares one set per cell type) do not contribute independent
  factors: the node sums of cells in one :attr:`CellDistribution.group` are treated as perfectly
  correlated — their log-standard deviations add (exact when the cells' λ_o coincide) — while
  different nodes and different groups are independent (log-variances add);
* the power iteration returns ‖A v‖ for the final unit iterate v: a lower estimate of ‖A‖₂ that
  converges from below (warm-started iterates, :func:`power_iteration`'s ``init``, keep it cheap
  while the weights change slowly during a search).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsakit.errors import InputError
from lsakit.validate import open_unit, positive_int

#: Power-iteration steps when no warm start is available. Convolution spectra are dense near the
#: top, so the estimate creeps up slowly: on the 8-channel ops at 28×28, 50 steps leave ~0.4%,
#: 100 steps ~0.1% (measured against 1000 steps).
DEFAULT_POWER_ITERS = 100

#: Log-space stand-in for an exactly-zero term (λ_o = 0): exp(ZERO_LOG) is 0 in float32/64, and
#: unlike −∞ it keeps logsumexp and its gradient finite.
ZERO_LOG = -1.0e4

#: Floor on s² inside Fenton–Wilkinson: log(expm1(s²)) is −∞ at s = 0.
_MIN_VARIANCE = 1e-30

_TINY = 1e-30


# --------------------------------------------------------------------------------------------
# Spectral norms by power iteration
# --------------------------------------------------------------------------------------------


def power_iteration(
    forward: Callable[[Tensor], Tensor],
    adjoint: Callable[[Tensor], Tensor],
    init: Tensor,
    iters: int,
) -> tuple[Tensor, Tensor]:
    """Largest singular value of a linear operator A by power iteration on AᵀA.

    Args:
        forward: v ↦ A v.
        adjoint: u ↦ Aᵀ u (must be the exact adjoint of ``forward``).
        init: a starting vector in A's input space (any shape ``forward`` accepts, non-zero).
        iters: number of AᵀA multiplications (≥ 1).

    Returns:
        ``(sigma, v)``: σ = ‖A v‖₂ for the final unit vector v (a 0-d tensor, ≤ ‖A‖₂ and converging
        to it) and v itself, to warm-start the next call. Runs under ``torch.no_grad()``.
    """
    iters = positive_int(iters, "iters")
    with torch.no_grad():
        v = init / torch.linalg.vector_norm(init).clamp_min(_TINY)
        for _ in range(iters):
            w = adjoint(forward(v))
            v = w / torch.linalg.vector_norm(w).clamp_min(_TINY)
        sigma = torch.linalg.vector_norm(forward(v))
    return sigma, v


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    items = (value, value) if isinstance(value, int) else tuple(value)
    if len(items) != 2 or any(isinstance(i, bool) or not isinstance(i, int) for i in items):
        raise InputError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output length of a convolution or pooling along one axis (floor mode)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _default_init(shape: Sequence[int], like: Tensor) -> Tensor:
    # A fixed generator: the same operator always gets the same estimate (reproducible bounds).
    g = torch.Generator().manual_seed(0)
    return torch.randn(tuple(shape), generator=g, dtype=like.dtype).to(like.device)


def power_iteration_conv(
    weight: Tensor,
    input_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    iters: int = DEFAULT_POWER_ITERS,
    *,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    init: Tensor | None = None,
) -> Tensor:
    """Spectral norm ‖A‖₂ of the convolution operator x ↦ conv2d(x, weight) on inputs of a shape.

    The operator is the actual zero-padded ``conv2d`` on ``input_shape = (C_in, H, W)``; its
    adjoint is ``conv_transpose2d`` with the same weight and the ``output_padding`` that restores
    (H, W). The bias is irrelevant (an affine map has the Lipschitz constant of its linear part).

    Args:
        weight: (C_out, C_in / groups, kH, kW).
        input_shape: (C_in, H, W) of one input.
        stride, padding, dilation, groups: as in :func:`torch.nn.functional.conv2d`.
        iters: power-iteration steps (≥ 1).
        init: optional starting vector of shape (1, C_in, H, W) (a previous estimate's vector).

    Returns:
        A 0-d tensor (weight's dtype and device), a lower estimate converging to ‖A‖₂.
    """
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise InputError(
            f"weight must be a 4-d conv weight (C_out, C_in/groups, kH, kW), got {shape}"
        )
    sigma, _ = power_iteration_conv_vector(
        weight,
        input_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        iters=iters,
        init=init,
    )
    return sigma


def power_iteration_conv_vector(
    weight: Tensor,
    input_shape: Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    iters: int = DEFAULT_POWER_ITERS,
    init: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`power_iteration_conv` returning ``(sigma, v)``: v warm-starts the next estimate."""
    shape = tuple(input_shape)
    if len(shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape
    ):
        raise InputError(f"input_shape must be (C_in, H, W) of positive ints, got {input_shape!r}")
    if shape[0] != weight.shape[1] * groups:
        raise InputError(
            f"input_shape has {shape[0]} channels but the weight expects "
            f"{weight.shape[1] * groups} (C_in/groups = {weight.shape[1]}, groups = {groups})"
        )
    s, p, d = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    k = (int(weight.shape[2]), int(weight.shape[3]))
    out = [conv_output_size(shape[1 + a], k[a], s[a], p[a], d[a]) for a in range(2)]
    if min(out) < 1:
        raise InputError(f"the convolution has an empty output on input_shape {shape}")
    # conv_transpose2d maps (H_out, W_out) back to (H_out−1)s − 2p + d(k−1) + 1 (+ output_padding).
    restored = [(out[a] - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + 1 for a in range(2)]
    output_padding = (shape[1] - restored[0], shape[2] - restored[1])

    def forward(v: Tensor) -> Tensor:
        return F.conv2d(v, weight, None, s, p, d, groups)

    def adjoint(u: Tensor) -> Tensor:
        return F.conv_transpose2d(u, weight, None, s, p, output_padding, groups, d)

    start = _default_init((1, *shape), weight) if init is None else init
    if start.shape != (1, *shape):
        raise InputError(f"init has shape {tuple(start.shape)}; expected {(1, *shape)}")
    return power_iteration(forward, adjoint, start.to(weight.device, weight.dtype), iters)


def power_iteration_linear(
    weight: Tensor, iters: int = DEFAULT_POWER_ITERS, *, init: Tensor | None = None
) -> Tensor:
    """Spectral norm ‖W‖₂ of a dense (``nn.Linear``) weight (out, in) by power iteration.

    Args:
        weight: the matrix (out, in).
        iters: power-iteration steps (≥ 1).
        init: optional non-zero starting vector (in,), on the weight's device and dtype
            (default: a fixed-seed random vector, so the estimate is reproducible).

    Returns:
        A 0-d tensor (weight's dtype and device), a lower estimate converging to ‖W‖₂.
    """
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise InputError(f"weight must be a 2-d matrix (out, in), got {shape}")
    start = _default_init((weight.shape[1],), weight) if init is None else init
    sigma, _ = power_iteration(lambda v: weight @ v, lambda u: weight.T @ u, start, iters)
    return sigma


def power_iteration_operator(
    operator: Callable[[Tensor], Tensor],
    input_shape: Sequence[int],
    *,
    like: Tensor,
    iters: int = DEFAULT_POWER_ITERS,
    init: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Spectral norm of any *linear* map (e.g. an average pooling), adjoint by autograd.

    ``like`` gives the dtype and device. Returns ``(sigma, v)`` as :func:`power_iteration`.
    """
    shape = (1, *tuple(input_shape))

    def adjoint(u: Tensor) -> Tensor:
        with torch.enable_grad():
            probe = torch.zeros(shape, dtype=like.dtype, device=like.device, requires_grad=True)
            (grad,) = torch.autograd.grad(operator(probe), probe, grad_outputs=u)
        return grad

    start = _default_init(shape, like) if init is None else init
    return power_iteration(operator, adjoint, start.to(like.device, like.dtype), iters)


def batchnorm_factor(
    bn: nn.modules.batchnorm._BatchNorm, *, channels: slice | None = None
) -> Tensor:
    """Lipschitz constant of a BatchNorm layer in eval mode:
    ``max_c |γ_c| / √(running_var_c + ε)``.

    In eval mode BN is the per-channel affine map x ↦ γ (x − mean)/√(var + ε) + b, a diagonal
    operator whose norm is its largest absolute diagonal entry. γ = 1 without affine parameters. The
    running statistics are used (the training-mode map depends on the batch, it has no fixed
    constant). ``channels`` restricts the maximum to a slice of the channels.

    Args:
        bn: a BatchNorm layer with running statistics (``track_running_stats=True``, else
            InputError).
        channels: the channels to take the maximum over (default: all).

    Returns:
        The factor, a 0-d tensor on the layer's device, without gradient.
    """
    var = bn.running_var
    if var is None:
        raise InputError(
            "batchnorm_factor needs running statistics (track_running_stats=True); this "
            "BatchNorm normalizes with batch statistics only"
        )
    with torch.no_grad():
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = bn.weight.abs() * scale
        return scale[channels if channels is not None else slice(None)].max()


# --------------------------------------------------------------------------------------------
# Log-normal algebra
# --------------------------------------------------------------------------------------------


def lognormal_product(m: Tensor, s: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Product of independent log-normals LN(mᵢ, sᵢ²) along ``dim``: LN(Σ mᵢ, Σ sᵢ²) (exact).

    Args:
        m: the factors' log-means.
        s: the factors' log-standard deviations, shaped like ``m``.
        dim: the dimension along which the factors are multiplied.

    Returns:
        ``(Σ mᵢ, √(Σ sᵢ²))``, the product's log-mean and log-standard deviation, with ``dim``
        reduced; differentiable.
    """
    return m.sum(dim), s.square().sum(dim).sqrt()


def lognormal_scale(m: Tensor, s: Tensor, factor: Tensor) -> tuple[Tensor, Tensor]:
    """c · LN(m, s²) = LN(m + ln c, s²) for constants c ≥ 0; c = 0 maps to :data:`ZERO_LOG`."""
    return m + safe_log(factor), s


def safe_log(value: Tensor) -> Tensor:
    """ln(value) for value ≥ 0, with exact zeros mapped to :data:`ZERO_LOG` (finite)."""
    positive = value > 0
    return torch.where(positive, value.clamp_min(_TINY).log(), torch.full_like(value, ZERO_LOG))


def fenton_wilkinson(m: Tensor, s: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Fenton–Wilkinson: the log-normal LN(m_S, s_S²) matching a sum of independent LN(mᵢ, sᵢ²).

        E = Σ e^{mᵢ + sᵢ²/2},   V = Σ (e^{sᵢ²} − 1) e^{2mᵢ + sᵢ²},
        s_S² = ln(1 + V/E²),    m_S = ln E − s_S²/2.

    Computed in log space (logsumexp), so very large or small terms neither overflow nor
    underflow. An exactly-zero term is given as m = :data:`ZERO_LOG` (−∞ is clamped to it).
    Differentiable in ``m`` and ``s``.

    Args:
        m: the terms' log-means mᵢ.
        s: the terms' log-standard deviations sᵢ, the same shape as ``m`` (else InputError).
        dim: the dimension along which the terms are summed.

    Returns:
        ``(m_S, s_S)`` with ``dim`` reduced.
    """
    if m.shape != s.shape:
        raise InputError(
            f"m and s must have the same shape, got {tuple(m.shape)} and {tuple(s.shape)}"
        )
    m = m.clamp_min(ZERO_LOG)
    s2 = s.square().clamp_min(_MIN_VARIANCE)
    log_mean = torch.logsumexp(m + s2 / 2, dim)
    log_var = torch.logsumexp(torch.log(torch.expm1(s2)) + 2 * m + s2, dim)
    s2_sum = torch.log1p(torch.exp(log_var - 2 * log_mean))
    return log_mean - s2_sum / 2, s2_sum.sqrt()


@dataclass(frozen=True, kw_only=True)
class CellDistribution:
    """One cell's architecture distribution and op bounds, the input of :func:`network_lognormal`.

    Edges are ordered node by node: intermediate node j (0-based) has the j + 2 inputs
    (the two cell inputs, then nodes 0 … j−1), so a cell with n nodes has n(n+3)/2 edges.

    Attributes:
        alpha_mu, alpha_sigma: (E, O) log-mean and log-std of α_o^(i,j).
        beta_mu, beta_sigma: (E,) log-mean and log-std of β^(i,j).
        lam: (E, O) the λ_o ≥ 0 of each edge's ops (constants; 0 for the ``zero`` op).
        group: cells with the same non-empty group share one α, β sample (DARTS shares them per
            cell type), so their node factors are perfectly correlated (see the module notes);
            ``""`` means an independent cell.
    """

    alpha_mu: Tensor
    alpha_sigma: Tensor
    beta_mu: Tensor
    beta_sigma: Tensor
    lam: Tensor
    group: str = ""

    @property
    def nodes(self) -> int:
        """Number of intermediate nodes n, from E = n(n+3)/2."""
        return nodes_for_edges(int(self.beta_mu.shape[0]))


def edges_per_cell(nodes: int) -> int:
    """E = Σ_{j<n} (j + 2) = n(n+3)/2 edges for n intermediate nodes."""
    return nodes * (nodes + 3) // 2


def nodes_for_edges(edges: int) -> int:
    """The n with n(n+3)/2 = ``edges``; InputError when there is none."""
    n = int((math.isqrt(9 + 8 * edges) - 3) // 2)
    if n < 1 or edges_per_cell(n) != edges:
        raise InputError(f"{edges} edges is not n(n+3)/2 for any node count n ≥ 1")
    return n


def node_edge_slices(nodes: int) -> list[slice]:
    """The slice of edge indices feeding each intermediate node j (j + 2 edges each)."""
    slices, start = [], 0
    for j in range(nodes):
        slices.append(slice(start, start + j + 2))
        start += j + 2
    return slices


def cell_node_lognormals(cell: CellDistribution) -> tuple[Tensor, Tensor]:
    """Per-node log-normals (m_j, s_j), each (n,), of Σ_{i<j} β^(i,j) Σ_o α_o^(i,j) λ_o.

    Each α_o λ_o is LN(μ_α + ln λ_o, σ_α²); the op sum is Fenton–Wilkinson; times β is a product
    (log-means and log-variances add); the input sum is Fenton–Wilkinson again.
    """
    e, o = cell.alpha_mu.shape
    for name, t, shape in (
        ("alpha_sigma", cell.alpha_sigma, (e, o)),
        ("lam", cell.lam, (e, o)),
        ("beta_mu", cell.beta_mu, (e,)),
        ("beta_sigma", cell.beta_sigma, (e,)),
    ):
        if tuple(t.shape) != shape:
            raise InputError(f"{name} has shape {tuple(t.shape)}; expected {shape}")
    op_m, op_s = lognormal_scale(cell.alpha_mu, cell.alpha_sigma, cell.lam.to(cell.alpha_mu))
    edge_m, edge_s = fenton_wilkinson(op_m, op_s)
    weighted_m = edge_m + cell.beta_mu
    weighted_s = (edge_s.square() + cell.beta_sigma.square()).sqrt()
    nodes = [
        fenton_wilkinson(weighted_m[sl], weighted_s[sl]) for sl in node_edge_slices(cell.nodes)
    ]
    return torch.stack([m for m, _ in nodes]), torch.stack([s for _, s in nodes])


def network_lognormal(
    cells: Sequence[CellDistribution], *, log_c: Tensor | float = 0.0
) -> tuple[Tensor, Tensor]:
    """(μ_F, σ_F) of λ_F ≈ LN(μ_F, σ_F²), λ_F = C · Π_cells Π_nodes Σ_{i<j} β Σ_o α λ_o.

    Args:
        cells: one :class:`CellDistribution` per cell of the network, in order.
        log_c: ln C, the constant factor (stem, cell pre-processing, classifier).

    Within a cell the nodes are independent (disjoint edges). Node j of cells sharing a ``group``
    uses the same samples, so those factors are combined as perfectly correlated (log-stds add);
    everything else multiplies as independent log-normals (log-variances add).

    Returns:
        ``(mu_f, sigma_f)``: two 0-d tensors, differentiable in the cells' log-means and
        log-standard deviations.
    """
    if not cells:
        raise InputError("network_lognormal needs at least one cell")
    mean_terms: list[Tensor] = []
    # (group, node) → log-std accumulated over the cells of that group
    correlated: dict[tuple[str, int], Tensor] = {}
    independent: list[Tensor] = []
    for cell in cells:
        m, s = cell_node_lognormals(cell)
        mean_terms.append(m.sum())
        if cell.group:
            for j in range(s.shape[0]):
                key = (cell.group, j)
                correlated[key] = correlated[key] + s[j] if key in correlated else s[j]
        else:
            independent.append(s)
    variances = [s.square().sum() for s in independent]
    variances += [s.square() for s in correlated.values()]
    mu_f = torch.stack(mean_terms).sum() + log_c
    sigma_f = torch.stack(variances).sum().sqrt()
    return mu_f, sigma_f


def normal_quantile(eta: float, like: Tensor | None = None) -> Tensor:
    """Φ⁻¹(η) for η ∈ (0, 1) as a tensor (torch's normal inverse CDF, ``torch.special.ndtri``)."""
    eta = open_unit(eta, "eta")
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    quantile: Tensor = torch.special.ndtri(torch.tensor(eta, dtype=torch.float64))
    return quantile.to(dtype=dtype, device=device)


def constraint(mu_f: Tensor, sigma_f: Tensor, lam_bar: Tensor | float, eta: float = 0.9) -> Tensor:
    """g = μ_F + σ_F · Φ⁻¹(η) − ln λ̄_F; g ≤ 0 ⇔ Pr(λ_F ≤ λ̄_F) ≥ η for λ_F ~ LN(μ_F, σ_F²).

    Differentiable in ``mu_f`` and ``sigma_f``. ``lam_bar`` must be > 0; ``eta`` in (0, 1)
    (the paper uses 0.9).

    Args:
        mu_f: μ_F, the log-mean of the network's Lipschitz bound.
        sigma_f: σ_F ≥ 0, its log-standard deviation.
        lam_bar: λ̄_F, the bound's target, a finite number > 0 (not its log); else InputError.
        eta: η ∈ (0, 1), the probability with which λ_F must stay below λ̄_F.

    Returns:
        g (0-d for 0-d inputs; ``mu_f``'s dtype and device): ≤ 0 when the constraint holds.
    """
    bound = torch.as_tensor(lam_bar, dtype=mu_f.dtype, device=mu_f.device)
    if not bool(torch.all(bound > 0)) or not bool(torch.all(torch.isfinite(bound))):
        raise InputError(f"lam_bar (λ̄_F) must be a finite number > 0, got {lam_bar!r}")
    return mu_f + sigma_f * normal_quantile(eta, mu_f) - bound.log()


__all__ = [
    "DEFAULT_POWER_ITERS",
    "ZERO_LOG",
    "CellDistribution",
    "batchnorm_factor",
    "cell_node_lognormals",
    "constraint",
    "conv_output_size",
    "edges_per_cell",
    "fenton_wilkinson",
    "lognormal_product",
    "lognormal_scale",
    "network_lognormal",
    "node_edge_slices",
    "nodes_for_edges",
    "normal_quantile",
    "power_iteration",
    "power_iteration_conv",
    "power_iteration_conv_vector",
    "power_iteration_linear",
    "power_iteration_operator",
    "safe_log",
]
