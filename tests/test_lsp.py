"""LSP, local structure preserving regularization (lsakit.train.lsp)."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from helpers import modes, tiny_cnn, tiny_mlp
from lsakit import models
from lsakit.errors import ConfigError, InputError
from lsakit.probe import LayerProbe
from lsakit.train.lsp import (
    DEFAULT_WEIGHT,
    LocalStructureRegularizer,
    embedding_affinities,
    embedding_knn_overlap,
    input_affinities,
    knn_indices,
    knn_overlap,
    lsp_kl_loss,
    lsp_laplacian_loss,
    penultimate_layer,
)


def col(values: list[float], grad: bool = False) -> Tensor:
    """Points on a line as a (N, 1) float64 batch."""
    return torch.tensor([[v] for v in values], dtype=torch.float64, requires_grad=grad)


def val(t: Tensor) -> float:
    """A 0-d tensor's value, without autograd's warning for tensors that require grad."""
    return float(t.detach())


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


LINE = [0.0, 1.0, 3.0]  # squared distances: d01 = 1, d02 = 9, d12 = 4


# --------------------------------------------------------------------------------------------
# Affinities: exact values on hand-built points
# --------------------------------------------------------------------------------------------
def test_median_affinities_of_three_points_on_a_line() -> None:
    # Two candidates per row, so s_i² is the mean of the two: 5, 2.5, 6.5.
    # p_{j|i} = softmax over the two of −d²/(2 s_i²): a logistic in the logit difference.
    p = input_affinities(col(LINE))
    expected = torch.tensor(
        [
            [0.0, sigmoid((9 - 1) / 10), sigmoid(-(9 - 1) / 10)],
            [sigmoid((4 - 1) / 5), 0.0, sigmoid(-(4 - 1) / 5)],
            [sigmoid(-(9 - 4) / 13), sigmoid((9 - 4) / 13), 0.0],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(p, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert p.requires_grad is False


def test_median_heuristic_uses_the_median_not_the_mean() -> None:
    # Row 0 of 0, 1, 3, 7: d² = 1, 9, 49, median 9 (the mean would be 59/3): s_0² = 9.
    p = input_affinities(col([0.0, 1.0, 3.0, 7.0]))
    weights = [math.exp(-d / 18) for d in (1.0, 9.0, 49.0)]
    expected = [0.0] + [w / sum(weights) for w in weights]
    assert p[0].tolist() == pytest.approx(expected, rel=1e-12)


def test_k_restricts_each_row_to_its_nearest_neighbours() -> None:
    # k = 1: every row is one-hot on its nearest point (0→1, 1→0, 3→1).
    p1 = input_affinities(col(LINE), k=1)
    assert p1.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    # k = 2 among 0, 1, 3, 7: row 0 keeps {1, 3} (d² 1, 9; s² = 5), exactly the 3-point row.
    p2 = input_affinities(col([0.0, 1.0, 3.0, 7.0]), k=2)
    assert float(p2[0, 1]) == pytest.approx(sigmoid(0.8), rel=1e-12)
    assert float(p2[0, 3]) == 0.0
    assert (p2 > 0).sum(dim=1).tolist() == [2, 2, 2, 2]


def test_perplexity_calibrates_each_row_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(20, 5, generator=g, dtype=torch.float64)
    for perplexity in (1.5, 4.0, 10.0):
        p = input_affinities(x, bandwidth="perplexity", perplexity=perplexity)
        entropy = torch.special.entr(p).sum(dim=1)
        torch.testing.assert_close(
            entropy, torch.full((20,), math.log(perplexity), dtype=torch.float64)
        )
    # With k = 3 candidates a perplexity of 3 or more is out of reach: rows are uniform.
    uniform = input_affinities(x, bandwidth="perplexity", perplexity=30.0, k=3)
    assert sorted(set(uniform[uniform > 0].tolist())) == pytest.approx([1 / 3])


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 9),
    st.integers(0, 2**16),
    st.floats(0.1, 10.0),
    st.sampled_from(["median", "perplexity"]),
)
def test_affinities_are_row_stochastic_and_scale_and_shift_invariant(
    n: int, seed: int, scale: float, bandwidth: Any
) -> None:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    p = input_affinities(x, bandwidth=bandwidth, perplexity=2.0)
    assert bool((p >= 0).all()) and float(p.diagonal().abs().max()) == 0.0
    torch.testing.assert_close(p.sum(dim=1), torch.ones(n, dtype=torch.float64))
    moved = input_affinities(scale * x + 3.0, bandwidth=bandwidth, perplexity=2.0)
    torch.testing.assert_close(moved, p, rtol=1e-6, atol=1e-9)


def test_embedding_affinities_equal_input_affinities_but_keep_the_graph() -> None:
    z = col(LINE, grad=True)
    q = embedding_affinities(z)
    torch.testing.assert_close(q.detach(), input_affinities(col(LINE)))
    assert q.requires_grad


def test_inputs_are_flattened_per_sample() -> None:
    x = torch.rand(5, 2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(input_affinities(x), input_affinities(x.flatten(1)))


# --------------------------------------------------------------------------------------------
# The KL form
# --------------------------------------------------------------------------------------------
def test_kl_is_zero_when_the_embedding_is_the_input_up_to_scale_and_shift() -> None:
    x = torch.rand(8, 3, dtype=torch.float64)
    assert float(lsp_kl_loss(x, x.clone())) == pytest.approx(0.0, abs=1e-12)
    assert float(lsp_kl_loss(x, 2.5 * x - 1.0)) == pytest.approx(0.0, abs=1e-12)
    perp = lsp_kl_loss(x, 4.0 * x, bandwidth="perplexity", perplexity=3.0)
    assert float(perp) == pytest.approx(0.0, abs=1e-9)


def test_kl_is_positive_when_the_embedding_scrambles_neighbourhoods() -> None:
    x = col([0.0, 1.0, 10.0, 11.0])  # pairs {0, 1} and {2, 3}
    kept = col([0.0, 2.0, 20.0, 22.0])
    scrambled = col([0.0, 10.0, 1.0, 11.0])  # now 0 sits next to 2 and 1 next to 3
    assert float(lsp_kl_loss(x, kept)) == pytest.approx(0.0, abs=1e-12)
    assert float(lsp_kl_loss(x, scrambled)) > 0.1
    # The hand value: P rows of 0..3 and Q of the scrambled line, each over three candidates.
    p, q = input_affinities(x), input_affinities(scrambled)
    by_hand = sum(
        float(p[i, j]) * math.log(float(p[i, j]) / float(q[i, j]))
        for i in range(4)
        for j in range(4)
        if i != j
    )
    assert float(lsp_kl_loss(x, scrambled)) == pytest.approx(by_hand / 4, rel=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(3, 8), st.integers(0, 2**16), st.sampled_from([None, 1, 2]))
def test_kl_is_nonnegative(n: int, seed: int, k: int | None) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 4, generator=g, dtype=torch.float64)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    assert float(lsp_kl_loss(x, z, k=k)) >= -1e-12


def test_kl_with_k_is_still_lowest_for_a_neighbourhood_preserving_embedding() -> None:
    # With k, P is restricted but Q is not, so even z = 3x leaves a positive KL (documented);
    # scrambling the pairs still costs more. Measured: median 1.05 vs 1.95, perplexity 1.5:
    # 0.10 vs 6.11.
    x = col([0.0, 1.0, 10.0, 11.0, 20.0, 21.0])
    scrambled = col([0.0, 10.0, 20.0, 1.0, 11.0, 21.0])
    assert float(lsp_kl_loss(x, 3.0 * x, k=1)) + 0.5 < float(lsp_kl_loss(x, scrambled, k=1))
    options: dict[str, Any] = {"k": 1, "bandwidth": "perplexity", "perplexity": 1.5}
    kept = float(lsp_kl_loss(x, 3.0 * x, **options))
    assert kept < 0.2 and kept + 5.0 < float(lsp_kl_loss(x, scrambled, **options))


# --------------------------------------------------------------------------------------------
# The Laplacian form
# --------------------------------------------------------------------------------------------
def test_laplacian_exact_value_on_three_points() -> None:
    # kNN (k = 1) of 0, 1, 3: 0→1 (d² 1), 1→0 (d² 1), 3→1 (d² 4); t = median(1, 1, 4) = 1.
    x = col(LINE)
    z = col([0.0, 2.0, 5.0])  # ‖z_i − z_j‖² on those pairs: 4, 4, 9
    numerator = (4 * math.exp(-1) + 4 * math.exp(-1) + 9 * math.exp(-4)) / 3
    centred = (49 + 1 + 64) / 9 / 3  # z̄ = 7/3
    raw = (0 + 4 + 25) / 3
    assert float(lsp_laplacian_loss(x, z, k=1)) == pytest.approx(numerator / centred, rel=1e-12)
    assert float(lsp_laplacian_loss(x, z, k=1, centered=False)) == pytest.approx(
        numerator / raw, rel=1e-12
    )
    with_t = (4 * math.exp(-1 / 2) * 2 + 9 * math.exp(-4 / 2)) / 3 / centred
    assert float(lsp_laplacian_loss(x, z, k=1, t=2.0)) == pytest.approx(with_t, rel=1e-12)


def test_laplacian_default_is_shift_invariant_and_the_raw_form_is_not() -> None:
    x = torch.rand(6, 3, dtype=torch.float64)
    z = torch.randn(6, 4, dtype=torch.float64)
    base = float(lsp_laplacian_loss(x, z, k=2))
    assert float(lsp_laplacian_loss(x, z + 100.0, k=2)) == pytest.approx(base, rel=1e-9)
    assert float(lsp_laplacian_loss(x, 7.0 * z, k=2)) == pytest.approx(base, rel=1e-9)
    raw = float(lsp_laplacian_loss(x, z, k=2, centered=False))
    assert float(lsp_laplacian_loss(x, z + 100.0, k=2, centered=False)) < raw / 100


# --------------------------------------------------------------------------------------------
# Gradients and degenerate batches
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "loss",
    [
        lambda x, z: lsp_kl_loss(x, z),
        lambda x, z: lsp_kl_loss(x, z, bandwidth="perplexity", perplexity=2.0, k=2),
        lambda x, z: lsp_laplacian_loss(x, z, k=2),
    ],
    ids=["kl", "kl-perplexity-knn", "laplacian"],
)
def test_gradient_flows_to_z_and_not_to_x(loss: Any) -> None:
    x = torch.rand(6, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    loss(x, z).backward()
    assert x.grad is None
    assert z.grad is not None and bool(torch.isfinite(z.grad).all())
    assert float(z.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "loss",
    [
        lambda x, z: lsp_kl_loss(x, z),
        lambda x, z: lsp_kl_loss(x, z, k=2),
        lambda x, z: lsp_kl_loss(x, z, bandwidth="perplexity", perplexity=2.0),
        lambda x, z: lsp_laplacian_loss(x, z, k=2),
        lambda x, z: lsp_laplacian_loss(x, z, k=2, centered=False),
    ],
    ids=["kl", "kl-knn", "kl-perplexity", "laplacian", "laplacian-raw"],
)
def test_duplicates_and_identical_points_give_no_nan(loss: Any) -> None:
    dup_x = torch.tensor([[0.2, 0.2], [0.2, 0.2], [0.2, 0.2], [0.9, 0.1], [0.5, 0.5]])
    dup_z = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    for x, z in [
        (dup_x, dup_z),
        (torch.zeros(5, 2), torch.zeros(5, 2)),  # every point identical
        (torch.rand(5, 2), dup_z),
        (dup_x, torch.randn(5, 2)),
    ]:
        z = z.clone().requires_grad_(True)
        value = loss(x, z)
        value.backward()
        assert math.isfinite(float(value.detach())), (x, z)
        assert z.grad is not None and bool(torch.isfinite(z.grad).all())


def test_all_identical_embeddings_have_zero_gradient() -> None:
    z = torch.zeros(4, 3, requires_grad=True)
    lsp_kl_loss(torch.rand(4, 2), z).backward()
    assert z.grad is not None and float(z.grad.abs().max()) == 0.0


# --------------------------------------------------------------------------------------------
# k-NN overlap
# --------------------------------------------------------------------------------------------
def test_knn_overlap_exact_values() -> None:
    x = col([0.0, 1.0, 10.0, 11.0])  # nearest: 0↔1, 2↔3
    assert knn_overlap(x, x, 1) == 1.0
    assert knn_overlap(x, 3.0 * x + 2.0, 2) == 1.0
    # Neighbourhoods swapped: in z, 0's nearest is 2 and 1's nearest is 3 (and back).
    assert knn_overlap(x, col([0.0, 10.0, 1.0, 11.0]), 1) == 0.0
    # z = 0, 8, 10, 11: 1's nearest becomes 2 (distance 2 < 8); the other three keep theirs.
    assert knn_overlap(x, col([0.0, 8.0, 10.0, 11.0]), 1) == 0.75
    assert knn_indices(x, 1).flatten().tolist() == [1, 0, 3, 2]


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 10), st.integers(0, 2**16), st.data())
def test_knn_overlap_matches_a_brute_force_count(n: int, seed: int, data: Any) -> None:
    k = data.draw(st.integers(1, n - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g, dtype=torch.float64)
    z = torch.rand(n, 2, generator=g, dtype=torch.float64)

    def neighbours(points: Tensor, i: int) -> set[int]:
        dist = [(float(((points[i] - points[j]) ** 2).sum()), j) for j in range(n) if j != i]
        return {j for _, j in sorted(dist)[:k]}

    expected = sum(len(neighbours(x, i) & neighbours(z, i)) for i in range(n)) / (n * k)
    assert knn_overlap(x, z, k) == pytest.approx(expected, abs=1e-12)


def test_embedding_knn_overlap_reads_the_layer_in_eval_mode_without_grad() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            [
                ("flatten", nn.Flatten()),
                ("drop", nn.Dropout(0.9)),  # in train mode this would scramble the embedding
                ("fc", nn.Linear(4, 2)),
            ]
        )
    )
    model.train()
    before = modes(model)
    x = torch.rand(12, 1, 2, 2)
    assert penultimate_layer(model) == "drop"
    # Eval-mode dropout is the identity, so the embedding is x itself.
    assert embedding_knn_overlap(model, None, x, 3, batch_size=5) == 1.0
    assert modes(model) == before
    assert all(p.grad is None for p in model.parameters())
    mixed = embedding_knn_overlap(model, "fc", x, 3)
    assert 0.0 <= mixed <= 1.0


# --------------------------------------------------------------------------------------------
# Penultimate layer
# --------------------------------------------------------------------------------------------
def test_penultimate_layer_of_the_registered_models() -> None:
    assert penultimate_layer(models.build("model_b")) == "relu4"
    assert penultimate_layer(models.build("model_a")) == "elu3"
    assert penultimate_layer(tiny_mlp()) == "3"
    assert penultimate_layer(tiny_cnn()) == "8"
    assert penultimate_layer(models.build("model_b"), torch.rand(2, 1, 28, 28)) == "relu4"


class _HeadFirst(nn.Module):
    """Registers its head before its body: registration order is not the forward order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 2)
        self.body = nn.Linear(3, 6)
        self.act = nn.Tanh()
        self.extra = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.extra(self.act(self.body(x))) * 2.0)
        return out


def test_penultimate_layer_checks_the_forward_when_given_an_example() -> None:
    model = _HeadFirst()
    # Registration order: head, body, act, extra → the last Linear is body, fed by head.
    assert penultimate_layer(model) == "head"
    with pytest.raises(ConfigError, match="does not feed it in the forward pass"):
        penultimate_layer(model, torch.rand(4, 3))


def test_penultimate_layer_errors() -> None:
    with pytest.raises(ConfigError, match=r"has no nn\.Linear"):
        penultimate_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    with pytest.raises(ConfigError, match="first layer"):
        penultimate_layer(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(InputError, match=r"nn\.Module"):
        penultimate_layer("model_b")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The regularizer
# --------------------------------------------------------------------------------------------
def test_regularizer_is_weight_times_the_loss() -> None:
    x = torch.rand(6, 3, dtype=torch.float64)
    z = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    reg = LocalStructureRegularizer(weight=0.5, k=2, bandwidth="perplexity", perplexity=1.5)
    value = reg(x, z)
    expected = lsp_kl_loss(x, z, k=2, bandwidth="perplexity", perplexity=1.5)
    assert val(value) == pytest.approx(0.5 * val(expected), rel=1e-12)
    assert reg.last_loss is not None and val(reg.last_loss) == pytest.approx(val(expected))
    assert value.requires_grad and not reg.last_loss.requires_grad
    lap = LocalStructureRegularizer(weight=2.0, variant="laplacian", k=1, t=0.3, centered=False)
    assert val(lap(x, z)) == pytest.approx(
        2.0 * val(lsp_laplacian_loss(x, z, k=1, t=0.3, centered=False)), rel=1e-12
    )
    assert val(LocalStructureRegularizer(weight=0)(x, z)) == 0.0


def test_clean_plus_adversarial_uses_the_union_and_clean_ignores_x_adv() -> None:
    x = torch.rand(5, 3, dtype=torch.float64)
    x_adv = (x + 0.01).clamp(0, 1)
    z, z_adv = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    union = LocalStructureRegularizer(weight=1.0, on="clean+adv")
    both = union(x, z, x_adv, z_adv)
    assert float(both) == pytest.approx(
        float(lsp_kl_loss(torch.cat([x, x_adv]), torch.cat([z, z_adv]))), rel=1e-12
    )
    clean = LocalStructureRegularizer(weight=1.0)
    assert float(clean(x, z, x_adv, z_adv)) == pytest.approx(float(lsp_kl_loss(x, z)), rel=1e-12)
    with pytest.raises(InputError, match="z_adv is missing"):
        union(x, z, x_adv)
    with pytest.raises(InputError, match="x_adv is missing"):
        union(x, z)
    with pytest.raises(InputError, match="adversarial batch must match"):
        union(x, z, x_adv[:4], z_adv[:4])


def test_describe_and_probe_layers() -> None:
    reg = LocalStructureRegularizer(weight=0.1, on="clean+adv", k=5)
    assert reg.describe() == {
        "method": "lsp",
        "variant": "kl",
        "weight": 0.1,
        "layer": None,
        "on": "clean+adv",
        "k": 5,
        "bandwidth": "median",
        "perplexity": 30.0,
    }
    lap = LocalStructureRegularizer(variant="laplacian", k=3, layer="L1")
    assert lap.describe()["t"] is None and lap.describe()["centered"] is True
    assert "variant='laplacian'" in repr(lap)
    model = models.build("model_b")
    assert reg.probe_layers(model) == ["relu4"]
    assert lap.probe_layers(model) == ["L1"]
    assert LocalStructureRegularizer(layer="fc1").probe_layers(model) == ["fc1"]
    with pytest.raises(ConfigError, match="did you mean relu4"):
        LocalStructureRegularizer(layer="relu_4").probe_layers(model)


def test_regularizer_trains_through_a_probe() -> None:
    model = tiny_mlp()
    reg = LocalStructureRegularizer(weight=1.0, on="clean+adv")
    x = torch.rand(8, 4)
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    with LayerProbe(model, reg.probe_layers(model), detach=False) as probe:
        model(x)
        (z,) = probe.take()
        model(x_adv)
        (z_adv,) = probe.take()
    reg(x, z, x_adv, z_adv).backward()
    grads = [p.grad for p in model[:3].parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert model[4].weight.grad is None  # the head is after the embedding


def _train_overlap(weight: float, seed: int, steps: int = 50, k: int = 5) -> float:
    """tiny_mlp on 64 points of a 3-class linear rule: Adam 1e-3, CE + λ·L_LSP (KL, median)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(64, 4, generator=g)
    rule = torch.tensor([[1.0, -1, 0], [0, 1, -1], [-1, 0, 1], [0.5, 0.5, -1]])
    y = (x @ rule).argmax(dim=1)
    model = tiny_mlp(seed)
    reg = LocalStructureRegularizer(weight=weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with LayerProbe(model, reg.probe_layers(model), detach=False) as probe:
        for _ in range(steps):
            logits = model(x)
            (z,) = probe.take()
            loss = F.cross_entropy(logits, y) + reg(x, z)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return embedding_knn_overlap(model, None, x, k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lsp_raises_the_knn_overlap_of_the_penultimate_layer(seed: int) -> None:
    # Measured (λ = 10 vs 0, 8 seeds): gains +0.09 … +0.37 in overlap (k = 5); seeds 0, 1, 2 gain
    # +0.14, +0.25, +0.37. The margin 0.05 leaves room for float differences across platforms.
    assert _train_overlap(10.0, seed) > _train_overlap(0.0, seed) + 0.05


# --------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight": -1.0}, r"weight \(λ\) must be a finite number ≥ 0"),
        ({"weight": math.nan}, r"weight \(λ\) must be a finite number"),
        ({"weight": True}, r"weight \(λ\) must be a number"),
        ({"variant": "tsne"}, "variant must be one of kl, laplacian"),
        ({"on": "adv"}, r"on must be one of clean, clean\+adv"),
        ({"k": 0}, "k must be an integer ≥ 1"),
        ({"k": 2.5}, "k must be an integer ≥ 1"),
        ({"bandwidth": "silverman"}, "bandwidth must be one of median, perplexity"),
        ({"perplexity": 0.5}, "perplexity must be a finite number ≥ 1"),
        ({"variant": "laplacian"}, "laplacian variant needs k"),
        ({"t": 1.0}, "t is the laplacian variant's temperature"),
        ({"variant": "laplacian", "k": 3, "t": 0.0}, "t must be a finite number > 0"),
        ({"variant": "laplacian", "k": 3, "centered": 1}, "centered must be True or False"),
        ({"layer": ""}, "layer must be a module name"),
        ({"layer": "relu*"}, "is a glob"),
        ({"layer": "mvl"}, "not an MVL list"),
    ],
)
def test_regularizer_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LocalStructureRegularizer(**kwargs)


def test_functions_reject_bad_tensors() -> None:
    x = torch.rand(4, 3)
    with pytest.raises(InputError, match="at least 2"):
        input_affinities(torch.rand(1, 3))
    with pytest.raises(InputError, match="one point per row"):
        input_affinities(torch.rand(4))
    with pytest.raises(InputError, match="floating point"):
        input_affinities(torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(InputError, match="NaN or inf"):
        input_affinities(torch.tensor([[0.0], [math.nan]]))
    with pytest.raises(InputError, match=r"must be a torch\.Tensor"):
        lsp_kl_loss([[0.0], [1.0]], x)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="x has 4 points but z has 3"):
        lsp_kl_loss(x, torch.rand(3, 2))
    with pytest.raises(InputError, match="k = 4 neighbours need at least 5 points"):
        lsp_laplacian_loss(x, x, k=4)
    with pytest.raises(InputError, match="k = 4 neighbours"):
        knn_overlap(x, x, 4)
    with pytest.raises(ConfigError, match="k must be an integer"):
        knn_overlap(x, x, 0)
    with pytest.raises(ConfigError, match="bandwidth must be one of"):
        lsp_kl_loss(x, x, bandwidth="mean")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="outside"):
        embedding_knn_overlap(tiny_mlp(), None, x + 2.0, 2)
    with pytest.raises(ConfigError, match="batch_size"):
        embedding_knn_overlap(tiny_mlp(), None, x, 2, batch_size=0)


def test_the_regularizer_copes_with_a_small_last_batch() -> None:
    reg = LocalStructureRegularizer(weight=1.0, k=10)
    x = torch.rand(4, 6)
    z = torch.rand(4, 3, requires_grad=True)
    assert torch.allclose(reg(x, z), lsp_kl_loss(x, z, k=3))
    one = reg(x[:1], z[:1])
    assert float(one.detach()) == 0.0 and one.requires_grad


# --------------------------------------------------------------------------------------------
# The regularizer's input validation (issue 6)
# --------------------------------------------------------------------------------------------
def _good() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x = torch.rand(5, 3, dtype=torch.float64)
    z = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    return x, z, (x + 0.01).clamp(0, 1), torch.randn(5, 2, dtype=torch.float64)


@pytest.mark.parametrize(
    ("argument", "bad", "message"),
    [
        ("x", [[0.0, 1.0]] * 5, r"^x must be a torch\.Tensor, got list$"),
        ("z", None, r"^z must be a torch\.Tensor, got NoneType$"),
        ("x", torch.ones(5, 3, dtype=torch.int64), r"^x has dtype torch\.int64; .*x\.float\(\)"),
        ("z", torch.ones(5, 2, dtype=torch.bool), r"^z has dtype torch\.bool; .*z\.float\(\)"),
        ("x", torch.tensor(0.5), r"^x has shape \(\); expected a batch \(N, \.\.\.\)"),
        ("z", torch.rand(5), r"^z has shape \(5,\); expected a batch \(N, \.\.\.\)"),
        ("x", torch.rand(0, 3), r"^x is an empty batch \(shape \(0, 3\)\); pass at least one"),
        ("z", torch.rand(0, 2), r"^z is an empty batch"),
        ("x", torch.full((5, 3), math.nan), r"^x contains NaN or inf values; clean the data"),
        ("x", torch.tensor([[0.0], [1], [2], [math.inf], [4]]), r"^x contains NaN or inf"),
        ("z", torch.tensor([[0.0], [1], [-math.inf], [3], [4]]), r"^z contains NaN or inf .*λ$"),
        ("x", torch.rand(4, 3), r"^x has 4 points but z has 5; z must be the embedding of x"),
        ("z", torch.rand(6, 2), r"^x has 5 points but z has 6"),
    ],
)
@pytest.mark.parametrize("on", ["clean", "clean+adv"])
def test_regularizer_rejects_bad_x_and_z(argument: str, bad: Any, message: str, on: str) -> None:
    x, z, x_adv, z_adv = _good()
    args = {"x": x, "z": z, "x_adv": x_adv, "z_adv": z_adv, argument: bad}
    for variant, k in (("kl", None), ("laplacian", 2)):
        reg = LocalStructureRegularizer(variant=variant, k=k, on=on)  # type: ignore[arg-type]
        with pytest.raises(InputError, match=message) as caught:
            reg(**args)
        assert "\n" not in str(caught.value)
        assert reg.last_loss is None


@pytest.mark.parametrize(
    ("argument", "bad", "message"),
    [
        ("x_adv", [[0.0]] * 5, r"^x_adv must be a torch\.Tensor, got list$"),
        ("z_adv", torch.ones(5, 2, dtype=torch.int32), r"^z_adv has dtype torch\.int32"),
        ("x_adv", torch.rand(0, 3), r"^x_adv is an empty batch"),
        ("z_adv", torch.rand(2), r"^z_adv has shape \(2,\); expected a batch"),
        ("x_adv", torch.full((5, 3), math.inf), r"^x_adv contains NaN or inf .*the attack"),
        ("z_adv", torch.full((5, 2), math.nan), r"^z_adv contains NaN or inf"),
        ("x_adv", torch.rand(5, 4), r"^x has shape \(5, 3\) but x_adv has \(5, 4\)"),
        ("z_adv", torch.rand(4, 2), r"^z has shape \(5, 2\) but z_adv has \(4, 2\)"),
        ("z_adv", torch.rand(5, 2, device="meta"), r"^z_adv is on meta but z on cpu"),
    ],
)
def test_regularizer_rejects_bad_adversarial_arguments(
    argument: str, bad: Any, message: str
) -> None:
    x, z, x_adv, z_adv = _good()
    args = {"x": x, "z": z, "x_adv": x_adv, "z_adv": z_adv, argument: bad}
    reg = LocalStructureRegularizer(on="clean+adv")
    with pytest.raises(InputError, match=message):
        reg(**args)
    # on="clean" ignores the adversarial pair, bad or not
    assert val(LocalStructureRegularizer()(**args)) == val(lsp_kl_loss(x, z)) * DEFAULT_WEIGHT


def test_validation_changes_no_value_and_no_gradient() -> None:
    x, z, x_adv, z_adv = _good()
    z_adv.requires_grad_(True)
    for reg in (
        LocalStructureRegularizer(weight=0.7, k=2, bandwidth="perplexity", perplexity=1.5),
        LocalStructureRegularizer(weight=1.3, variant="laplacian", k=2),
        LocalStructureRegularizer(weight=0.7, on="clean+adv", k=3),
    ):
        value = reg(x, z, x_adv, z_adv)
        (grad,) = torch.autograd.grad(value, z)
        if reg.on == "clean":
            expected = reg.loss(x, z) * reg.weight
        else:
            expected = reg.loss(torch.cat([x, x_adv]), torch.cat([z, z_adv])) * reg.weight
        (expected_grad,) = torch.autograd.grad(expected, z)
        assert val(value) == val(expected) and val(value) > 0  # bit for bit
        assert torch.equal(grad, expected_grad)
    # Any value range is accepted (LSP also runs on raw features such as moons coordinates) and
    # one point is a valid (last, partial) batch.
    reg = LocalStructureRegularizer(weight=2.0)
    far = torch.tensor([[-3.0, 40.0], [2.5, -7.0], [0.0, 0.0]])
    assert val(reg(far, far)) == val(lsp_kl_loss(far, far)) * 2.0
    one = reg(torch.tensor([[-5.0, 9.0]]), z[:1])
    assert val(one) == 0.0 and one.requires_grad
