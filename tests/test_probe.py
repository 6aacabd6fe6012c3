from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import tiny_cnn, tiny_mlp
from lsakit.errors import ConfigError
from lsakit.probe import LayerProbe, default_layers


class OutOfOrder(nn.Module):
    """Activations registered in one order and executed in another; one module used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Tanh()  # registered first, runs last
        self.early = nn.ReLU()
        self.shared = nn.Sigmoid()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.early(self.fc(x))
        h = self.shared(h)
        h = self.shared(h + 1)
        out = self.late(h)
        return out, {"aux": h}


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_default_layers_follow_execution_order_and_reuse() -> None:
    model = OutOfOrder()
    x = torch.rand(2, 3)
    with LayerProbe(model) as probe:
        model(x)
        reps = probe.take()
    names = [layer.name for layer in probe.layers]
    assert names == ["early", "shared#0", "shared#1", "late"]
    assert [layer.label for layer in probe.layers] == ["L0", "L1", "L2", "L3"]
    h0 = torch.relu(model.fc(x))
    h1 = torch.sigmoid(h0)
    h2 = torch.sigmoid(h1 + 1)
    for got, want in zip(reps, [h0, h1, h2, torch.tanh(h2)], strict=True):
        torch.testing.assert_close(got, want.detach())


def test_selection_by_type_glob_names_and_labels() -> None:
    model = tiny_cnn()
    x = torch.rand(3, 1, 8, 8)
    with LayerProbe(model, layers=nn.Conv2d) as probe:
        model(x)
        assert [r.shape for r in probe.take()] == [(3, 4, 8, 8), (3, 6, 2, 2)]
    with LayerProbe(model, layers="[0-4]") as probe:
        model(x)
        probe.take()
        assert [layer.name for layer in probe.layers] == ["0", "1", "2", "3", "4"]
    with LayerProbe(model, layers=["5", "L0"]) as probe:  # module "5" and the first activation
        model(x)
        probe.take()
        assert [layer.name for layer in probe.layers] == ["2", "5"]
    with LayerProbe(model, layers=["L2"]) as probe:
        model(x)
        (rep,) = probe.take()
        assert probe.layers[0].name == "8" and rep.shape == (3, 10)


def test_unknown_layers_give_clear_errors() -> None:
    model = tiny_cnn()
    with pytest.raises(ConfigError, match=r"unknown layer 'fc1'"):
        LayerProbe(model, layers=["fc1"])
    with pytest.raises(ConfigError, match="did you mean"):
        LayerProbe(_named(), layers=["relu"])
    with pytest.raises(ConfigError, match="matches no module"):
        LayerProbe(model, layers="features.*")
    with pytest.raises(ConfigError, match="no module of type"):
        LayerProbe(model, layers=nn.GRU)
    linear = nn.Sequential(nn.Linear(2, 2))
    with (
        LayerProbe(linear) as probe,  # it might call activation functions: the forward says
        pytest.raises(ConfigError, match="ran no activation module or activation function"),
    ):
        linear(torch.rand(1, 2))
        probe.take()
    with pytest.raises(ConfigError, match=r"'gelux' is no activation function.*did you mean gelu"):
        LayerProbe(model, layers=[":gelux#0"])
    with pytest.raises(ConfigError, match=r"no module 'featurez'"):
        LayerProbe(model, layers=["featurez:relu#0"])
    with LayerProbe(model, layers=["L7"]) as probe, pytest.raises(ConfigError, match=r"L0\.\.L2"):
        model(torch.rand(1, 1, 8, 8))
        probe.take()


def _named() -> nn.Module:
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(2, 2))
    model.add_module("relu1", nn.ReLU())
    return model


def test_hooks_removed_on_exit_and_on_error() -> None:
    model = tiny_mlp()
    before = _hook_count(model)
    with LayerProbe(model) as probe:
        assert _hook_count(model) > before and probe.active
    assert _hook_count(model) == before and not probe.active
    with pytest.raises(ZeroDivisionError), LayerProbe(model):
        1 / 0  # noqa: B018
    assert _hook_count(model) == before


def test_detached_capture_is_a_copy_and_training_capture_keeps_the_graph() -> None:
    model = tiny_mlp()
    x = torch.rand(5, 4)
    with LayerProbe(model) as probe:
        model(x)
        reps = probe.take()
    assert all(not r.requires_grad for r in reps)
    with LayerProbe(model, detach=False) as probe:
        model(x)
        reps = probe.take()
    assert all(r.requires_grad for r in reps)
    reps[1].sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


class InPlaceAfter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(x)
        h += 100.0  # an in-place op on the activation's output after the hook ran
        return h


def test_detached_capture_survives_later_inplace_ops() -> None:
    model = InPlaceAfter()
    x = torch.rand(2, 3)
    with LayerProbe(model) as probe:
        model(x)
        (rep,) = probe.take()
    torch.testing.assert_close(rep, x)


def test_paused_probe_captures_nothing_and_forwards_restart_records() -> None:
    model = tiny_mlp()
    x = torch.rand(2, 4)
    with LayerProbe(model) as probe:
        model(x)
        first = probe.take()
        with probe.paused():
            model(x + 0.5)
        with pytest.raises(RuntimeError, match="nothing captured"):
            probe.take()
        model(x * 0.5)
        model(x)  # a new forward starts a new record
        again = probe.take()
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b)


def test_default_layers_helper() -> None:
    layers = default_layers(tiny_cnn(), torch.rand(1, 1, 8, 8))
    assert [str(layer) for layer in layers] == ["L0 (2)", "L1 (5)", "L2 (8)"]
