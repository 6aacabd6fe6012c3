from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from helpers import tiny_cnn, tiny_mlp
from lsakit import models
from lsakit.analysis import (
    LayerInfo,
    LayerStats,
    LSAResult,
    PerturbationResult,
    analyze,
    relative_errors,
)
from lsakit.errors import ConfigError, InputError, ResultsError, UndefinedMeasureError


def _independent_relative_errors(
    model: nn.Module, x: torch.Tensor, x_hat: torch.Tensor
) -> list[float]:
    """The paper's formula computed separately: own hooks, numpy, float64, whole-batch norms."""
    outputs: list[np.ndarray] = []
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Tanh))]
    handles = [
        m.register_forward_hook(lambda m, i, o: outputs.append(o.detach().double().numpy().copy()))
        for m in acts
    ]
    model.eval()
    with torch.no_grad():
        model(x)
        clean = list(outputs)
        outputs.clear()
        model(x_hat)
        pert = list(outputs)
    for h in handles:
        h.remove()
    return [
        float(np.linalg.norm(c - p) / np.linalg.norm(c)) for c, p in zip(clean, pert, strict=True)
    ]


@pytest.mark.parametrize(
    ("make_model", "shape"),
    [
        (tiny_mlp, (16, 4)),
        (tiny_cnn, (9, 1, 8, 8)),
        (lambda: tiny_mlp(seed=3), (1, 4)),
        (lambda: models.build("model_a"), (32, 2)),
        (lambda: models.build("model_b"), (6, 1, 28, 28)),
    ],
)
def test_relative_errors_match_the_paper_formula(
    make_model: Callable[[], nn.Module], shape: tuple[int, ...]
) -> None:
    model = make_model()
    x = torch.rand(shape)
    x_hat = (x + 0.1 * torch.randn(shape)).clamp(0, 1)
    got = relative_errors(model, x, x_hat)
    want = _independent_relative_errors(model, x, x_hat)
    assert len(got) == len(want) >= 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_relative_errors_restores_mode_and_leaves_inputs_alone() -> None:
    model = tiny_cnn()
    model.train()
    model[1].eval()  # a mixed mode must survive too
    bn_mean = model[1].running_mean.clone()
    x = torch.rand(4, 1, 8, 8)
    x_hat = x.flip(0)
    x_copy, x_hat_copy = x.clone(), x_hat.clone()
    relative_errors(model, x, x_hat)
    assert model.training and not model[1].training and model[0].training
    torch.testing.assert_close(model[1].running_mean, bn_mean)
    assert torch.equal(x, x_copy) and torch.equal(x_hat, x_hat_copy)


def test_relative_errors_validates_inputs() -> None:
    model = tiny_mlp()
    with pytest.raises(InputError, match="outside"):
        relative_errors(model, torch.rand(2, 4) + 1, torch.rand(2, 4))
    with pytest.raises(InputError, match="NaN"):
        relative_errors(model, torch.full((2, 4), float("nan")), torch.rand(2, 4))
    with pytest.raises(InputError, match="differ in shape"):
        relative_errors(model, torch.rand(2, 4), torch.rand(3, 4))


class DeadLayer(nn.Module):
    """The second ReLU always outputs zeros: its relative error is undefined."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(3, 4), nn.ELU()  # never all zero
        self.fc2, self.act2 = nn.Linear(4, 4), nn.ReLU()
        self.out = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc2.weight.zero_()
            self.fc2.bias.fill_(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))


def test_dead_layer_is_reported_explicitly() -> None:
    model = DeadLayer()
    x = torch.rand(5, 3)
    with pytest.raises(UndefinedMeasureError, match="layer L1"):
        relative_errors(model, x, x.flip(0))
    data = [(x, torch.zeros(5, dtype=torch.long)), (x[:2], torch.ones(2, dtype=torch.long))]
    result = analyze(model, data, {"flip": lambda a, b: a.flip(0)})
    dead = result.perturbations[0].layers[1]
    assert dead.mean is None and dead.std is None and dead.undefined == 7 and dead.count == 0
    live = result.perturbations[0].layers[0]
    assert live.count == 7 and live.undefined == 0
    # μ, σ come from the defined layer only; nothing NaN anywhere in the JSON
    assert result.perturbations[0].mu == pytest.approx(live.mean)
    assert "NaN" not in result.to_json() and "Infinity" not in result.to_json()
    assert [la.label for la in result.most_vulnerable_layers(-10)] == ["L0"]


def _loader(
    x: torch.Tensor, y: torch.Tensor, sizes: list[int]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    return out


def test_streaming_statistics_equal_all_at_once() -> None:
    model = tiny_cnn()
    x = torch.rand(23, 1, 8, 8)
    y = torch.randint(0, 5, (23,))
    noise = torch.randn(23, 1, 8, 8) * 0.2

    def perturb(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        # deterministic per sample, so batching cannot change the values
        idx = [int(((x - xb[i]).abs().flatten(1).sum(1)).argmin()) for i in range(len(xb))]
        return (xb + noise[idx]).clamp(0, 1)

    result = analyze(model, _loader(x, y, [10, 3, 7, 3]), {"noise": perturb})
    x_hat = perturb(x, y)
    per_layer = [relative_errors(model, x[i : i + 1], x_hat[i : i + 1]) for i in range(23)]
    values = np.array(per_layer)  # (samples, layers)
    p = result.perturbations[0]
    np.testing.assert_allclose([la.mean for la in p.layers], values.mean(0), rtol=1e-5)
    np.testing.assert_allclose([la.std for la in p.layers], values.std(0), rtol=1e-4)
    assert p.mu == pytest.approx(values.mean(), rel=1e-5)
    assert p.sigma == pytest.approx(values.std(), rel=1e-4)
    assert result.n_samples == 23 and [la.count for la in p.layers] == [23, 23, 23]
    with torch.no_grad():
        model.eval()
        assert result.clean_accuracy == pytest.approx(
            float((model(x).argmax(1) == y).float().mean())
        )
        assert p.accuracy == pytest.approx(float((model(x_hat).argmax(1) == y).float().mean()))


def test_batch_reduction_uses_one_value_per_batch() -> None:
    model = tiny_mlp()
    x, y = torch.rand(12, 4), torch.randint(0, 3, (12,))
    x_hat = (x + 0.05).clamp(0, 1)
    data = _loader(torch.cat([x, x_hat], 1), y, [6, 6])
    split = [(xb[:, :4], yb) for xb, yb in data]
    table = {id(xb): h for (xb, _), h in zip(split, [x_hat[:6], x_hat[6:]], strict=True)}
    result = analyze(model, split, {"shift": lambda a, b: table[id(a)]}, reduction="batch")
    batch_values = np.array(
        [relative_errors(model, x[:6], x_hat[:6]), relative_errors(model, x[6:], x_hat[6:])]
    )
    p = result.perturbations[0]
    np.testing.assert_allclose(p.means(), batch_values.mean(0), rtol=1e-5)
    assert [la.count for la in p.layers] == [2, 2]


def test_analysis_restores_mode_and_keeps_bn_statistics() -> None:
    model = tiny_cnn()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 5, (8,))
    x_copy = x.clone()
    analyze(model, [(x, y)], {"g": lambda a, b: (a + 0.1 * torch.randn_like(a)).clamp(0, 1)})
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(x, x_copy)


def test_analysis_errors() -> None:
    model = tiny_mlp()
    data = [(torch.rand(3, 4), torch.zeros(3, dtype=torch.long))]
    with pytest.raises(ConfigError, match="at least one perturbation"):
        analyze(model, data, {})
    with pytest.raises(InputError, match="must return a tensor of the input's shape"):
        analyze(model, data, {"bad": lambda a, b: a[:1]})
    with pytest.raises(InputError, match="labels in"):
        analyze(model, [(torch.rand(3, 4), torch.full((3,), 7))], {"id": lambda a, b: a})
    with pytest.raises(InputError, match="no batch"):
        analyze(model, [], {"id": lambda a, b: a})
    with pytest.raises(ConfigError, match="unknown measure"):
        analyze(model, data, {"id": lambda a, b: a}, measure="nope")


def test_tuple_and_dict_outputs_use_the_output_selector() -> None:
    class Dicty(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = tiny_mlp()

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"features": x, "scores": self.body(x)}

    model = Dicty()
    x, y = torch.rand(6, 4), torch.randint(0, 3, (6,))
    with pytest.raises(InputError, match="output="):
        analyze(model, [(x, y)], {"id": lambda a, b: a})
    result = analyze(model, [(x, y)], {"id": lambda a, b: a}, output="scores")
    assert result.perturbations[0].means() == pytest.approx([0.0, 0.0])
    assert result.clean_accuracy == result.perturbations[0].accuracy


def _result(means: list[float], mu: float, sigma: float) -> LSAResult:
    layers = [LayerInfo(label=f"L{i}", module_name=f"act{i}") for i in range(len(means))]
    stats = [
        LayerStats(label=f"L{i}", module_name=f"act{i}", mean=m, std=0.1, count=10, undefined=0)
        for i, m in enumerate(means)
    ]
    pert = PerturbationResult(
        name="pgd",
        adversarial=True,
        params={"eps": 0.3},
        accuracy=0.1,
        mu=mu,
        sigma=sigma,
        layers=stats,
    )
    return LSAResult(
        measure="relative_error",
        reduction="sample",
        n_samples=10,
        clean_accuracy=0.9,
        layers=layers,
        perturbations=[pert],
    )


def test_most_vulnerable_layers_is_algorithm_1() -> None:
    result = _result([0.1, 0.5, 0.9, 0.75], mu=0.5, sigma=0.2)
    labels = lambda eta: [la.label for la in result.most_vulnerable_layers(eta)]  # noqa: E731
    assert labels(1.0) == ["L2", "L3"]  # 0.4 > 0.2 and 0.25 > 0.2
    assert labels(1.5) == ["L2"]  # 0.25 > 0.3 fails
    assert labels(0.0) == ["L2", "L3"]  # strict: L1 (0 > 0) is out
    assert labels(-1.0) == ["L1", "L2", "L3"]
    assert labels(-3.0) == ["L0", "L1", "L2", "L3"]  # sorted by index
    assert labels(5.0) == []
    assert [la.label for la in result.top_k_layers(2)] == ["L2", "L3"]
    assert [la.label for la in result.top_k_layers(3)] == ["L1", "L2", "L3"]
    with pytest.raises(ConfigError, match="eta must be"):
        result.most_vulnerable_layers(float("nan"))


def test_perturbation_must_be_named_when_several() -> None:
    result = _result([0.1, 0.9], 0.5, 0.2)
    two = result.model_copy(
        update={
            "perturbations": [
                *result.perturbations,
                result.perturbations[0].model_copy(update={"name": "fgsm"}),
            ]
        }
    )
    with pytest.raises(ConfigError, match="say which one: pgd, fgsm"):
        two.most_vulnerable_layers(0.5)
    assert [la.label for la in two.most_vulnerable_layers(0.5, "fgsm")] == ["L1"]
    with pytest.raises(ConfigError, match="no perturbation 'apgd'"):
        two.perturbation("apgd")


def test_json_round_trip_and_corrupt_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_cnn()
    data = [(torch.rand(5, 1, 8, 8), torch.randint(0, 5, (5,)))]
    result = analyze(model, data, {"g": lambda a, b: (a + 0.1).clamp(0, 1)}, meta={"model": "tiny"})
    path = result.save(tmp_path / "out" / "lsa.json")
    loaded = LSAResult.load(path)
    assert loaded == result
    assert json.loads(path.read_text())["meta"] == {"model": "tiny"}
    text = path.read_text()
    (tmp_path / "trunc.json").write_text(text[: len(text) // 2])
    with pytest.raises(ResultsError, match=r"trunc\.json is not valid JSON"):
        LSAResult.load(tmp_path / "trunc.json")
    bad = json.loads(text)
    bad["perturbations"][0]["layers"][0]["mean"] = "high"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ResultsError, match=r"bad\.json is not an LSA result"):
        LSAResult.load(tmp_path / "bad.json")
    with pytest.raises(ResultsError, match="not found"):
        LSAResult.load(tmp_path / "missing.json")
