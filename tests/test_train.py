from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from helpers import train_one_epoch_then_stop
from lsakit import perturb
from lsakit.checkpoint import load_checkpoint
from lsakit.config import PRESETS, TrainConfig, preset
from lsakit.data import info as data_info
from lsakit.data import load_tensors
from lsakit.errors import ArgumentError, ConfigError
from lsakit.models import names as model_names
from lsakit.train import resolve_device, train

SMALL = TrainConfig(
    model="model_a", dataset="moons", epochs=2, batch_size=64, lr=1e-2,
    data_options={"n_samples": 300},
)  # fmt: skip


def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = train(SMALL, tmp_path / "a")
    again = train(SMALL, tmp_path / "b")
    other = train(SMALL.model_copy(update={"seed": 1}), None)
    for (name, p), q in zip(
        first.model.state_dict().items(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    assert not torch.equal(
        first.model.state_dict()["fc1.weight"], other.model.state_dict()["fc1.weight"]
    )
    assert [m["test_accuracy"] for m in first.metrics] == [
        m["test_accuracy"] for m in again.metrics
    ]


def test_checkpoint_and_metrics_are_written_each_epoch(tmp_path: Path) -> None:
    result = train(SMALL, tmp_path)
    assert result.checkpoint == tmp_path / "model.safetensors"
    loaded, meta = load_checkpoint(result.checkpoint)
    assert meta.extra["epoch"] == 2 and meta.extra["dataset"] == "moons"
    assert meta.extra["config"]["lr"] == pytest.approx(1e-2)
    x = torch.rand(5, 2)
    result.model.eval()
    torch.testing.assert_close(loaded(x), result.model(x))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records == result.metrics
    assert 0.0 <= records[-1]["test_accuracy"] <= 1.0


def test_training_learns_moons() -> None:
    config = SMALL.model_copy(update={"epochs": 15, "batch_size": 32, "data_options": {}})
    assert train(config, None).metrics[-1]["test_accuracy"] >= 0.97


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        TrainConfig(model="model_a", dataset="moons", epochs=0)
    with pytest.raises(ValidationError):
        TrainConfig(model="model_a", dataset="moons", optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TrainConfig(model="model_a", dataset="moons", lr_typo=0.1)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="unknown model"):
        train(TrainConfig(model="model_z", dataset="moons", epochs=1), None)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize("dataset", sorted(PRESETS))
def test_presets_are_consistent(dataset: str) -> None:
    recipe = preset(dataset)
    assert recipe.train.dataset == dataset
    assert recipe.train.model in model_names()
    assert recipe.train.model == data_info(dataset).default_model
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))
    built = [perturb.from_spec(spec, model) for spec in recipe.perturbations]
    assert [p.name for p in built].count(recipe.mvl_perturbation) == 1
    assert any(p.is_adversarial for p in built) and any(not p.is_adversarial for p in built)


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="presets exist for"):
        preset("svhn")


# -- adversarial training, resume, early stopping, failures -----------------------------------------
AT = SMALL.model_copy(update={"method": "fgsm", "eps": 0.05, "epochs": 3, "val_steps": 2})


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _without_time(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.parametrize(("lr_layers", "eps_warmup"), [(None, 0.0), (["L2"], 0.0), (None, 1.5)])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(
    tmp_path: Path, lr_layers: list[str] | None, eps_warmup: float
) -> None:
    config = AT.model_copy(
        update={"lr_layers": lr_layers, "schedule": "cyclic", "eps_warmup": eps_warmup}
    )
    whole = train(config, tmp_path / "whole")
    train_one_epoch_then_stop(config, tmp_path / "cut")
    resumed = train(config, tmp_path / "cut", resume=True)
    for name, value in _weights(whole.model).items():
        assert torch.equal(value, _weights(resumed.model)[name]), name
    assert _without_time(resumed.metrics) == _without_time(whole.metrics)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_best_checkpoint_tracks_robust_validation_accuracy(tmp_path: Path) -> None:
    result = train(AT, tmp_path)
    scores = [m["val_robust"] for m in result.metrics]
    assert all(s is not None for s in scores)
    best_epoch = max(range(len(scores)), key=lambda i: (scores[i], -i)) + 1
    _, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert meta.extra["epoch"] == best_epoch


def test_early_stopping_stops(tmp_path: Path) -> None:
    config = AT.model_copy(update={"epochs": 8, "early_stopping": 1, "lr": 1e-9})
    result = train(config, tmp_path)
    assert len(result.metrics) < 8  # a learning rate of 1e-9 cannot keep improving


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lsakit.train import TrainingError
    from lsakit.train import trainer as trainer_module

    built: list[torch.nn.Module] = []
    original = trainer_module.build_model

    def build(config: Any) -> Any:
        loaded = original(config)
        built.append(loaded.model)
        return loaded

    def poison(epoch: int, record: dict[str, Any]) -> None:  # after epoch 1's files are written
        with torch.no_grad():
            next(built[0].parameters()).fill_(float("nan"))

    monkeypatch.setattr(trainer_module, "build_model", build)
    with pytest.raises(TrainingError, match=r"became nan at epoch 2, step 1; the last good"):
        train(SMALL.model_copy(update={"epochs": 2}), tmp_path, on_epoch_end=poison)
    epoch_one = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in epoch_one] == [1]
    saved, _ = load_checkpoint(tmp_path / "model.safetensors")
    assert all(torch.isfinite(p).all() for p in saved.parameters())


def test_a_run_directory_holding_a_run_is_refused_or_replaced(tmp_path: Path) -> None:
    train(SMALL.model_copy(update={"epochs": 1}), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ArgumentError, match=r"already holds a training run") as refused:
        train(SMALL.model_copy(update={"epochs": 1, "seed": 1}), tmp_path)
    # Named as the Python arguments; the command line renders them as its flags
    assert "--" not in str(refused.value)
    assert str(refused.value).endswith(
        f"continue it with resume {tmp_path}, start it over with overwrite, or choose another out"
    )
    flags = refused.value.render(lambda name: f"--{name}")
    assert f"continue it with --resume {tmp_path}, start it over with --overwrite" in flags
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # untouched
    # overwrite: the old run's files go first, so a new run that fails leaves no mix of two runs
    with pytest.raises(ConfigError, match="no training samples"):
        train(SMALL.model_copy(update={"val_fraction": 0.9999}), tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    result = train(SMALL.model_copy(update={"epochs": 1, "seed": 1}), tmp_path, overwrite=True)
    assert result.metrics[0]["epoch"] == 1
    assert (tmp_path / "model.safetensors").read_bytes() != before["model.safetensors"]


def test_regularizer_reduces_the_regularized_layers_relative_error() -> None:
    from lsakit.analysis import relative_errors
    from lsakit.perturb import PGD

    base = AT.model_copy(update={"epochs": 4, "data_options": {}})
    plain = train(base, None).model
    result = train(base.model_copy(update={"lr_layers": ["L2"]}), None)  # default γ
    regularized = result.model
    assert result.metrics[-1]["test_accuracy"] > 0.75  # not the collapse a large γ causes
    x, y = (t[:200] for t in load_tensors("moons", "test"))
    errors = []
    for model in (plain, regularized):
        x_adv = PGD(model, eps=0.05, steps=10, seed=0)(x, y)
        errors.append(relative_errors(model, x, x_adv)[2])
    assert errors[1] < errors[0]


def test_yaml_config_round_trip_and_errors(tmp_path: Path) -> None:
    from lsakit.config import dump_config, load_config

    path = tmp_path / "c.yaml"
    path.write_text(dump_config(AT))
    assert load_config(path) == AT
    assert load_config(path, epochs=7).epochs == 7
    path.write_text("model: model_a\ndataset: moons\nmethod: pgd\n")
    assert load_config(path).eps == PRESETS["moons"].train_eps  # as --method pgd: the preset's ε
    path.write_text("model: model_a\ndataset: moons\nmethod: pgd\neps: 0\n")
    with pytest.raises(ConfigError, match="eps > 0"):
        load_config(path)
    path.write_text("model: model_a\ndataset: moons\nepochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_config(path)
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"cannot read config file .*c\.yaml"):
        load_config(path)


def test_resume_continues_only_its_own_config_and_records_its_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lsakit.train.trainer import resume_point

    monkeypatch.setenv("LSAKIT_DATA", str(tmp_path / "env"))
    train_one_epoch_then_stop(SMALL, tmp_path / "run")  # SMALL: 2 epochs
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["data_dir"] == str(tmp_path / "env")  # the directory it resolved, recorded
    point = resume_point(tmp_path / "run")
    assert (point.epoch, point.epochs, point.complete) == (1, 2, False)
    with pytest.raises(ConfigError, match=r"differs from the one .* trained with \(lr\)"):
        train(SMALL.model_copy(update={"lr": 0.5}), tmp_path / "run", resume=True)
    train(SMALL.model_copy(update={"epochs": 1}), tmp_path / "done", data_dir=tmp_path / "d")
    state = torch.load(tmp_path / "done" / "state.pt", weights_only=True)
    assert state["data_dir"] == str(tmp_path / "d")
    assert resume_point(tmp_path / "done").complete


def test_resume_of_a_missing_or_corrupt_state(tmp_path: Path) -> None:
    from lsakit.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no completed epoch"):
        train(SMALL, tmp_path, resume=True)
    train(SMALL.model_copy(update={"epochs": 1}), tmp_path)
    state = tmp_path / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"state\.pt"):
        train(SMALL, tmp_path, resume=True)


def test_schedules() -> None:
    from lsakit.train.parts import lr_factor

    def at(schedule: str, t: float, **kw: object) -> float:
        return lr_factor(SMALL.model_copy(update={"schedule": schedule, **kw}), t)

    assert at("constant", 0.7) == 1.0
    assert [at("cyclic", t) for t in (0, 0.25, 0.5, 0.75, 1)] == [0, 0.5, 1, 0.5, 0]
    assert at("cosine", 0) == 1 and at("cosine", 0.5) == pytest.approx(0.5) and at("cosine", 1) == 0
    steps = [at("multistep", t) for t in (0.49, 0.5, 0.74, 0.75)]
    assert steps == pytest.approx([1, 0.1, 0.1, 0.01])


def test_the_shipped_anchor_config_is_valid() -> None:
    from conftest import REPO
    from lsakit.config import load_config

    config = load_config(REPO / "configs" / "mnist-fast-at.yaml")
    assert (config.method, config.eps, config.alpha, config.schedule) == (
        "fast",
        0.3,
        0.375,
        "cyclic",
    )
    assert (config.model, config.epochs, config.batch_size, config.lr) == (
        "model_b",
        10,
        100,
        0.005,
    )


def test_eps_warmup_raises_eps_and_alpha_linearly_then_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lsakit.train import objectives

    built: list[dict[str, Any]] = []
    original = objectives.build_objective

    def record(name: str, **params: Any) -> Any:
        built.append(params)
        return original(name, **params)

    monkeypatch.setattr(objectives, "build_objective", record)
    config = SMALL.model_copy(
        update={"method": "pgd", "eps": 0.1, "alpha": 0.02, "steps": 2, "epochs": 3,
                "eps_warmup": 2.0, "val_steps": 1}
    )  # fmt: skip
    n = len(load_tensors("moons", "train", n_samples=300)[1])
    steps_per_epoch = -(-(n - round(n * config.val_fraction)) // config.batch_size)
    warmup = 2 * steps_per_epoch
    assert warmup >= 4
    result = train(config, tmp_path)
    assert len(built) == 1 + warmup  # the full-ε objective up front, then one per warm-up step
    ramp = [k / warmup for k in range(1, warmup + 1)]
    assert [p["eps"] for p in built[1:]] == pytest.approx([0.1 * r for r in ramp])
    assert [p["alpha"] for p in built[1:]] == pytest.approx([0.02 * r for r in ramp])
    assert [m["train_eps"] for m in result.metrics] == pytest.approx([0.05, 0.1, 0.1])
    # without warm-up: one objective, the whole ε throughout
    built.clear()
    plain = train(config.model_copy(update={"eps_warmup": 0.0}), None)
    assert [p["eps"] for p in built] == [0.1]
    assert [m["train_eps"] for m in plain.metrics] == [0.1, 0.1, 0.1]
    with pytest.raises(ConfigError, match="eps_warmup needs an adversarial method"):
        SMALL.with_overrides(eps_warmup=1.0)


# -- the loop's callbacks, a caller's own module, the caller's random state -------------------------
def test_the_callers_random_state_is_left_as_it_was() -> None:
    import random

    import numpy as np

    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    want = (random.random(), float(np.random.rand()), torch.rand(2))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    first = train(SMALL.model_copy(update={"epochs": 1}), None)
    got = (random.random(), float(np.random.rand()), torch.rand(2))
    assert got[:2] == want[:2] and torch.equal(got[2], want[2])
    again = train(SMALL.model_copy(update={"epochs": 1}), None)  # still seeded by its config
    assert torch.equal(first.model.fc1.weight, again.model.fc1.weight)


class TwoLayer(torch.nn.Module):
    """A caller's own module (not in the registry)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(2, hidden)
        self.act = torch.nn.ReLU()
        self.fc2 = torch.nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def test_a_module_trains_as_the_registry_model_of_the_same_weights(tmp_path: Path) -> None:
    from lsakit import models
    from lsakit._torch import seed_everything

    config = AT.model_copy(update={"epochs": 2, "lr_layers": ["L1"]})
    registry = train(config, tmp_path / "registry")
    seed_everything(config.seed)  # as the trainer does before it builds config.model
    module = models.load("model_a").model
    own = train(config, tmp_path / "own", model=module)
    assert own.model is module
    for name, value in registry.model.state_dict().items():
        assert torch.equal(value, module.state_dict()[name]), name
    assert _without_time(own.metrics) == _without_time(registry.metrics)
    assert own.regularized_layers == ["L1"]


def test_a_module_is_checkpointed_by_its_class_and_loads_back(tmp_path: Path) -> None:
    import safetensors.torch

    from lsakit.checkpoint import read_meta
    from lsakit.config import load_run_config

    torch.manual_seed(0)
    net = TwoLayer()
    config = AT.model_copy(update={"epochs": 2, "lr_layers": ["act"], "method": "pgd", "steps": 2})
    result = train(config, tmp_path, model=net)
    assert result.metrics[-1]["val_robust"] is not None and result.best_checkpoint is not None
    spec = f"{__name__}:TwoLayer"
    meta = read_meta(tmp_path / "model.safetensors")
    assert meta.model == spec and meta.extra["epoch"] == 2
    assert load_run_config(tmp_path).model == spec
    back = TwoLayer()
    back.load_state_dict(safetensors.torch.load_file(tmp_path / "model.safetensors"))
    for name, value in net.state_dict().items():
        assert torch.equal(value, back.state_dict()[name]), name
    rebuilt, _ = load_checkpoint(tmp_path / "model.safetensors", model=spec)  # no-argument class
    assert torch.equal(rebuilt.fc1.weight, net.fc1.weight)
    # resume: one more epoch with a module of the same class and architecture
    longer = train(config.model_copy(update={"epochs": 3}), tmp_path, model=TwoLayer(), resume=True)
    assert [m["epoch"] for m in longer.metrics] == [1, 2, 3]


def test_a_module_contradicting_the_run_it_resumes_is_refused(tmp_path: Path) -> None:
    train(SMALL.model_copy(update={"epochs": 1}), tmp_path)  # model_a
    config = SMALL.model_copy(update={"epochs": 2})
    with pytest.raises(ArgumentError, match=r"^model is a .*:TwoLayer, but .* holds a run of "
                       r"model_a; pass a module of that class"):  # fmt: skip
        train(config, tmp_path, model=TwoLayer(), resume=True)
    train(config.model_copy(update={"epochs": 1}), tmp_path / "own", model=TwoLayer())
    with pytest.raises(ArgumentError, match=r"^model does not fit the run in .*fc1.weight"):
        train(config, tmp_path / "own", model=TwoLayer(hidden=8), resume=True)
    with pytest.raises(ArgumentError, match="model_kwargs are the arguments"):
        train(config.model_copy(update={"model_kwargs": {"x": 1}}), None, model=TwoLayer())
    with pytest.raises(ArgumentError, match=r"must be a torch\.nn\.Module"):
        train(config, None, model="model_a")  # type: ignore[arg-type]


def test_callbacks_see_every_hook_in_order_and_can_stop_the_run() -> None:
    from lsakit.train import Callback, Run
    from lsakit.train.loop import Totals

    seen: list[str] = []

    class Spy(Callback):
        def on_train_start(self, run: Run) -> None:
            seen.append(f"start {run.epoch}")

        def on_epoch_start(self, run: Run) -> None:
            seen.append(f"epoch {run.epoch}")

        def on_step_start(self, run: Run, step: int) -> None:
            seen.append("step")

        def on_step_end(self, run: Run, step: int, totals: Totals) -> None:
            assert totals.seen > 0
            seen.append("stepped")

        def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
            assert run.metrics[-1] is record
            seen.append(f"end {record['epoch']}")
            run.stop = run.epoch == 2

        def on_train_end(self, run: Run, error: BaseException | None) -> None:
            seen.append(f"done {error is None}")

    config = SMALL.model_copy(update={"epochs": 5, "limit": 64, "batch_size": 32})
    result = train(config, None, callbacks=[Spy()])
    assert len(result.metrics) == 2
    steps = ["step", "stepped"] * 2  # 64 samples less the validation tail: 2 batches
    assert seen == ["start 0", "epoch 1", *steps, "end 1", "epoch 2", *steps, "end 2", "done True"]
