"""RACL: Lipschitz bounds, log-normal algebra, supernet, search and genotypes (lsakit.nas)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from torch import Tensor, nn

from lsakit.errors import ConfigError, InputError
from lsakit.nas import (
    RACL_PUBLISHED,
    SMALL_SEARCH_OPS,
    CellDistribution,
    Genotype,
    GenotypeNetwork,
    LogNormalParameter,
    SearchConfig,
    SearchRecord,
    Supernet,
    batchnorm_factor,
    build_op,
    constraint,
    discretize,
    fenton_wilkinson,
    genotype_network,
    lipschitz,
    load_genotype,
    lognormal_product,
    measured_lipschitz,
    measured_log_lipschitz,
    network_lognormal,
    plot_cell,
    power_iteration_conv,
    power_iteration_linear,
    search,
)
from lsakit.nas.lipschitz import ZERO_LOG, cell_node_lognormals, edges_per_cell
from lsakit.nas.ops import (
    OP_NAMES,
    FactorizedReduce,
    avg_pool_axis_matrix,
    max_windows_per_pixel,
    pool_op,
)
from lsakit.nas.study import search_config, search_for_study
from lsakit.probe import LayerProbe

F64 = torch.float64


def conv_matrix(weight: Tensor, shape: tuple[int, int, int], **kw: int) -> Tensor:
    """The explicit matrix of x ↦ conv2d(x, weight) on (C, H, W), built from unit impulses."""
    n = math.prod(shape)
    impulses = torch.eye(n, dtype=weight.dtype).reshape(n, *shape)
    return F.conv2d(impulses, weight, **kw).reshape(n, -1).T


def jacobian_matrix(fn: object, shape: tuple[int, ...]) -> Tensor:
    """The Jacobian (a matrix) of a linear map on one sample of ``shape``."""
    x = torch.zeros(1, *shape, dtype=F64)
    jac = torch.autograd.functional.jacobian(fn, x)  # type: ignore[arg-type]
    return jac.reshape(-1, math.prod(shape))


# --------------------------------------------------------------------------------------------
# Power iteration and BatchNorm
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("out_f", "in_f"), [(5, 3), (3, 7), (10, 10), (1, 4)])
def test_power_iteration_matches_dense_spectral_norm(out_f: int, in_f: int) -> None:
    layer = nn.Linear(in_f, out_f).double()
    exact = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
    estimate = power_iteration_linear(layer.weight.detach(), iters=200)
    assert float(estimate) == pytest.approx(float(exact), abs=1e-4)


def test_power_iteration_on_a_1x1_conv_is_the_channel_matrix_norm() -> None:
    weight = torch.randn(4, 3, 1, 1, dtype=F64)
    exact = torch.linalg.matrix_norm(weight[:, :, 0, 0], ord=2)
    assert float(power_iteration_conv(weight, (3, 5, 5), iters=200)) == pytest.approx(
        float(exact), abs=1e-6
    )


@pytest.mark.parametrize(
    ("weight_shape", "input_shape", "kw"),
    [
        ((2, 1, 3, 3), (1, 4, 4), {"padding": 1}),
        ((2, 1, 3, 3), (1, 4, 4), {}),
        ((3, 2, 3, 3), (2, 4, 4), {"stride": 2, "padding": 1}),
        ((3, 2, 3, 3), (2, 5, 5), {"stride": 2, "padding": 1}),
        ((2, 1, 3, 3), (2, 5, 5), {"padding": 2, "dilation": 2, "groups": 2}),
    ],
)
def test_power_iteration_matches_the_explicit_conv_matrix(
    weight_shape: tuple[int, ...], input_shape: tuple[int, int, int], kw: dict[str, int]
) -> None:
    weight = torch.randn(*weight_shape, dtype=F64)
    exact = torch.linalg.matrix_norm(conv_matrix(weight, input_shape, **kw), ord=2)
    estimate = power_iteration_conv(
        weight,
        input_shape,
        kw.get("stride", 1),
        kw.get("padding", 0),
        300,
        dilation=kw.get("dilation", 1),
        groups=kw.get("groups", 1),
    )
    assert float(estimate) == pytest.approx(float(exact), abs=1e-4)
    assert float(estimate) <= float(exact) + 1e-9  # converges from below


def test_power_iteration_rejects_mismatched_shapes() -> None:
    with pytest.raises(InputError, match="channels but the weight expects 2"):
        power_iteration_conv(torch.randn(3, 2, 3, 3), (1, 4, 4))
    with pytest.raises(InputError, match=r"\(C_in, H, W\)"):
        power_iteration_conv(torch.randn(3, 2, 3, 3), (2, 4))
    with pytest.raises(InputError, match="4-d conv weight"):
        power_iteration_conv(torch.randn(3, 2), (2, 4, 4))


def test_batchnorm_factor_is_max_gamma_over_sqrt_var() -> None:
    bn = nn.BatchNorm2d(3, eps=0.0)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -3.0, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 9.0, 0.25]))
    # |γ|/√var = 0.5, 1, 4
    assert float(batchnorm_factor(bn)) == pytest.approx(4.0)
    plain = nn.BatchNorm2d(2, affine=False, eps=0.0)
    plain.running_var.copy_(torch.tensor([0.25, 4.0]))
    assert float(batchnorm_factor(plain)) == pytest.approx(2.0)
    with pytest.raises(InputError, match="track_running_stats"):
        batchnorm_factor(nn.BatchNorm2d(2, track_running_stats=False))


def test_batchnorm_factor_is_attained_in_eval_mode() -> None:
    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -2.0, 1.0]))
        bn.running_var.copy_(torch.tensor([1.0, 0.5, 2.0]))
        bn.running_mean.copy_(torch.tensor([0.3, -0.1, 0.0]))
    factor = float(batchnorm_factor(bn))
    x = torch.randn(1, 3, 4, 4)
    delta = torch.zeros_like(x)
    delta[0, 1, 2, 2] = 0.7  # on the channel with the largest |γ|/√(var+ε)
    with torch.no_grad():
        change = torch.linalg.vector_norm(bn(x + delta) - bn(x))
    assert float(change) == pytest.approx(factor * 0.7, rel=1e-5)
    for _ in range(5):
        d = torch.randn_like(x)
        with torch.no_grad():
            moved = float(torch.linalg.vector_norm(bn(x + d) - bn(x)))
        assert moved <= factor * float(torch.linalg.vector_norm(d)) * (1 + 1e-6)


# --------------------------------------------------------------------------------------------
# Op bounds
# --------------------------------------------------------------------------------------------
def test_zero_and_skip_bounds() -> None:
    assert float(lipschitz(build_op("none", 4), (5, 5))) == 0.0
    assert float(lipschitz(build_op("none", 4, stride=2), (5, 5))) == 0.0
    assert float(lipschitz(build_op("skip_connect", 4), (5, 5))) == 1.0


def test_paper_pool_bounds_are_one_and_l2_bounds_are_exact() -> None:
    max_pool = pool_op("max", stride=1, bn_channels=None)
    avg_pool = pool_op("avg", stride=1, bn_channels=None)
    assert float(lipschitz(max_pool, (6, 6))) == 1.0
    assert float(lipschitz(avg_pool, (6, 6))) == 1.0
    # l2 max pool: a pixel lies in 3×3 windows at stride 1, 2×2 at stride 2
    assert float(lipschitz(max_pool, (6, 6), pool_bound="l2")) == pytest.approx(3.0)
    max_pool_2 = pool_op("max", stride=2, bn_channels=None)
    assert float(lipschitz(max_pool_2, (6, 6), pool_bound="l2")) == pytest.approx(2.0)
    assert max_windows_per_pixel(6, 3, 1, 1) == 3
    assert max_windows_per_pixel(6, 3, 2, 1) == 2
    # ...and a single-pixel bump attains 3
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 2, 3] = 1.0
    assert float(torch.linalg.vector_norm(max_pool(x))) == pytest.approx(3.0)


@pytest.mark.parametrize(("size", "stride"), [((4, 4), 1), ((5, 7), 1), ((6, 5), 2), ((28, 28), 1)])
def test_avg_pool_l2_bound_equals_the_explicit_operator_norm(
    size: tuple[int, int], stride: int
) -> None:
    def pool(v: Tensor) -> Tensor:
        return F.avg_pool2d(v, 3, stride, 1, count_include_pad=False)

    exact = torch.linalg.matrix_norm(jacobian_matrix(pool, (1, *size)), ord=2)
    op = pool_op("avg", stride=stride, bn_channels=None)
    assert float(lipschitz(op, size, pool_bound="l2")) == pytest.approx(float(exact), rel=1e-6)


def test_avg_pool_without_padding_count_exceeds_one_near_corners() -> None:
    # the derivation in lsakit.nas.ops: a column sums to 1/4 + 4/6 + 4/9 = 49/36
    matrix_1d = avg_pool_axis_matrix(5, 3, 1, 1, count_include_pad=False)
    a = torch.kron(matrix_1d, matrix_1d)
    assert float(a.sum(1).max()) == pytest.approx(1.0)
    assert float(a.sum(0).max()) == pytest.approx(49 / 36)
    assert 1.0 < float(torch.linalg.matrix_norm(a, ord=2)) <= math.sqrt(49 / 36)


def test_factorized_reduce_bound_is_the_block_norm() -> None:
    torch.manual_seed(1)
    op = FactorizedReduce(3, 4).double().eval()

    def linear_part(x: Tensor) -> Tensor:  # FactorizedReduce without its leading ReLU
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        out: Tensor = torch.cat([op.conv_1(x), op.conv_2(shifted)], 1)
        scale = op.bn.weight / torch.sqrt(op.bn.running_var + op.bn.eps)
        return out * scale.view(1, -1, 1, 1)

    def exact() -> float:
        jac = jacobian_matrix(linear_part, (3, 5, 5))
        return float(torch.linalg.matrix_norm(jac, ord=2))

    with torch.no_grad():  # one BN scale per block: the bound is exact
        op.bn.weight.copy_(torch.tensor([1.0, 0.5, 2.0, 1.0], dtype=F64))
        op.bn.running_var.copy_(torch.tensor([1.0, 0.25, 4.0, 1.0], dtype=F64))
    assert float(lipschitz(op, (5, 5), iters=300)) == pytest.approx(exact(), rel=1e-4)
    sigma_1 = power_iteration_conv(op.conv_1.weight.detach(), (3, 5, 5), 2, 0, 300)
    sigma_2 = power_iteration_conv(op.conv_2.weight.detach(), (3, 5, 5), 2, 0, 300)
    scale = 1 / math.sqrt(1 + op.bn.eps)
    expected = max(float(sigma_1), float(sigma_2)) * scale
    assert float(lipschitz(op, (5, 5), iters=300)) == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():  # uneven scales within a block: an upper bound
        op.bn.weight.copy_(torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=F64))
        op.bn.running_var.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=F64))
    assert exact() <= float(lipschitz(op, (5, 5), iters=300)) * (1 + 1e-6)
    assert op(torch.rand(2, 3, 5, 5, dtype=F64)).shape == (2, 4, 3, 3)


@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("stride", [1, 2])
def test_op_bound_holds_and_output_size_is_known(name: str, stride: int) -> None:
    torch.manual_seed(0)
    op = build_op(name, 4, stride=stride, pool_bn=True).double()
    op.train()
    op(torch.randn(8, 4, 7, 7, dtype=F64))  # move the BN running statistics off 1
    op.eval()
    lam = float(lipschitz(op, (7, 7), iters=200, pool_bound="l2"))
    x = torch.randn(6, 4, 7, 7, dtype=F64)
    y = x + 0.1 * torch.randn_like(x)
    with torch.no_grad():
        fx, fy = op(x), op(y)
    assert fx.shape[-2:] == op.output_spatial((7, 7))
    ratios = torch.linalg.vector_norm((fx - fy).flatten(1), dim=1) / torch.linalg.vector_norm(
        (x - y).flatten(1), dim=1
    )
    assert float(ratios.max()) <= lam * (1 + 1e-3)


def test_ops_use_relu_modules_the_probe_can_see() -> None:
    op = build_op("sep_conv_3x3", 4)
    with LayerProbe(op) as probe:
        op(torch.rand(1, 4, 6, 6))
        reps = probe.take()
    assert len(reps) == 2  # the two ReLUs of a separable conv


# --------------------------------------------------------------------------------------------
# Log-normal algebra
# --------------------------------------------------------------------------------------------
def test_lognormal_product_adds_means_and_variances() -> None:
    m, s = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([3.0, 4.0, 0.0])
    m_p, s_p = lognormal_product(m, s)
    assert float(m_p) == pytest.approx(1.5)
    assert float(s_p) == pytest.approx(5.0)


def test_fenton_wilkinson_matches_monte_carlo_moments() -> None:
    m = torch.tensor([0.1, -0.5, 0.3, 1.0], dtype=F64)
    s = torch.tensor([0.2, 0.4, 0.3, 0.6], dtype=F64)
    g = torch.Generator().manual_seed(0)
    samples = torch.exp(m + s * torch.randn(100_000, 4, generator=g, dtype=F64)).sum(1)
    m_s, s_s = fenton_wilkinson(m, s)
    mean = torch.exp(m_s + s_s**2 / 2)
    var = (torch.exp(s_s**2) - 1) * torch.exp(2 * m_s + s_s**2)
    assert float(mean) == pytest.approx(float(samples.mean()), rel=0.01)
    assert float(var) == pytest.approx(float(samples.var()), rel=0.03)
    # and the closed forms of the spec
    e = torch.exp(m + s**2 / 2).sum()
    v = ((torch.exp(s**2) - 1) * torch.exp(2 * m + s**2)).sum()
    assert float(s_s**2) == pytest.approx(math.log(1 + float(v / e**2)), rel=1e-12)
    assert float(m_s) == pytest.approx(math.log(float(e)) - float(s_s**2) / 2, rel=1e-12)


def test_fenton_wilkinson_of_one_term_is_that_term_and_zeros_drop_out() -> None:
    m_s, s_s = fenton_wilkinson(torch.tensor([0.7]), torch.tensor([0.3]))
    assert float(m_s) == pytest.approx(0.7, abs=1e-6)
    assert float(s_s) == pytest.approx(0.3, abs=1e-6)
    m = torch.tensor([0.2, ZERO_LOG, -math.inf, 0.5], requires_grad=True)
    s = torch.tensor([0.1, 0.5, 0.5, 0.2], requires_grad=True)
    both = fenton_wilkinson(m, s)
    value = (float(both[0].detach()), float(both[1].detach()))
    only = fenton_wilkinson(torch.tensor([0.2, 0.5]), torch.tensor([0.1, 0.2]))
    assert value[0] == pytest.approx(float(only[0]), abs=1e-6)
    assert value[1] == pytest.approx(float(only[1]), abs=1e-6)
    (both[0] + both[1]).backward()
    assert m.grad is not None and s.grad is not None
    assert torch.isfinite(m.grad).all() and torch.isfinite(s.grad).all()
    assert float(m.grad[1]) == 0.0 and float(m.grad[2]) == 0.0


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-3, 3), min_size=1, max_size=5),
    st.floats(0.01, 1.0),
)
def test_fenton_wilkinson_preserves_the_mean(means: list[float], sigma: float) -> None:
    m = torch.tensor(means, dtype=F64)
    s = torch.full_like(m, sigma)
    m_s, s_s = fenton_wilkinson(m, s)
    expected = float(torch.exp(m + s**2 / 2).sum())
    assert math.exp(float(m_s) + float(s_s) ** 2 / 2) == pytest.approx(expected, rel=1e-9)
    assert float(s_s) <= sigma + 1e-12  # averaging independent terms never widens the log


def tiny_cell(sigma: float = 0.0, group: str = "") -> CellDistribution:
    """One node (2 edges) × 2 ops with hand-set medians: edge 0 = 0.5·(1·2 + 1·0), …"""
    return CellDistribution(
        alpha_mu=torch.log(torch.tensor([[1.0, 1.0], [0.5, 2.0]], dtype=F64)),
        alpha_sigma=torch.full((2, 2), sigma, dtype=F64),
        beta_mu=torch.log(torch.tensor([0.5, 0.25], dtype=F64)),
        beta_sigma=torch.full((2,), sigma, dtype=F64),
        lam=torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=F64),
        group=group,
    )


def test_network_lognormal_at_zero_sigma_is_the_deterministic_bound() -> None:
    # node = 0.5·(1·2 + 1·0) + 0.25·(0.5·1 + 2·3) = 1 + 1.625 = 2.625; two cells, C = e^0.5
    mu_f, sigma_f = network_lognormal([tiny_cell(), tiny_cell()], log_c=0.5)
    assert float(mu_f) == pytest.approx(0.5 + 2 * math.log(2.625), rel=1e-9)
    assert float(sigma_f) == pytest.approx(0.0, abs=1e-9)


def test_network_lognormal_matches_monte_carlo_of_the_bound() -> None:
    cell = tiny_cell(sigma=0.2)
    mu_f, sigma_f = network_lognormal([cell])
    g = torch.Generator().manual_seed(1)
    n = 100_000
    alpha = torch.exp(cell.alpha_mu + 0.2 * torch.randn(n, 2, 2, generator=g, dtype=F64))
    beta = torch.exp(cell.beta_mu + 0.2 * torch.randn(n, 2, generator=g, dtype=F64))
    lam_f = (beta * (alpha * cell.lam).sum(2)).sum(1)
    assert math.exp(float(mu_f) + float(sigma_f) ** 2 / 2) == pytest.approx(
        float(lam_f.mean()), rel=0.01
    )
    assert float(sigma_f) == pytest.approx(float(lam_f.log().std()), rel=0.05)


def test_cells_sharing_a_group_are_correlated() -> None:
    _, s_one = network_lognormal([tiny_cell(0.3)])
    _, s_indep = network_lognormal([tiny_cell(0.3), tiny_cell(0.3)])
    _, s_shared = network_lognormal([tiny_cell(0.3, "normal"), tiny_cell(0.3, "normal")])
    assert float(s_indep) == pytest.approx(math.sqrt(2) * float(s_one), rel=1e-9)
    assert float(s_shared) == pytest.approx(2 * float(s_one), rel=1e-9)


def test_cell_node_lognormals_checks_shapes() -> None:
    cell = tiny_cell()
    bad = CellDistribution(
        alpha_mu=cell.alpha_mu,
        alpha_sigma=cell.alpha_sigma,
        beta_mu=cell.beta_mu,
        beta_sigma=cell.beta_sigma[:1],
        lam=cell.lam,
    )
    with pytest.raises(InputError, match="beta_sigma has shape"):
        cell_node_lognormals(bad)
    assert edges_per_cell(3) == 9 and edges_per_cell(4) == 14


@pytest.mark.parametrize("eta", [0.5, 0.9, 0.95, 0.2])
def test_constraint_matches_scipy_quantile(eta: float) -> None:
    mu = torch.tensor(1.3, requires_grad=True)
    sigma = torch.tensor(0.4, requires_grad=True)
    g = constraint(mu, sigma, 2.5, eta)
    assert float(g.detach()) == pytest.approx(1.3 + 0.4 * norm.ppf(eta) - math.log(2.5), abs=1e-6)
    g.backward()
    assert mu.grad is not None and sigma.grad is not None
    assert float(mu.grad) == pytest.approx(1.0)
    assert float(sigma.grad) == pytest.approx(norm.ppf(eta), abs=1e-6)


def test_constraint_rejects_bad_settings() -> None:
    mu, sigma = torch.tensor(0.0), torch.tensor(1.0)
    with pytest.raises(ConfigError, match="eta must lie strictly between 0 and 1"):
        constraint(mu, sigma, 1.0, eta=1.0)
    with pytest.raises(InputError, match="lam_bar"):
        constraint(mu, sigma, 0.0)


# --------------------------------------------------------------------------------------------
# Supernet
# --------------------------------------------------------------------------------------------
def test_reparameterized_samples_have_the_right_median_and_log_moments() -> None:
    param = LogNormalParameter(torch.full((100_000,), 0.3), sigma=0.5)
    torch.manual_seed(3)
    alpha = param.sample().detach()
    assert float(alpha.median()) == pytest.approx(math.exp(0.3), rel=0.02)
    assert float(alpha.log().mean()) == pytest.approx(0.3, abs=0.01)
    assert float(alpha.log().std()) == pytest.approx(0.5, rel=0.02)
    param.eval()
    assert torch.allclose(param(), torch.full((100_000,), math.exp(0.3)))


def test_gradients_reach_mu_and_rho() -> None:
    param = LogNormalParameter(torch.tensor([0.2, -0.1]), sigma=0.3)
    eps = torch.tensor([1.5, -0.5])
    alpha = param.sample(eps)
    alpha.sum().backward()
    assert param.mu.grad is not None and param.rho.grad is not None
    sig = torch.sigmoid(param.rho.detach())  # d softplus(ρ)/dρ
    assert torch.allclose(param.mu.grad, alpha.detach())
    assert torch.allclose(param.rho.grad, alpha.detach() * eps * sig)
    assert float(param.sigma.detach()[0]) == pytest.approx(0.3, rel=1e-6)


def test_supernet_forward_shapes_and_parameter_split_on_mnist_size() -> None:
    net = Supernet(cells=2, nodes=3, channels=8)
    out = net(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10)
    arch, weights = net.arch_parameters(), net.weights()
    assert len(arch) == 4  # μ and ρ of α and β, shared by the normal cells
    assert net.alpha().mu.shape == (9, len(SMALL_SEARCH_OPS))
    assert net.beta().mu.shape == (9,)
    ids = {id(p) for p in arch}
    assert not ids & {id(p) for p in weights}
    assert len(arch) + len(weights) == len(list(net.parameters()))
    # initial medians: α = 1/|O|, β = 1/(j + 2)
    assert torch.allclose(net.alpha().median(), torch.full((9, 6), 1 / 6), atol=1e-3)
    assert torch.allclose(net.beta().median()[:2], torch.full((2,), 0.5))


def test_supernet_with_reduction_cells_and_eval_uses_medians() -> None:
    net = Supernet(cells=3, nodes=2, channels=4, reductions=(1,))
    assert net.cell_types == ("normal", "reduce")
    x = torch.rand(2, 1, 9, 9)
    assert net(x).shape == (2, 10)
    net.eval()
    assert torch.equal(net(x), net(x))  # medians: deterministic
    sizes = net.cell_sizes((1, 9, 9))
    assert [s.out for s in sizes] == [(9, 9), (5, 5), (5, 5)]


def test_supernet_bound_is_differentiable_and_median_mode_is_deterministic() -> None:
    net = Supernet(cells=2, nodes=2, channels=4)
    constants = net.lipschitz_constants((1, 8, 8), iters=5)
    assert [tuple(lam.shape) for lam in constants.lam] == [(5, 6), (5, 6)]
    assert bool((constants.lam[0][:, 0] == 0).all())  # the 'none' op
    mu_f, sigma_f = net.lipschitz_lognormal(constants)
    (mu_f + sigma_f).backward()
    for p in net.arch_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert float(net.alpha().mu.grad[:, 0].abs().sum()) == 0.0  # λ = 0: no pull on 'none'
    median_mu, median_sigma = net.lipschitz_lognormal(constants, median=True)
    assert float(median_sigma.detach()) == pytest.approx(0.0, abs=1e-6)
    assert float(median_mu.detach()) < float(mu_f.detach())  # log-normal mean correction > 0


def test_supernet_rejects_bad_ops() -> None:
    with pytest.raises(ConfigError, match="unknown ops"):
        Supernet(ops=("conv_3x3", "conv_9x9"))
    with pytest.raises(ConfigError, match="besides 'none'"):
        Supernet(ops=("none",))
    with pytest.raises(ConfigError, match="channels must be even"):
        Supernet(cells=3, channels=5, reductions=(1,))


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------
def tiny_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    return x[:16], y[:16], x[16:], y[16:]


def run_tiny_search(lipschitz_on: bool, **kw: object) -> tuple[object, list[SearchRecord]]:
    settings_ = {
        "cells": 2,
        "nodes": 2,
        "channels": 4,
        "epochs": 1,
        "max_steps": 3,
        "batch_size": 4,
        "arch_warmup_epochs": 0,
        "lipschitz": lipschitz_on,
        **kw,
    }
    records: list[SearchRecord] = []
    result = search(SearchConfig(**settings_), *tiny_data(), progress=records.append)  # type: ignore[arg-type]
    return result, records


def test_three_step_search_with_and_without_the_constraint() -> None:
    with_c, rec_with = run_tiny_search(True)
    without, rec_without = run_tiny_search(False)
    assert [r.kind for r in rec_with] == ["step", "step", "step", "epoch"]
    assert [r.kind for r in rec_without] == ["step", "step", "step", "epoch"]
    # the same start: same batches, samples and bound before the first update
    assert rec_with[0].val_loss == rec_without[0].val_loss
    assert rec_with[0].mu_f == rec_without[0].mu_f
    assert rec_with[0].log_lam_bar == rec_without[0].log_lam_bar
    # the dual variable moves only with the constraint (once, at the epoch's end)
    assert all(r.u == 0.0 for r in rec_without)
    assert all(r.u == 0.0 for r in rec_with[:3])
    assert rec_with[-1].g > 0 and rec_with[-1].u == pytest.approx(rec_with[-1].g)  # penalty 1
    assert with_c.u > 0 and without.u == 0.0  # type: ignore[attr-defined]
    for r in rec_with + rec_without:
        assert math.isfinite(r.mu_f) and math.isfinite(r.sigma_f) and math.isfinite(r.g)
    assert isinstance(with_c.genotype, Genotype)  # type: ignore[attr-defined]
    json.dumps(with_c.to_dict())  # type: ignore[attr-defined]


def test_search_dual_update_per_step_and_warmup() -> None:
    _, records = run_tiny_search(True, dual_update="step", max_steps=2, penalty=2.0)
    steps = [r for r in records if r.kind == "step"]
    assert steps[0].u == pytest.approx(max(0.0, 2.0 * steps[0].g))
    _, warm = run_tiny_search(True, epochs=2, arch_warmup_epochs=1, max_steps=1)
    assert [r.kind for r in warm] == ["step", "epoch", "step", "epoch"]
    assert math.isnan(warm[0].val_loss) and math.isnan(warm[1].g) and warm[1].u == 0.0
    assert math.isfinite(warm[2].val_loss) and warm[3].u > 0  # λ̄_F set after the warm-up
    assert warm[2].log_lam_bar == pytest.approx(warm[2].mu_f)  # factor 1: ln λ̄_F = μ_F⁽⁰⁾


def test_the_default_warm_up_leaves_the_architecture_at_least_one_epoch() -> None:
    assert SearchConfig().arch_warmup_epochs == 1  # 5 epochs: the first weight-only
    assert SearchConfig(epochs=2).arch_warmup_epochs == 1
    assert SearchConfig(epochs=1).arch_warmup_epochs == 0  # a one-epoch search: none
    assert SearchConfig(epochs=1).to_dict()["arch_warmup_epochs"] == 0  # recorded resolved
    assert SearchConfig(epochs=3, arch_warmup_epochs=2).arch_warmup_epochs == 2
    _, records = run_tiny_search(True, arch_warmup_epochs=None)  # 1 epoch: architecture steps
    assert all(math.isfinite(r.val_loss) for r in records)


def test_epochs_count_from_one_and_the_lines_show_g_and_u_once_they_exist() -> None:
    _, warm = run_tiny_search(True, epochs=2, arch_warmup_epochs=1, max_steps=1)
    assert [(r.kind, r.epoch, r.step) for r in warm] == [
        ("step", 1, 1), ("epoch", 1, 1), ("step", 2, 2), ("epoch", 2, 2),
    ]  # fmt: skip
    first, second = warm[1], warm[3]
    assert first.describe() == (
        f"epoch 1 (weight-only warm-up): train loss {first.train_loss:.4f}, "
        f"μ_F {first.mu_f:.3f}, σ_F {first.sigma_f:.3f}, val acc {first.val_accuracy:.3f}"
    )
    assert second.describe() == (
        f"epoch 2: train loss {second.train_loss:.4f}, μ_F {second.mu_f:.3f}, "
        f"σ_F {second.sigma_f:.3f}, g {second.g:+.3f}, u {second.u:.3f}, "
        f"val acc {second.val_accuracy:.3f}"
    )
    assert warm[2].describe().startswith(f"step 2: train loss {warm[2].train_loss:.4f}, ")


def test_a_one_epoch_search_command_runs_and_prints_its_progress(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    shared_data: Path,
) -> None:
    from helpers import run_cli

    monkeypatch.setenv("LSAKIT_PROGRESS_INTERVAL", "0")  # a line for every step
    code, out, err = run_cli(["search", "--cells", "1", "--nodes", "2", "--channels", "4",
                              "--epochs", "1", "--limit", "256", "--out", str(tmp_path),
                              "--data-dir", str(shared_data)], capsys)  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    # 128 training images in batches of 64: two steps of epoch 1 of 1
    steps = [line.split(",")[0] for line in lines if line.startswith("epoch 1/1: ")]
    assert steps == ["epoch 1/1: 1/2 steps (50%)", "epoch 1/1: 2/2 steps (100%)"]
    (epoch,) = [line for line in lines if line.startswith("epoch 1: ")]  # counted from 1
    assert ", g " in epoch and ", u " in epoch and "nan" not in out
    saved = json.loads((tmp_path / "search.json").read_text())
    assert saved["config"]["arch_warmup_epochs"] == 0
    assert [r["epoch"] for r in saved["history"]] == [1, 1, 1]


def test_search_config_and_data_validation() -> None:
    with pytest.raises(ConfigError, match="eta must lie strictly"):
        SearchConfig(eta=1.5)
    with pytest.raises(ConfigError, match="dual_update must be one of epoch, step"):
        SearchConfig(dual_update="batch")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"reduction cell positions must lie in \[0, 2\)"):
        SearchConfig(cells=2, reductions=(2,))
    with pytest.raises(ConfigError, match="would never be trained; lower arch_warmup_epochs"):
        SearchConfig(epochs=2, arch_warmup_epochs=2)
    x, y, xv, yv = tiny_data()
    with pytest.raises(InputError, match="outside \\[0, 1\\]"):
        search(SearchConfig(), x * 3, y, xv, yv)
    with pytest.raises(InputError, match="images"):
        search(SearchConfig(), x.flatten(1), y, xv.flatten(1), yv)


# --------------------------------------------------------------------------------------------
# Genotypes
# --------------------------------------------------------------------------------------------
def test_discretize_picks_the_known_argmax() -> None:
    net = Supernet(cells=1, nodes=2, channels=4)  # 5 edges: node 0 ← {0, 1}, node 1 ← {0, 1, 2}
    ops = list(net.op_names)  # none, max_pool, avg_pool, skip, conv_3x3, sep_conv_3x3
    mu = torch.full((5, 6), -5.0)
    mu[:, 0] = 3.0  # 'none' is the largest everywhere and must be ignored
    mu[0, ops.index("conv_3x3")] = 1.0
    mu[1, ops.index("skip_connect")] = 0.5
    mu[2, ops.index("max_pool_3x3")] = 0.2  # node 1, input 0: weak
    mu[3, ops.index("sep_conv_3x3")] = 2.0  # node 1, input 1: strongest
    mu[4, ops.index("avg_pool_3x3")] = 1.0  # node 1, input 2
    with torch.no_grad():
        net.alpha().mu.copy_(mu)
        net.beta().mu.zero_()
    genotype = discretize(net)
    assert genotype.normal == (
        ("conv_3x3", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 1),
        ("avg_pool_3x3", 2),
    )
    assert genotype.normal_concat == (2, 3)
    assert genotype.reduce == ()
    # β decides between inputs: make input 0 of node 1 dominant
    with torch.no_grad():
        net.beta().mu[2] = 5.0
    assert discretize(net).normal[2] == ("max_pool_3x3", 0)
    assert discretize(net, use_beta=False).normal[2] == ("sep_conv_3x3", 1)
    # the lower bound exp(μ − zσ) penalizes an uncertain op
    with torch.no_grad():
        net.beta().mu.zero_()
        net.alpha().rho[3, ops.index("sep_conv_3x3")] = 5.0  # σ ≈ 5
    assert discretize(net, "median").normal[2] == ("sep_conv_3x3", 1)
    assert discretize(net, "lower_bound", z=1.0).normal[2:] == (
        ("avg_pool_3x3", 2),
        ("max_pool_3x3", 0),
    )


def test_genotype_json_round_trip_and_darts_format() -> None:
    text = RACL_PUBLISHED.to_json()
    assert Genotype.from_json(text) == RACL_PUBLISHED
    assert Genotype.from_dict(json.loads(text)) == RACL_PUBLISHED
    assert str(RACL_PUBLISHED).startswith(
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_5x5', 0)"
    )
    assert RACL_PUBLISHED.nodes("normal") == 4 and RACL_PUBLISHED.reduce_concat == (2, 3, 4, 5)
    small = Genotype(normal=[["skip_connect", 0], ["conv_3x3", 1]], normal_concat=[2])
    assert Genotype.from_json(small.to_json()) == small


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"normal": [["conv_9x9", 0], ["skip_connect", 1]], "normal_concat": [2]}, "unknown op"),
        (
            {"normal": [["skip_connect", 0], ["skip_connect", 2]], "normal_concat": [2]},
            "reads input 2",
        ),
        ({"normal": [["skip_connect", 0]], "normal_concat": [2]}, "2 per node"),
        (
            {"normal": [["skip_connect", 0], ["skip_connect", 1]], "normal_concat": [3]},
            "intermediate nodes",
        ),
        ({"normal": [["skip_connect", 0], ["skip_connect", 1]]}, "needs normal and normal_concat"),
    ],
)
def test_genotype_rejects_bad_content(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Genotype.from_dict(data)


def test_genotype_network_from_the_published_cell_runs_forward() -> None:
    net = GenotypeNetwork(RACL_PUBLISHED, cells=3, channels=4, reductions=(1, 2))
    assert net(torch.rand(2, 1, 12, 12)).shape == (2, 10)
    flat = GenotypeNetwork(RACL_PUBLISHED, cells=2, channels=4, in_channels=3, num_classes=5)
    assert flat(torch.rand(2, 3, 8, 8)).shape == (2, 5)
    with pytest.raises(ConfigError, match="no reduce cell"):
        GenotypeNetwork(
            Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)], normal_concat=[2]),
            cells=3,
            reductions=(1,),
        )
    lam = measured_lipschitz(net, (1, 12, 12), iters=20)
    assert lam.dtype == F64 and math.isfinite(float(lam)) and float(lam) > 0
    assert float(measured_log_lipschitz(net, (1, 12, 12), iters=5)) == pytest.approx(
        math.log(float(lam)), rel=1e-2
    )


def test_measured_lipschitz_is_the_product_formula() -> None:
    # one cell, one node fed by two skips: λ_F = λ_stem · max(λ_pre0, λ_pre1) · 1 · ‖W‖ · (1 + 1)
    genotype = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)], normal_concat=[2])
    net = GenotypeNetwork(genotype, cells=1, channels=3, stem_multiplier=2).double()
    eps = 1e-5
    stem = power_iteration_conv(net.stem[0].weight.detach(), (1, 6, 6), 1, 1, 300)
    cell = net.cells[0]
    pre = [
        torch.linalg.matrix_norm(p.layers[1].weight.detach()[:, :, 0, 0], ord=2)  # type: ignore[union-attr,index]
        for p in (cell.preprocess0, cell.preprocess1)
    ]
    fc = torch.linalg.matrix_norm(net.classifier.weight.detach(), ord=2)
    bn = 1 / math.sqrt(1 + eps)  # fresh BNs: running var 1, γ = 1
    expected = float(stem) * bn * float(max(pre)) * bn * float(fc) * 2.0
    assert float(measured_lipschitz(net, (1, 6, 6), iters=300)) == pytest.approx(expected, rel=1e-4)
    # the ℓ2 convention adds the global average pool's 1/√(HW)
    l2 = measured_lipschitz(net, (1, 6, 6), iters=300, pool_bound="l2")
    assert float(l2) == pytest.approx(expected / 6.0, rel=1e-4)


def test_measured_lipschitz_of_a_supernet_uses_the_medians() -> None:
    net = Supernet(cells=1, nodes=1, channels=4)
    constants = net.lipschitz_constants((1, 6, 6), iters=400)
    lam = constants.lam[0]  # (2 edges, 6 ops)
    alpha, beta = net.alpha().median().detach(), net.beta().median().detach()
    expected = constants.log_c + torch.log((beta * (alpha * lam).sum(1)).sum())
    median_mu, _ = net.lipschitz_lognormal(constants, median=True)
    assert float(median_mu.detach()) == pytest.approx(float(expected), rel=1e-6)
    # measured_log_lipschitz recomputes λ_o (warm-started, so within power-iteration accuracy)
    measured = measured_log_lipschitz(net, (1, 6, 6), iters=400)
    assert float(measured) == pytest.approx(float(expected), rel=1e-3)


def test_plot_cell_writes_a_png(tmp_path: Path) -> None:
    path = plot_cell(RACL_PUBLISHED, tmp_path / "cells" / "racl.png", title="RACL")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    small = Genotype(normal=[("skip_connect", 0), ("conv_3x3", 1)], normal_concat=[2])
    assert plot_cell(small, tmp_path / "small.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="no reduce cell"):
        plot_cell(small, tmp_path / "x.png", kinds=["reduce"])


def test_genotype_network_builder_takes_names_json_and_result_files(tmp_path: Path) -> None:
    net = genotype_network(channels=4)
    assert net.genotype == RACL_PUBLISHED and net.reductions == (1, 2)  # DARTS positions
    assert net(torch.rand(2, 1, 12, 12)).shape == (2, 10)
    small = Genotype(normal=[("skip_connect", 0), ("conv_3x3", 1)], normal_concat=[2])
    assert genotype_network(genotype=small.to_json(), channels=4).reductions == ()
    result_file = tmp_path / "result.json"
    result_file.write_text(json.dumps({"genotype": small.to_dict(), "mu_f": 1.0}))
    assert load_genotype(str(result_file)) == small
    both = genotype_network(genotype=str(result_file), channels=4, reduce_from_normal=True)
    assert both.genotype.reduce == small.normal and both.reductions == (1, 2)
    assert both(torch.rand(1, 1, 9, 9)).shape == (1, 10)
    with pytest.raises(ConfigError, match="neither a known name"):
        load_genotype("darts_v3")


def test_genotype_network_lipschitz_bound_uses_the_last_input_shape() -> None:
    net = GenotypeNetwork(RACL_PUBLISHED, cells=2, channels=4)
    with pytest.raises(ConfigError, match="needs the input shape"):
        net.lipschitz_bound()
    net(torch.rand(2, 1, 8, 8))
    expected = float(measured_lipschitz(net, (1, 8, 8), iters=5))
    # the same bound (the second call's warm-started power iterations move it a little)
    assert net.lipschitz_bound(iters=5) == pytest.approx(expected, rel=1e-2)


# --------------------------------------------------------------------------------------------
# The study step
# --------------------------------------------------------------------------------------------
def test_search_config_from_study_settings() -> None:
    config = search_config({"reductions": [1], "cells": 3, "seed": 7, "limit": 100}, seed=2)
    assert config.reductions == (1,) and config.seed == 2
    with pytest.raises(ConfigError, match=r"unknown search settings \['epoch'\]"):
        search_config({"epoch": 3}, seed=0)


def test_search_for_study_writes_the_genotype_and_returns_metrics(
    shared_data: Path, tmp_path: Path
) -> None:
    settings = {
        "limit": 16,
        "cells": 1,
        "nodes": 2,
        "channels": 2,
        "epochs": 1,
        "arch_warmup_epochs": 0,
        "batch_size": 8,
        "max_steps": 1,
        "power_iters": 1,
    }
    metrics = search_for_study(
        "mnist", settings, 0, tmp_path / "run" / "genotype.json", data_dir=shared_data
    )
    assert set(metrics) == {"mu_F", "sigma_F", "mu_F target (ln λ̄_F)"}
    assert all(math.isfinite(v) for v in metrics.values())
    genotype = load_genotype(str(tmp_path / "run" / "genotype.json"))
    assert genotype.nodes() == 2
    saved = json.loads((tmp_path / "run" / "search.json").read_text())
    assert saved["genotype"] == genotype.to_dict() and saved["mu_f"] == metrics["mu_F"]
    assert (tmp_path / "run" / "cell.png").read_bytes()[:4] == b"\x89PNG"
    net = genotype_network(genotype=str(tmp_path / "run" / "genotype.json"), channels=2)
    assert net(torch.rand(1, 1, 28, 28)).shape == (1, 10)
