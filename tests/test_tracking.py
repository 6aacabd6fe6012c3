"""Experiment tracking: what the trainer, the reproduction runner and the studies write to
TensorBoard and MLflow, read back with each tool's own reader and compared with metrics.jsonl."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard import SummaryWriter

from helpers import run_cli, train_one_epoch_then_stop
from lsakit.config import TrainConfig
from lsakit.errors import ConfigError
from lsakit.experiments import run_experiment
from lsakit.experiments.studies import load_study, run_study
from lsakit.tracking import MLFLOW_RUN_FILE, mlflow_key, mlflow_run_id
from lsakit.train import train
from lsakit.train.trainer import iter_metrics

TRACKED = TrainConfig(
    model="model_a", dataset="moons", epochs=2, batch_size=64, lr=1e-2, method="fgsm", eps=0.1,
    data_options={"n_samples": 300}, log_to=["tensorboard", "mlflow"],
)  # fmt: skip
#: metrics.jsonl keys every epoch of TRACKED has a number for
KEYS = ("epoch", "lr", "train_loss", "train_reg", "train_accuracy", "val_clean", "val_robust",
        "test_accuracy", "seconds", "train_eps")  # fmt: skip


@pytest.fixture(autouse=True)
def _local_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults under test: no MLflow server or experiment named by the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard log dir, as (step, value), read by TensorBoard."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def store(path: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=path.resolve().as_uri())


def test_train_tracks_every_metrics_record_the_config_and_the_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(TRACKED, run_dir)
    records = list(iter_metrics(run_dir))
    assert records == result.metrics and len(records) == 2

    tensorboard = scalars(run_dir / "tb")
    assert set(tensorboard) == set(KEYS)
    for key in KEYS:  # TensorBoard keeps float32
        assert tensorboard[key] == [
            (r["epoch"], pytest.approx(r[key], rel=1e-6, abs=1e-7)) for r in records
        ]
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == 0.01 and hparams["method"].string_value == "fgsm"
    assert hparams["epochs"].number_value == 2
    experiment_info = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "val_robust" in {m.name.tag for m in experiment_info.metric_infos}
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "method: fgsm" in text and "eps: 0.1" in text

    client = store(tmp_path / "mlruns")  # default: RUN_DIR/../mlruns, experiment "lsakit"
    experiment = client.get_experiment_by_name("lsakit")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == mlflow_run_id(run_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["method"] == "fgsm" and float(params["lr"]) == 0.01
    assert params["log_to"] == '["tensorboard", "mlflow"]' and params["lr_layers"] == "null"
    assert json.loads(params["data_options"]) == {"n_samples": 300}
    for key in KEYS:  # MLflow keeps float64: exactly the numbers of metrics.jsonl
        assert history(client, run.info.run_id, key) == [(r["epoch"], r[key]) for r in records]
    artifacts = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id)}
    assert artifacts.keys() == {
        "config.yaml",
        "metrics.jsonl",
        "model.safetensors",
        "best.safetensors",
    }
    assert artifacts["model.safetensors"] == (run_dir / "model.safetensors").stat().st_size
    local = Path(client.download_artifacts(run.info.run_id, "metrics.jsonl", str(tmp_path)))
    assert local.read_text() == (run_dir / "metrics.jsonl").read_text()


def test_a_resumed_run_continues_the_same_tracked_runs(tmp_path: Path) -> None:
    config = TRACKED.model_copy(update={"epochs": 3})
    run_dir = tmp_path / "run"
    train_one_epoch_then_stop(config, run_dir)
    run_id = mlflow_run_id(run_dir)
    client = store(tmp_path / "mlruns")
    assert run_id is not None and client.get_run(run_id).info.status == "FAILED"
    assert [step for step, _ in history(client, run_id, "val_robust")] == [1]
    # A kill can land after epoch 2 was logged but before its state was saved: TensorBoard then
    # holds an epoch-2 point of the lost attempt, which the resumed run must replace.
    with SummaryWriter(str(run_dir / "tb")) as stray:
        stray.add_scalar("val_robust", 99.0, global_step=2)

    train(config, run_dir, resume=True)
    records = list(iter_metrics(run_dir))
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert mlflow_run_id(run_dir) == run_id
    experiment = client.get_experiment_by_name("lsakit")
    assert experiment is not None
    assert len(client.search_runs([experiment.experiment_id])) == 1
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("val_robust", "train_loss", "epoch"):
        assert history(client, run_id, key) == [(r["epoch"], r[key]) for r in records]
    tensorboard = scalars(run_dir / "tb")
    assert tensorboard["val_robust"] == [
        (r["epoch"], pytest.approx(r["val_robust"], rel=1e-6)) for r in records
    ]
    assert [step for step, _ in tensorboard["train_loss"]] == [1, 2, 3]


def test_a_resume_whose_tracked_run_is_gone_starts_one_with_the_past_epochs(
    tmp_path: Path,
) -> None:
    config = TRACKED.model_copy(update={"epochs": 2, "log_to": ["mlflow"]})
    run_dir = tmp_path / "run"
    train_one_epoch_then_stop(config, run_dir)
    first = mlflow_run_id(run_dir)
    (run_dir / MLFLOW_RUN_FILE).unlink()
    train(config, run_dir, resume=True)
    second = mlflow_run_id(run_dir)
    assert second is not None and second != first
    client = store(tmp_path / "mlruns")
    records = list(iter_metrics(run_dir))
    assert history(client, second, "test_accuracy") == [
        (r["epoch"], r["test_accuracy"]) for r in records
    ]
    assert client.get_run(second).data.params["method"] == "fgsm"


def test_a_new_run_in_the_directory_starts_new_tracked_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(TRACKED.model_copy(update={"epochs": 1}), run_dir)
    first = mlflow_run_id(run_dir)
    train(TRACKED, run_dir, overwrite=True)
    assert mlflow_run_id(run_dir) != first
    assert [step for step, _ in scalars(run_dir / "tb")["epoch"]] == [1, 2]  # nothing of the first


def test_the_environment_names_the_store_and_the_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "server"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    run_dir = tmp_path / "run"
    train(TRACKED.model_copy(update={"epochs": 1, "log_to": ["mlflow"]}), run_dir)
    assert not (tmp_path / "mlruns").exists() and not (run_dir / "tb").exists()
    client = store(elsewhere)
    experiment = client.get_experiment_by_name("mine")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == mlflow_run_id(run_dir)


def test_cli_train_log_to_and_bad_or_missing_backends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--threads", "1", "train", "--epochs", "1", "--limit", "200", "--out"]
    code, _, err = run_cli([*args, str(tmp_path / "a"), "--log-to", "tensorboard"], capsys)
    assert code == 0, err
    assert [s for s, _ in scalars(tmp_path / "a" / "tb")["test_accuracy"]] == [1]
    assert not (tmp_path / "a" / MLFLOW_RUN_FILE).exists()
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["log_to"] == ["tensorboard"]

    code, _, err = run_cli([*args, str(tmp_path / "b"), "--log-to", "wandb"], capsys)
    assert code == 2 and "invalid --log-to" in err and "'tensorboard' or 'mlflow'" in err
    for module, extra in (("mlflow", "lsakit[mlflow]"), ("tensorboard", "lsakit[tensorboard]")):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)  # `import module` now fails, as uninstalled
            code, _, err = run_cli([*args, str(tmp_path / module), "--log-to", module], capsys)
        assert code == 2 and "Traceback" not in err
        assert err.count("\n") == 1 and f"--log-to {module} needs the {module} package" in err
        assert f"pip install '{extra}'" in err
        assert not (tmp_path / module / "config.yaml").exists()  # said before any training
    code, _, err = run_cli(["reproduce", "moon", "--profile", "smoke", "--out",
                              str(tmp_path / "r"), "--log-to", "mlflow,comet"], capsys)  # fmt: skip
    assert code == 2 and "unknown tracking backend 'comet'" in err


def test_tracking_needs_a_run_directory() -> None:
    with pytest.raises(ConfigError, match="log_to needs a run directory"):
        train(TRACKED, None)
    with pytest.raises(ConfigError, match="log_to lists a backend twice"):
        TRACKED.with_overrides(log_to=["mlflow", "mlflow"])


def test_reproduce_tracks_each_row_and_seed_with_its_final_evaluation(tmp_path: Path) -> None:
    out = tmp_path / "moon"
    result = run_experiment("moon", "smoke", out, log_to=["mlflow", "tensorboard"])
    client = store(out / "mlruns")
    experiment = client.get_experiment_by_name("moon")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {f"{row.name}/seed-0" for row in result.rows}
    for row in result.rows:
        [seed_run] = row.runs
        run_dir = out / "runs" / row.name / "seed-0"
        tracked = runs[f"{row.name}/seed-0"]
        assert tracked.info.run_id == mlflow_run_id(run_dir) and tracked.info.status == "FINISHED"
        assert tracked.data.tags["lsakit.row"] == row.name
        assert tracked.data.params["method"] == row.method
        metrics = tracked.data.metrics
        assert metrics["final/rg"] == seed_run.rg
        for e, accuracy in zip(result.eps, seed_run.accuracies, strict=True):
            assert metrics[mlflow_key(f"final/fgsm_accuracy_eps_{e:g}")] == accuracy
        records = list(iter_metrics(run_dir))
        assert history(client, tracked.info.run_id, "val_clean") == [
            (r["epoch"], r["val_clean"]) for r in records
        ]
        names = {a.path for a in client.list_artifacts(tracked.info.run_id)}
        assert {"run.json", "model.safetensors", "config.yaml"} <= names
        final = scalars(run_dir / "tb")["final/rg"]
        assert final == [(records[-1]["epoch"], pytest.approx(seed_run.rg, rel=1e-6))]
    # Finished runs are reused, tracked or not, and not tracked again.
    run_experiment("moon", "smoke", out)
    assert len(client.search_runs([experiment.experiment_id])) == len(result.rows)


def test_a_study_tracks_its_rows_with_their_evaluation(tmp_path: Path) -> None:
    values: dict[str, Any] = {
        "study": "tiny", "description": "tracking test", "dataset": "moons", "model": "model_a",
        "train": {"epochs": 1, "batch_size": 64, "limit": 200, "lr": 0.01, "eps": 0.05,
                  "steps": 2, "val_fraction": 0.25, "val_steps": 1},
        "rows": [{"name": "plain", "train": {"method": "standard"}},
                 {"name": "fgsm", "train": {"method": "fgsm"}}],
        "evaluation": {"attacks": ["pgd=0.05,steps=2"]},
        "profiles": {"quick": {"seeds": [0], "test_limit": 100}},
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    result = run_study(load_study(str(path)), "quick", tmp_path / "out", log_to=["mlflow"])
    client = store(tmp_path / "out" / "mlruns")
    experiment = client.get_experiment_by_name("study-tiny")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"plain/seed-0", "fgsm/seed-0"}
    for study_run in result.runs:
        metrics = runs[f"{study_run.row}/seed-0"].data.metrics
        assert (
            metrics[mlflow_key("final/pgd=0.05,steps=2")] == study_run.metrics["pgd=0.05,steps=2"]
        )
        assert metrics["final/clean"] == study_run.metrics["clean"]
