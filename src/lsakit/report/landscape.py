"""Loss landscapes: the filter-normalized 2-D slice of Li et al. (2018).

Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
§4 ("Filter-wise normalization"). The paper we reproduce (Khalooei et al. 2022, arXiv:2202.02626)
shows a loss landscape for each MVL proposal without saying how it was drawn; this is the usual
method, and the choices below follow the authors' reference code (``net_plotter.py``,
``dir_type="weights"``, ``ignore="biasbn"``, ``norm="filter"``):

- Two random directions ``d1, d2`` with the shapes of the model's parameters, each entry drawn
  from N(0, 1) by a private generator seeded with ``seed`` (the global RNG is not touched, and the
  directions do not depend on the device).
- Filter normalization (Li et al., Eq. 1): for every parameter with two or more dimensions, each
  filter ``d_{i,j}`` (the slice along dim 0: a row of a Linear weight, an output channel of a
  convolution) is rescaled to ``‖θ_{i,j}‖ / ‖d_{i,j}‖ · d_{i,j}``, so a step of 1 along a
  direction moves every filter by its own norm and the slice is comparable across networks whose
  layers differ in scale. The norms are computed in float64.
- Parameters with at most one dimension (biases, BatchNorm/LayerNorm scales and shifts) are zero in
  both directions ("ignore_biasbn"). Buffers (BatchNorm running statistics) are not perturbed.
- The surface is ``L(θ + α·d1 + β·d2)`` on one batch, the mean cross-entropy of the model in eval
  mode (BatchNorm uses its running statistics, dropout is off), for α and β on the same symmetric
  grid ``[-span, span]``.

The perturbed weights are never written into the model: each grid point is one forward of the whole
batch through :func:`torch.func.functional_call` with the shifted parameters, so the model's weights
are bit-for-bit what they were (whatever happens, KeyboardInterrupt included), and its train/eval
flags are restored by :func:`lsakit._torch.eval_mode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn
from torch.func import functional_call

from lsakit._checks import check_inputs, check_labels
from lsakit._outputs import OutputSelector, select_logits
from lsakit._torch import eval_mode, model_device
from lsakit.errors import InputError

#: Grid points per axis and half-width of the grid (in units of the filter-normalized directions);
#: Li et al. plot [-1, 1] for their 2-D contour figures.
DEFAULT_STEPS = 21
DEFAULT_SPAN = 1.0

Directions = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LandscapeGrid:
    """A 2-D loss slice: ``losses[i, j] = L(θ + alphas[i]·d1 + betas[j]·d2)``.

    Attributes:
        alphas: coordinates along ``d1``, shape (steps,), symmetric about 0, centre exactly 0.
        betas: coordinates along ``d2``, the same values as ``alphas``.
        losses: mean cross-entropy on the batch at each grid point, shape (steps, steps), float64.
        accuracies: fraction of the batch classified correctly at each grid point, same shape.
        span: half-width of the grid.
        seed: seed of the random directions.
        n_samples: size of the batch the loss was computed on.
    """

    alphas: NDArray[np.float64]
    betas: NDArray[np.float64]
    losses: NDArray[np.float64]
    accuracies: NDArray[np.float64]
    span: float
    seed: int
    n_samples: int

    @property
    def center_loss(self) -> float:
        """The loss at θ itself (the grid's centre)."""
        c = len(self.alphas) // 2
        return float(self.losses[c, c])


def grid_coordinates(steps: int, span: float) -> NDArray[np.float64]:
    """``steps`` points from ``-span`` to ``span``, exactly symmetric, with exactly 0 at the centre.

    Built as ``span · k / (steps − 1)`` for the integers ``k = −(steps−1), …, −2, 0, 2, …`` so
    ``coords[i] == -coords[-1 - i]`` holds bit for bit (``np.linspace`` does not promise that), and
    the centre evaluates the trained weights themselves.
    """
    k = 2.0 * np.arange(steps, dtype=np.float64) - (steps - 1)
    coords: NDArray[np.float64] = span * k / (steps - 1)
    return coords


def filter_normalized_directions(
    model: nn.Module, *, seed: int = 0
) -> tuple[Directions, Directions]:
    """Two random filter-normalized directions (Li et al. 2018, Eq. 1), keyed by parameter name.

    Each has the shape, dtype and device of its parameter; parameters with ≤ 1 dimension get
    zeros (biases and normalization parameters are not moved). ``d1`` is drawn entirely before
    ``d2``, parameters in ``named_parameters()`` order, from one CPU generator seeded with ``seed``.

    Args:
        model: the network whose parameters θ the directions are scaled to (not modified).
        seed: seed of the private generator (the global RNG is not touched).

    Returns:
        ``(d1, d2)``, each a dict parameter name → direction tensor.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    params = dict(model.named_parameters())
    return (
        _one_direction(params, generator),
        _one_direction(params, generator),
    )


def _one_direction(params: dict[str, nn.Parameter], generator: torch.Generator) -> Directions:
    direction: Directions = {}
    for name, param in params.items():
        theta = param.detach()
        if theta.dim() <= 1:
            direction[name] = torch.zeros_like(theta)
            continue
        d = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
        w = theta.to(device="cpu", dtype=torch.float64)
        d_norm = d.flatten(1).norm(dim=1)
        w_norm = w.flatten(1).norm(dim=1)
        # A Gaussian filter has norm 0 with probability 0; the clamp only avoids 0/0 there.
        scale = w_norm / d_norm.clamp_min(torch.finfo(torch.float64).tiny)
        d = d * scale.reshape(-1, *([1] * (d.dim() - 1)))
        direction[name] = d.to(device=theta.device, dtype=theta.dtype)
    return direction


def loss_landscape(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    span: float = DEFAULT_SPAN,
    seed: int = 0,
    output: OutputSelector = None,
) -> LandscapeGrid:
    """The filter-normalized 2-D loss slice around the model's weights on the batch ``(x, y)``.

    See the module docstring for the method (Li et al. 2018). One forward of the whole batch per
    grid point (``steps²`` forwards), without gradients; the model is not modified.

    Args:
        model: the classifier; its parameters define θ.
        x: inputs in [0, 1], shape (N, ...); moved to the model's device.
        y: integer labels, shape (N,).
        steps: grid points per axis, odd and ≥ 3 so the centre of the grid is θ itself.
        span: half-width of the grid in units of the directions (> 0).
        seed: seed of the random directions.
        output: where the logits are in the model's output (see :func:`select_logits`).

    Returns:
        The grid: its coordinates, the loss and the accuracy at every point, ``span``, ``seed``
        and the batch size.

    Raises:
        InputError: bad inputs or labels, ``steps`` not an odd integer ≥ 3, ``span`` not > 0.
    """
    check_inputs(x)
    check_labels(y, x.shape[0])
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 3 or steps % 2 == 0:
        raise InputError(
            f"steps must be an odd integer ≥ 3 (so the grid's centre is the trained weights), "
            f"got {steps!r}"
        )
    if isinstance(span, bool) or not isinstance(span, (int, float)) or not math.isfinite(span):
        raise InputError(f"span must be a finite number > 0, got {span!r}")
    if span <= 0:
        raise InputError(f"span must be a finite number > 0, got {span!r}")

    device = model_device(model)
    x, y = x.to(device), y.to(device)
    coords = grid_coordinates(steps, float(span))
    d1, d2 = filter_normalized_directions(model, seed=seed)
    theta = {name: p.detach() for name, p in model.named_parameters()}
    losses = np.empty((steps, steps), dtype=np.float64)
    accuracies = np.empty((steps, steps), dtype=np.float64)
    with eval_mode(model), torch.no_grad():
        for i, alpha in enumerate(coords.tolist()):
            # θ + α·d1 once per row of the grid; β·d2 is added per point.
            row = {name: torch.add(t, d1[name], alpha=alpha) for name, t in theta.items()}
            for j, beta in enumerate(coords.tolist()):
                shifted = {name: torch.add(t, d2[name], alpha=beta) for name, t in row.items()}
                logits = select_logits(functional_call(model, shifted, (x,)), output)
                losses[i, j] = float(F.cross_entropy(logits, y))
                accuracies[i, j] = float((logits.argmax(dim=1) == y).float().mean())
    return LandscapeGrid(
        alphas=coords,
        betas=coords.copy(),
        losses=losses,
        accuracies=accuracies,
        span=float(span),
        seed=seed,
        n_samples=int(x.shape[0]),
    )
