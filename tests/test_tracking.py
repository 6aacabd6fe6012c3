"""Experiment tracking: what the trainer, the reproduction runner and the studies write to
TensorBoard and MLflow, read back with each tool's own reader and compared with metrics.jsonl.

MLflow's store is a SQLite database: a fresh one costs seconds of MLflow's table migrations, so
the tests that are not about making one start from a copy of one empty database that MLflow made
once for the module (as a second run in the same folder finds one)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
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
from lsakit.tracking import MLFLOW_RUN_FILE, TrackingError, mlflow_key, mlflow_run_id
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
    """The defaults under test: no MLflow server or experiment named by the environment, and no
    opt-in to MLflow's file store."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with MLflow's tables and nothing tracked, made by MLflow once."""
    database = tmp_path_factory.mktemp("empty") / "mlflow.db"
    MlflowClient(tracking_uri=sqlite(database)).search_experiments()
    return database


def sqlite(database: Path) -> str:
    """The tracking URI a user writes for the SQLite database ``database``."""
    return f"sqlite:///{database.resolve()}"


def with_db(folder: Path, empty_db: Path, name: str = "mlflow.db") -> Path:
    """``folder/name``: a copy of the empty database."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(empty_db, folder / name))


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard log dir, as (step, value), read by TensorBoard."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def store(folder: Path) -> MlflowClient:
    """MLflow's client on the default store in ``folder``."""
    return MlflowClient(tracking_uri=sqlite(folder / "mlflow.db"))


#: Reads an MLflow run with MLflow's client: python -c READ_BACK TRACKING_URI RUN_ID.
READ_BACK = """
import json, os, sys
from mlflow import MlflowClient

uri, run_id = sys.argv[1:]
client = MlflowClient(tracking_uri=uri)
run = client.get_run(run_id)
experiment = client.get_experiment(run.info.experiment_id)
print(json.dumps({
    "variables": sorted(k for k in os.environ if k.startswith("MLFLOW_")),
    "experiment": experiment.name,
    "runs": [r.info.run_id for r in client.search_runs([experiment.experiment_id])],
    "status": run.info.status,
    "name": run.info.run_name,
    "params": run.data.params,
    "history": {
        key: [[m.step, m.value] for m in client.get_metric_history(run_id, key)]
        for key in run.data.metrics
    },
    "artifact_uri": run.info.artifact_uri,
    "artifacts": {a.path: a.file_size for a in client.list_artifacts(run_id)},
}))
"""


def read_back(uri: str, run_id: str, cwd: Path) -> dict[str, Any]:
    """Run ``run_id`` of the store ``uri`` as MLflow's own client reads it in a fresh Python,
    started in ``cwd`` with no MLFLOW_* variable set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", READ_BACK, uri, run_id],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    read: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return read


def test_train_tracks_every_metrics_record_the_config_and_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_db: Path
) -> None:
    with_db(tmp_path, empty_db)
    cwd = tmp_path / "cwd"  # where the process runs: nothing of MLflow's may land here
    cwd.mkdir()
    monkeypatch.chdir(cwd)
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

    # MLflow: the SQLite database RUN_DIR/../mlflow.db, experiment "lsakit", the artifacts in
    # RUN_DIR/../mlartifacts; read by MLflow's client in a Python with no MLFLOW_* variable
    # (MLflow 3 refuses its file store there) and the URI a user writes.
    uri = sqlite(tmp_path / "mlflow.db")
    run_id = mlflow_run_id(run_dir)
    assert run_id is not None
    assert json.loads((run_dir / MLFLOW_RUN_FILE).read_text())["tracking_uri"] == uri
    run = read_back(uri, run_id, cwd)
    assert run["variables"] == [] and run["experiment"] == "lsakit" and run["runs"] == [run_id]
    assert run["status"] == "FINISHED" and run["name"] == "run"
    params = run["params"]
    assert params["method"] == "fgsm" and float(params["lr"]) == 0.01
    assert params["log_to"] == '["tensorboard", "mlflow"]' and params["lr_layers"] == "null"
    assert json.loads(params["data_options"]) == {"n_samples": 300}
    assert set(run["history"]) == set(KEYS)
    for key in KEYS:  # MLflow keeps float64: exactly the numbers of metrics.jsonl
        assert run["history"][key] == [[r["epoch"], r[key]] for r in records]
    files = ("config.yaml", "metrics.jsonl", "model.safetensors", "best.safetensors")
    assert run["artifacts"] == {name: (run_dir / name).stat().st_size for name in files}
    artifacts = tmp_path / "mlartifacts" / run_id / "artifacts"
    assert run["artifact_uri"] == artifacts.as_uri()
    for name in files:
        assert (artifacts / name).read_bytes() == (run_dir / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "mlartifacts", "mlflow.db", "run"]
    assert list(cwd.iterdir()) == []  # MLflow's default for a SQLite store is ./mlruns


def test_a_resumed_run_continues_the_same_tracked_runs(tmp_path: Path, empty_db: Path) -> None:
    with_db(tmp_path, empty_db)
    config = TRACKED.model_copy(update={"epochs": 3})
    run_dir = tmp_path / "run"
    train_one_epoch_then_stop(config, run_dir)
    run_id = mlflow_run_id(run_dir)
    client = store(tmp_path)
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
    tmp_path: Path, empty_db: Path
) -> None:
    with_db(tmp_path, empty_db)
    config = TRACKED.model_copy(update={"epochs": 2, "log_to": ["mlflow"]})
    run_dir = tmp_path / "run"
    train_one_epoch_then_stop(config, run_dir)
    first = mlflow_run_id(run_dir)
    (run_dir / MLFLOW_RUN_FILE).unlink()
    train(config, run_dir, resume=True)
    second = mlflow_run_id(run_dir)
    assert second is not None and second != first
    client = store(tmp_path)
    records = list(iter_metrics(run_dir))
    assert history(client, second, "test_accuracy") == [
        (r["epoch"], r["test_accuracy"]) for r in records
    ]
    assert client.get_run(second).data.params["method"] == "fgsm"


def test_a_new_run_in_the_directory_starts_new_tracked_runs(tmp_path: Path, empty_db: Path) -> None:
    with_db(tmp_path, empty_db)
    run_dir = tmp_path / "run"
    train(TRACKED.model_copy(update={"epochs": 1}), run_dir)
    first = mlflow_run_id(run_dir)
    train(TRACKED, run_dir, overwrite=True)
    assert mlflow_run_id(run_dir) != first
    assert [step for step, _ in scalars(run_dir / "tb")["epoch"]] == [1, 2]  # nothing of the first


def test_the_environment_names_the_store_and_the_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_db: Path
) -> None:
    elsewhere = with_db(tmp_path / "server", empty_db, "tracking.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite(elsewhere))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    run_dir = tmp_path / "run"
    train(TRACKED.model_copy(update={"epochs": 1, "log_to": ["mlflow"]}), run_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "server"]  # no RUN_DIR/../*
    assert not (run_dir / "tb").exists()
    client = MlflowClient(tracking_uri=sqlite(elsewhere))
    experiment = client.get_experiment_by_name("mine")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == mlflow_run_id(run_dir)
    # an experiment lsakit makes in any SQLite store keeps its artifacts beside the database
    artifacts = tmp_path / "server" / "mlartifacts" / run.info.run_id / "artifacts"
    assert run.info.artifact_uri == artifacts.as_uri()
    assert (artifacts / "metrics.jsonl").read_text() == (run_dir / "metrics.jsonl").read_text()


def test_a_file_store_is_used_only_where_mlflow_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = tmp_path / "mlruns"  # MLflow's file store, lsakit's default before
    monkeypatch.setenv("MLFLOW_TRACKING_URI", files.as_uri())
    args = ["--threads", "1", "train", "--epochs", "1", "--limit", "200", "--log-to", "mlflow"]
    code, _, err = run_cli([*args, "--out", str(tmp_path / "refused")], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"MLFLOW_TRACKING_URI={files.as_uri()} is MLflow's file store" in err
    assert "unless MLFLOW_ALLOW_FILE_STORE=true: set that as well, or point" in err
    assert not (tmp_path / "refused").exists() and not files.exists()  # said before training

    # The user's own opt-in, which MLflow's client and UI need as well: the store is used.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    config = TRACKED.model_copy(update={"epochs": 2, "log_to": ["mlflow"]})
    run_dir = tmp_path / "run"
    train_one_epoch_then_stop(config, run_dir)
    run_id = mlflow_run_id(run_dir)
    assert run_id is not None and len(list(files.glob(f"*/{run_id}/meta.yaml"))) == 1
    # Resuming a run tracked in a file store (as every run of an earlier lsakit) without the
    # opt-in: refused, naming the run file and both ways on; the run can resume after either.
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    run_file = run_dir / MLFLOW_RUN_FILE
    with pytest.raises(TrackingError) as refused:
        train(config, run_dir, resume=True)
    assert str(refused.value) == (
        f"{run_file} continues an MLflow run in the file store {files.as_uri()}, which MLflow 3 "
        f"refuses unless MLFLOW_ALLOW_FILE_STORE=true: set it to continue that run there, or "
        f"delete {run_file} to track the rest as a new run"
    )
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    train(config, run_dir, resume=True)
    assert mlflow_run_id(run_dir) == run_id
    client = MlflowClient(tracking_uri=files.as_uri())
    records = list(iter_metrics(run_dir))
    assert [r["epoch"] for r in records] == [1, 2]
    assert history(client, run_id, "val_robust") == [(r["epoch"], r["val_robust"]) for r in records]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert not (tmp_path / "mlflow.db").exists()


#: Opens a tracked run in the default store of a folder once told to: python -c OPEN FOLDER NAME.
OPEN = """
import sys, time
from pathlib import Path
import mlflow.store.tracking.sqlalchemy_store  # imported before the start, not during it
from lsakit.tracking import TrackingSetup, open_trackers

folder, name = Path(sys.argv[1]), sys.argv[2]
(folder / f"{name}.ready").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
with open_trackers(["mlflow"], folder / name, TrackingSetup(store=folder)) as trackers:
    trackers.log_metrics({"x": 1.0}, step=1)
"""


@pytest.mark.slow  # two Pythons importing lsakit and MLflow, then MLflow's migrations
def test_parallel_runs_make_the_database_once_between_them(tmp_path: Path) -> None:
    # The default store made by lsakit from nothing, by two processes at the same moment: without
    # lsakit's lock both create MLflow's tables and one fails halfway (seen 4 times in 4).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    names = ("a", "b")
    workers = [
        subprocess.Popen([sys.executable, "-c", OPEN, str(tmp_path), name], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in names
    ]  # fmt: skip
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"{name}.ready").exists() for name in names):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
        time.sleep(0.01)
    (tmp_path / "go").touch()
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    client = store(tmp_path)
    experiment = client.get_experiment_by_name("lsakit")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted((r.info.run_name, r.info.status, r.data.metrics["x"]) for r in runs) == [
        ("a", "FINISHED", 1.0),
        ("b", "FINISHED", 1.0),
    ]


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
    with monkeypatch.context() as patch:  # mlflow-skinny alone: no SQLite store
        patch.setitem(sys.modules, "sqlalchemy", None)
        code, _, err = run_cli([*args, str(tmp_path / "sql"), "--log-to", "mlflow"], capsys)
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "sql").exists()
    assert err.endswith(
        "--log-to mlflow: MLflow's SQLite store (the default) needs sqlalchemy, which is not "
        "installed: pip install 'lsakit[mlflow]' (or sqlalchemy), or set MLFLOW_TRACKING_URI to "
        "an MLflow server\n"
    )
    code, _, err = run_cli(["reproduce", "moon", "--profile", "smoke", "--out",
                              str(tmp_path / "r"), "--log-to", "mlflow,comet"], capsys)  # fmt: skip
    assert code == 2 and "unknown tracking backend 'comet'" in err


def test_tracking_needs_a_run_directory() -> None:
    with pytest.raises(ConfigError, match="log_to needs a run directory"):
        train(TRACKED, None)
    with pytest.raises(ConfigError, match="log_to lists a backend twice"):
        TRACKED.with_overrides(log_to=["mlflow", "mlflow"])


def test_reproduce_tracks_each_row_and_seed_with_its_final_evaluation(
    tmp_path: Path, empty_db: Path
) -> None:
    out = tmp_path / "moon"
    with_db(out, empty_db)  # the store: OUT/mlflow.db
    result = run_experiment("moon", "smoke", out, log_to=["mlflow", "tensorboard"])
    client = store(out)
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
        artifacts = out / "mlartifacts" / tracked.info.run_id / "artifacts"
        assert (artifacts / "run.json").read_text() == (run_dir / "run.json").read_text()
        final = scalars(run_dir / "tb")["final/rg"]
        assert final == [(records[-1]["epoch"], pytest.approx(seed_run.rg, rel=1e-6))]
    # Finished runs are reused, tracked or not, and not tracked again.
    run_experiment("moon", "smoke", out)
    assert len(client.search_runs([experiment.experiment_id])) == len(result.rows)


def test_a_study_tracks_its_rows_with_their_evaluation(tmp_path: Path, empty_db: Path) -> None:
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
    with_db(tmp_path / "out", empty_db)  # the store: OUT/mlflow.db
    result = run_study(load_study(str(path)), "quick", tmp_path / "out", log_to=["mlflow"])
    client = store(tmp_path / "out")
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
