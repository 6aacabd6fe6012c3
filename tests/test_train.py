from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from lsakit import perturb
from lsakit.checkpoint import load_checkpoint
from lsakit.data import info as data_info
from lsakit.errors import ConfigError
from lsakit.models import names as model_names
from lsakit.presets import PRESETS, preset
from lsakit.train import TrainConfig, resolve_device, train

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
