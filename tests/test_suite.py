"""The attack suite (lsakit.suite): exact robust accuracy, per-sample worst case, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from helpers import modes
from lsakit.errors import ConfigError, InputError, LsakitError, ResultsError
from lsakit.perturb import APGD, PGD, Attack
from lsakit.suite import (
    CLEAN_MISTAKE,
    ROBUST,
    SuiteAttack,
    SuiteResult,
    batch_seed,
    model_fingerprint,
    run_suite,
)

EPS = 0.02


def linear_model(classes: int = 4) -> nn.Module:
    """z = 5·W(x − 0.5) with W's rows ±e₁, ±e₂ (the first ``classes`` of them)."""
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])[:classes] * 5
    layer = nn.Linear(2, classes)
    with torch.no_grad():
        layer.weight.copy_(rows)
        layer.bias.copy_(-rows @ torch.full((2,), 0.5))
    # Dropout (identity in eval mode) so that the restored train/eval mode is observable.
    return nn.Sequential(layer, nn.Dropout(0.5))


def exactly_robust(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Ground truth for a linear model, ball inside [0, 1]: robust iff every
    (w_j − w_y)·x + b_j − b_y + ε‖w_j − w_y‖₁ < 0 for j ≠ y."""
    layer = model[0]
    w, b = layer.weight.detach(), layer.bias.detach()
    gap = (x @ w.T + b) - (x @ w.T + b).gather(1, y[:, None])  # (N, C): z_j − z_y
    slack = eps * (w[None, :, :] - w[y][:, None, :]).abs().sum(dim=2)
    worst = (gap + slack).scatter(1, y[:, None], -torch.inf)
    result: Tensor = worst.max(dim=1).values < 0
    return result


def linear_data(n: int = 96, seed: int = 0) -> tuple[Tensor, Tensor, nn.Module]:
    """Points in [0.3, 0.7]² (the ε-ball stays inside [0, 1]) away from ties, labelled by the
    model, plus every 8th label shifted so some samples are clean mistakes."""
    model = linear_model()
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(4 * n, 2, generator=g)
    with torch.no_grad():
        z = model[0](x)  # the linear layer: the model itself is in train mode (dropout)
    y = z.argmax(dim=1)
    # Keep points whose robustness is not decided by less than 0.01 in logit space.
    layer = model[0]
    w = layer.weight.detach()
    gap = z - z.gather(1, y[:, None])
    slack = EPS * (w[None] - w[y][:, None]).abs().sum(dim=2)
    margin = (gap + slack).scatter(1, y[:, None], -torch.inf).max(dim=1).values
    keep = (margin.abs() > 0.01).nonzero().squeeze(1)[:n]
    x, y = x[keep], y[keep].clone()
    y[::8] = (y[::8] + 1) % 4
    return x, y, model


class CountingAttack(Attack):
    """Records which inputs it was asked to attack; returns them unchanged."""

    name: ClassVar[str] = "counting"
    seen: ClassVar[list[Tensor]] = []

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        CountingAttack.seen.append(x.clone())
        return x.clone()

    def params(self) -> dict[str, Any]:
        return self._base_params()


class OutsideAttack(Attack):
    """A broken attack: returns points 2ε away."""

    name: ClassVar[str] = "outside"

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        return (x + 2 * self.eps).clamp(0, 1)

    def params(self) -> dict[str, Any]:
        return self._base_params()


def apgd_only(steps: int = 20) -> list[SuiteAttack]:
    return [SuiteAttack("APGD", lambda m, e, s, o: APGD(m, eps=e, steps=steps, seed=s, output=o))]


# ---------------------------------------------------------------------------------------------


def test_standard_suite_finds_exactly_the_non_robust_points_of_a_linear_model() -> None:
    x, y, model = linear_data()
    result = run_suite(model, x, y, eps=EPS, batch_size=32)
    truth = exactly_robust(model, x, y, EPS)
    correct = torch.ones_like(y, dtype=torch.bool)
    correct[::8] = False
    fooled_by = torch.tensor(result.fooled_by)
    assert torch.equal(fooled_by == CLEAN_MISTAKE, ~correct)
    assert torch.equal(fooled_by == ROBUST, truth & correct)
    expected = float((truth & correct).float().mean())
    assert result.robust_accuracy == pytest.approx(expected)
    assert 0.2 < expected < 0.8  # the test data really has both kinds
    assert result.clean_accuracy == pytest.approx(float(correct.float().mean()))
    labels = [a.label for a in result.attacks]
    assert labels == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    # Robust accuracy after each attack never increases and ends at the combined value.
    after = [a.robust_accuracy for a in result.attacks]
    assert after == sorted(after, reverse=True)
    assert after[-1] == result.robust_accuracy
    # Each attack only attacks what the previous ones left robust.
    for previous, current in zip(result.attacks, result.attacks[1:], strict=False):
        assert current.attacked == previous.attacked - previous.fooled
    assert result.attacks[0].attacked == int(correct.sum())


def test_each_attack_only_sees_samples_still_robust_and_clean_mistakes_are_never_attacked() -> None:
    x, y, model = linear_data(n=40)
    CountingAttack.seen = []
    suite = [
        *apgd_only(),
        SuiteAttack("count", lambda m, e, s, o: CountingAttack(m, eps=e, output=o)),
    ]
    result = run_suite(model, x, y, eps=EPS, suite=suite, batch_size=7)
    seen = torch.cat(CountingAttack.seen)
    robust = torch.tensor(result.fooled_by) == ROBUST
    assert torch.equal(seen, x[robust])  # in order, once each
    assert result.suite == "custom"
    assert result.attacks[1].fooled == 0


def test_interrupted_suite_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    x, y, model = linear_data(n=64)
    reference = run_suite(model, x, y, eps=EPS, batch_size=8, seed=3)
    state = tmp_path / "suite.state.json"
    calls: list[tuple[str, int, int]] = []

    def interrupt(label: str, done: int, total: int) -> None:
        calls.append((label, done, total))
        if len(calls) == 5:  # in the middle of the first attack (≥ 7 batches)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(model, x, y, eps=EPS, batch_size=8, seed=3, state_path=state, on_batch=interrupt)
    saved = json.loads(state.read_text())
    assert saved["attack"] == 0 and saved["done"] == 40
    later: list[tuple[str, int, int]] = []
    resumed = run_suite(
        model, x, y, eps=EPS, batch_size=8, seed=3, state_path=state,
        on_batch=lambda *a: later.append(a),
    )  # fmt: skip
    assert resumed.fooled_by == reference.fooled_by
    assert [a.robust_accuracy for a in resumed.attacks] == [
        a.robust_accuracy for a in reference.attacks
    ]
    assert later[0] == ("APGD-CE", 48, calls[0][2])  # picked up after the 5th batch
    # A finished state returns the result without attacking anything.
    again: list[Any] = []
    final = run_suite(
        model, x, y, eps=EPS, batch_size=8, seed=3, state_path=state,
        on_batch=lambda *a: again.append(a),
    )  # fmt: skip
    assert again == []
    assert final.fooled_by == reference.fooled_by


def test_a_state_file_from_other_settings_is_refused(tmp_path: Path) -> None:
    x, y, model = linear_data(n=16)
    state = tmp_path / "s.json"
    run_suite(model, x, y, eps=EPS, suite=apgd_only(2), state_path=state)
    before = state.read_text()
    with pytest.raises(ConfigError, match="eps"):
        run_suite(model, x, y, eps=2 * EPS, suite=apgd_only(2), state_path=state)
    other = linear_model()
    with torch.no_grad():
        other[0].bias.add_(0.01)
    with pytest.raises(ConfigError, match="model"):
        run_suite(other, x, y, eps=EPS, suite=apgd_only(2), state_path=state)
    with pytest.raises(ConfigError, match="data"):
        run_suite(model, x.flip(0), y.flip(0), eps=EPS, suite=apgd_only(2), state_path=state)
    assert state.read_text() == before  # nothing overwritten
    state.write_text("{ not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        run_suite(model, x, y, eps=EPS, suite=apgd_only(2), state_path=state)


def test_attacks_needing_more_classes_are_skipped_and_say_why() -> None:
    model = linear_model(classes=2)
    x = torch.tensor([[0.51, 0.5], [0.7, 0.5], [0.3, 0.5]])
    y = torch.tensor([0, 0, 1])
    result = run_suite(model, x, y, eps=EPS)
    by_label = {a.label: a for a in result.attacks}
    assert by_label["APGD-T"].skipped == "needs ≥ 4 classes, the model has 2"
    assert by_label["APGD-CE"].skipped is None
    # 0.51 is 0.01 from the boundary x₁ = 0.5: fooled; 0.7 and 0.3 are robust.
    assert result.fooled_by == [1, ROBUST, ROBUST]
    assert "skipped" in " ".join(r[2] for r in result.table_rows())


def test_a_point_outside_the_ball_stops_the_evaluation() -> None:
    x, y, model = linear_data(n=8)
    suite = [SuiteAttack("broken", lambda m, e, s, o: OutsideAttack(m, eps=e, output=o))]
    with pytest.raises(LsakitError, match="broken returned a point outside"):
        run_suite(model, x, y, eps=EPS, suite=suite)


def test_inputs_untouched_mode_restored_and_json_round_trip(tmp_path: Path) -> None:
    x, y, model = linear_data(n=24)
    model.train()
    before = modes(model)
    x0, y0 = x.clone(), y.clone()
    result = run_suite(model, x, y, eps=EPS, suite=apgd_only(5), meta={"who": "test"})
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert modes(model) == before
    again = SuiteResult.load(result.save(tmp_path / "suite.json"))
    assert again == result
    assert again.meta["who"] == "test"
    assert again.meta["model_fingerprint"] == model_fingerprint(model)


def test_a_stronger_suite_is_never_weaker_than_its_first_attack() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.rand(64, 2)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    pgd = [SuiteAttack("PGD", lambda m, e, s, o: PGD(m, eps=e, steps=10, seed=s, output=o))]
    weak = run_suite(model, x, y, eps=0.02, suite=pgd)
    strong = run_suite(model, x, y, eps=0.02, suite=[*pgd, *apgd_only()])
    assert strong.robust_accuracy <= weak.robust_accuracy
    assert strong.attacks[0].robust_accuracy == weak.robust_accuracy


def test_bad_input_is_rejected_with_one_line() -> None:
    x, y, model = linear_data(n=4)
    with pytest.raises(ConfigError, match="unknown suite 'strong'; choose one of standard, rand"):
        run_suite(model, x, y, eps=EPS, suite="strong")
    with pytest.raises(InputError):
        run_suite(model, x + 2, y, eps=EPS)
    with pytest.raises(InputError):
        run_suite(model, x, y[:2], eps=EPS)
    with pytest.raises(InputError, match="empty"):
        run_suite(model, x[:0], y[:0], eps=EPS)
    with pytest.raises(ConfigError, match="distinct labels"):
        run_suite(model, x, y, eps=EPS, suite=[*apgd_only(), *apgd_only()])


def test_batch_seeds_differ_across_attacks_and_batches() -> None:
    seeds = {batch_seed(0, a, s) for a in range(4) for s in range(0, 10_000, 256)}
    assert len(seeds) == 4 * len(range(0, 10_000, 256))
    assert batch_seed(1, 0, 0) != batch_seed(0, 0, 0)


class NoisyLinear(nn.Module):
    """A randomized model: the linear model on x + N(0, 0.005²) at every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = linear_model()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x + 0.005 * torch.randn_like(x))
        return out


def test_rand_suite_runs_eot_attacks_on_a_randomized_model() -> None:
    x, y, _ = linear_data(n=48)
    model = NoisyLinear()
    result = run_suite(model, x, y, eps=EPS, suite="rand", batch_size=48)
    assert [a.label for a in result.attacks] == ["EOT-APGD-CE", "EOT-APGD-DLR"]
    assert result.attacks[0].params["samples"] == 20
    # The noise is small against ε: the verdicts match the exact ones of the noise-free model
    # except perhaps for points within the noise of the robustness margin.
    truth = exactly_robust(model.inner, x, y, EPS)
    robust = torch.tensor(result.fooled_by) == ROBUST
    clean_ok = torch.tensor(result.fooled_by) != CLEAN_MISTAKE
    disagree = int((robust != (truth & clean_ok)).sum())
    assert disagree <= 2
    assert result.robust_accuracy < result.clean_accuracy
