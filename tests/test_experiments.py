"""Experiment configs, published tables and the reproduction runner (smoke profiles)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from helpers import run_cli
from lsakit import data as datasets
from lsakit._frozen import FrozenModel
from lsakit.checkpoint import load_checkpoint
from lsakit.data import moons_scale
from lsakit.domain import input_domain
from lsakit.errors import ConfigError, ResultsError
from lsakit.experiments import (
    SUITES,
    ExperimentResult,
    experiment_names,
    load_experiment,
    load_table,
    row_specs,
    run_experiment,
)
from lsakit.experiments.executors import LocalExecutor
from lsakit.experiments.reproduction import ReproductionSpec, train_config
from lsakit.experiments.runner import (
    GridError,
    GridRun,
    RunContext,
    RunOutcome,
    RunRecord,
    RunSpec,
    run_grid,
    run_key,
)
from lsakit.experiments.studies import load_study, study_names
from lsakit.perturb import FGSM
from test_data import write_cifar_batches


def test_every_packaged_experiment_loads_and_matches_its_published_table() -> None:
    assert set(experiment_names()) == {n for names in SUITES.values() for n in names}
    for name in experiment_names():
        config = load_experiment(name)
        eps, published = load_table(config.table)
        rows = [r.name for r in row_specs(config)]
        assert set(rows) == set(published), name  # we run exactly the paper's rows
        for row in published.values():
            assert len(row.accuracies) == len(eps)
            assert sum(row.accuracies) == pytest.approx(row.rg, abs=0.011)  # R&G = the sum
        assert {"quick", "full", "smoke"} <= set(config.profiles)


def test_moon_table_rows_and_names() -> None:
    rows = row_specs(load_experiment("moon"))
    assert [r.name for r in rows[:5]] == ["Normal", "AT-FGSM", "AT-PGD", "AT-TRADE", "AT-FAST"]
    lr = [r for r in rows if r.base == "AT-TRADE"]
    assert [(r.name, r.method, r.lr_layers) for r in lr] == [
        ("AT-TRADE-LR-L0", "trades", ["L0"]),
        ("AT-TRADE-LR-L1", "trades", ["L1"]),
        ("AT-TRADE-LR-L2", "trades", ["L2"]),
    ]


def test_train_config_layers_shared_method_and_profile_settings() -> None:
    config = load_experiment("moon")
    rows = {r.name: r for r in row_specs(config)}
    pgd = train_config(config, "quick", rows["AT-PGD-LR-L2"], seed=2, mvl_checkpoint=None)
    assert pgd.method == "pgd" and pgd.seed == 2
    assert pgd.alpha == config.methods["pgd"]["alpha"]  # per-method override
    assert pgd.epochs == config.train["epochs"] and pgd.schedule == config.train["schedule"]
    assert pgd.lr_layers == ["L2"] and pgd.eps == config.train["eps"]
    smoke = train_config(config, "smoke", rows["AT-PGD"], seed=0, mvl_checkpoint=None)
    assert smoke.epochs == config.profiles["smoke"].train["epochs"]  # profile override
    normal = train_config(config, "full", rows["Normal"], seed=0, mvl_checkpoint=None)
    assert normal.method == "standard" and normal.eps == 0 and normal.lr_layers is None


def test_unknown_experiment_and_profile() -> None:
    with pytest.raises(ConfigError, match="unknown experiment 'mon'"):
        load_experiment("mon")
    with pytest.raises(ConfigError, match="no profile 'fast'"):
        run_experiment("moon", "fast", "unused")


def test_moon_smoke_runs_every_row_and_reuses_finished_runs(
    moon_smoke: tuple[ExperimentResult, Path], tmp_path: Path
) -> None:
    result, shared = moon_smoke
    assert len(result.rows) == 17 and result.seeds == [0]
    assert result.protocol == "strict" and result.settings["protocol"] == "strict"  # the default
    assert result.layer_labels == ["L0", "L1", "L2"]
    assert set(result.normal_lsa) == {"gaussian", "salt", "pepper", "speckle", "fgsm", "pgd"}
    for row in result.rows:
        assert row.published is not None
        run = row.runs[0]
        assert len(run.accuracies) == 6 and run.rg == pytest.approx(sum(run.accuracies))
        assert not Path(run.checkpoint).is_absolute()
        assert (shared / run.checkpoint).exists()  # relative to the results folder
    assert result.row("AT-FGSM-LR-L2").resolved_layers == ["L2"]
    # the Moon grid is the paper's raw ε divided by the scale of the configured data
    assert result.eps_paper == [0, 0.1, 0.2, 0.3, 0.4, 0.5]
    options = load_experiment("moon").data_options
    scale = moons_scale(options["n_samples"], options["noise"], 0)
    assert result.eps[5] == pytest.approx(0.5 / scale)
    # how each run computed is recorded (lsakit.numerics): this process's mode, one thread a run
    assert result.numerics is not None and result.numerics["mode"] == "default"
    for row in result.rows:
        recorded = row.runs[0].numerics
        assert recorded is not None and (recorded["mode"], recorded["threads"]) == ("default", 1)
    loaded = ExperimentResult.load(shared / "results.json")
    assert loaded == result
    assert result.reused_runs == 0
    out = tmp_path / "moon"
    shutil.copytree(shared, out)  # the shared run stays as it was; its copy is run again
    checkpoint = out / result.rows[3].runs[0].checkpoint
    stamp = checkpoint.stat().st_mtime_ns
    again = run_experiment("moon", "smoke", out)
    assert checkpoint.stat().st_mtime_ns == stamp  # not trained again
    assert again.reused_runs == 17
    assert [r.runs[0].accuracies for r in again.rows] == [r.runs[0].accuracies for r in result.rows]


def test_moon_protocols_override_the_top_level_by_name() -> None:
    config = load_experiment("moon")
    assert config.protocol_names() == ["strict", "paper"] and config.default_protocol == "strict"
    strict = config.under()
    assert strict.protocol == "strict" and strict.data_options == config.data_options
    assert strict.model_kwargs == {} and strict.lsa_perturbations == config.lsa_perturbations
    paper = config.under("paper")
    assert paper.protocol == "paper"
    assert paper.data_options == {
        **config.data_options,
        "noise": 0.2,
        "coordinates": "standardized",
    }
    assert paper.model_kwargs == {"outputs": 1}
    assert paper.train == {**config.train, "eps": 0.3, "schedule": "constant"}
    assert paper.methods["trades"] == {"alpha": 0.075, "beta": 6.0}  # merged per method
    assert not any(p.startswith(("salt", "pepper")) for p in paper.lsa_perturbations)
    with pytest.raises(ConfigError, match=r"no protocol 'nope'; protocols: strict, paper"):
        config.under("nope")
    with pytest.raises(ConfigError, match="no protocol 'paper'; protocols: strict"):
        load_experiment("cifar10-vgg").under("paper")  # CIFAR-10 has none


def test_mnist_paper_protocol_normalizes_inside_and_reads_the_lsa_unclamped() -> None:
    config = load_experiment("mnist")
    assert config.protocol_names() == ["strict", "paper"]
    paper = config.under("paper")
    assert paper.data_options == {} and paper.lsa_data_options == {"domain": "unbounded"}
    assert paper.model_kwargs == {"normalize": True} and paper.lsa_attack == "fgsm=0.3"
    assert paper.train == config.train  # the training settings are strict's
    assert "pepper=0.3,value=0" in paper.lsa_perturbations
    # training and the FGSM table clamp to [0, 1]; only the LSA reads the test set unclamped
    assert not datasets.domain("mnist", **paper.data_options).unbounded
    assert datasets.domain("mnist", **paper.lsa_data_options).unbounded
    assert config.under().lsa_data_options == {}
    cfg = train_config(paper, "quick", row_specs(paper, "quick")[1], 0, None)
    assert cfg.model_kwargs == {"normalize": True} and cfg.data_options == {}


def test_moon_paper_protocol_is_recorded_unbounded_and_never_clamps(
    moon_smoke_paper: tuple[ExperimentResult, Path],
) -> None:
    result, out = moon_smoke_paper
    assert result.protocol == "paper" and result.settings["protocol"] == "paper"
    assert "standardized" in result.settings["protocol_description"]
    assert result.settings["model_kwargs"] == {"outputs": 1}
    assert ExperimentResult.load(out / "results.json").protocol == "paper"
    # the paper's ε used directly, in standardized units
    assert result.eps == result.eps_paper == [0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert set(result.normal_lsa) == {"gaussian", "speckle", "fgsm", "pgd"}
    assert len(result.rows) == 17
    options = result.settings["data_options"]
    domain = datasets.domain("moons", **options)
    assert domain.unbounded
    model, _ = load_checkpoint(out / result.row("Normal").runs[0].checkpoint)
    assert model.fc4.out_features == 1  # one logit
    test = datasets.load("moons", "test", batch_size=256, shuffle=False, **options)
    x, y = next(iter(test))
    assert float(x.min()) < 0  # z-scores, outside [0, 1]
    with input_domain(domain):
        x_adv = FGSM(model, eps=0.5)(x, y)
    moved = (x_adv - x).abs().amax(dim=1) > 0
    assert bool(moved.any())
    # every moved coordinate moved by exactly ε: nothing was clipped to any box
    torch.testing.assert_close((x_adv - x)[moved].abs(), torch.full_like(x[moved], 0.5))


def test_cli_unknown_protocol_is_one_line_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["reproduce", "moon", "--protocol", "nope", "--profile", "smoke", "--out", str(out)],
        capsys,
    )
    assert code == 2 and "no protocol 'nope'; protocols: strict, paper" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_corrupt_results_file(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{broken")
    with pytest.raises(ResultsError, match=r"results\.json"):
        ExperimentResult.load(tmp_path / "results.json")
    (tmp_path / "results.json").write_text(json.dumps({"experiment": "moon"}))
    with pytest.raises(ResultsError, match="not a reproduction result"):
        ExperimentResult.load(tmp_path / "results.json")


@pytest.mark.slow
def test_cifar10_pipeline_end_to_end_on_a_tiny_fixture(tmp_path: Path) -> None:
    """Both CIFAR-10 experiments (VGG-19 and a small WRN) run on a CIFAR-format fixture."""
    write_cifar_batches(tmp_path / "data" / "cifar10" / "cifar-10-batches-py", per_batch=8)
    for name in SUITES["cifar10"]:
        result = run_experiment(name, "smoke", tmp_path / name, data_dir=tmp_path / "data")
        assert [r.name for r in result.rows] == ["Normal", "AT-APGD", "AT-APGD-LR-L1"]
        assert result.eps_paper == [0, 0.01, 0.03, 0.1, 0.2]
        assert result.row("AT-APGD-LR-L1").resolved_layers == ["L1"]
        assert all(len(r.runs[0].accuracies) == 5 for r in result.rows)


# --------------------------------------------------------------------------------------------
# The one grid runner, on a spec that trains nothing
# --------------------------------------------------------------------------------------------


class Counted(FrozenModel):
    value: int


class CountingSpec(RunSpec):
    """A run that adds its value to those of the runs it needs (a negative value fails)."""

    kind: ClassVar[str] = "test"
    value: int

    def execute(self, context: RunContext) -> RunOutcome:
        if self.value < 0:
            raise ConfigError(f"value {self.value} is negative")
        Path(context.run_dir).mkdir(parents=True, exist_ok=True)
        return RunOutcome(Counted(value=self.value), {}, 0, [])

    def summary(self, result: Mapping[str, Any]) -> str:
        return f"value {result['value']}"


def counting(row: str, value: int) -> CountingSpec:
    return CountingSpec(row=row, seed=0, train={}, evaluated_checkpoint="last", value=value)


def counting_grid(out: Path, a: int, b: int, c: int) -> list[GridRun[Any]]:
    def context(row: str) -> RunContext:
        return RunContext(run_dir=str(out / "runs" / row / "seed-0"), data_dir=None, device="cpu")

    def after_a(needed: Sequence[RunRecord]) -> CountingSpec:
        (source,) = needed
        assert source.spec["row"] == "a"  # derived from the record of the run it needs
        return counting("b", b)

    return [
        GridRun("a", 0, counting("a", a), context("a")),
        GridRun("b", 0, after_a, context("b"), after=(("a", 0),)),
        GridRun("c", 0, counting("c", c), context("c")),
    ]


def test_the_runner_reuses_a_record_only_under_its_key(tmp_path: Path) -> None:
    lines: list[str] = []
    first = run_grid(counting_grid(tmp_path, 1, 2, 3), LocalExecutor(), out_dir=tmp_path,
                     log=lines.append)  # fmt: skip
    assert {k: f.record.result["value"] for k, f in first.items()} == {
        ("a", 0): 1, ("b", 0): 2, ("c", 0): 3,
    }  # fmt: skip
    assert not any(f.reused for f in first.values())
    assert lines == ["  a seed 0: value 1", "  b seed 0: value 2", "  c seed 0: value 3"]
    saved = json.loads((tmp_path / "runs" / "b" / "seed-0" / "run.json").read_text())
    assert (saved["format"], saved["kind"], saved["numerics"]) == (2, "test", "default")
    assert saved["key"] == first["b", 0].record.key and saved["result"] == {"value": 2}
    assert saved["after"] == [first["a", 0].record.key]  # the key of the run it starts from
    lines.clear()
    again = run_grid(counting_grid(tmp_path, 1, 2, 3), LocalExecutor(), out_dir=tmp_path,
                     log=lines.append)  # fmt: skip
    assert all(f.reused for f in again.values())
    assert lines[0] == "  a seed 0: value 1 (reused)"
    # a changed: run again, and so is b, which starts from it; c is reused
    changed = run_grid(counting_grid(tmp_path, 5, 2, 3), LocalExecutor(), out_dir=tmp_path)
    assert {k: f.reused for k, f in changed.items()} == {
        ("a", 0): False, ("b", 0): False, ("c", 0): True,
    }  # fmt: skip
    # a record of the earlier runners' format (or unreadable) is not reused
    c = tmp_path / "runs" / "c" / "seed-0" / "run.json"
    c.write_text(json.dumps({"task": {}, "result": {"value": 3}}))
    assert not run_grid(counting_grid(tmp_path, 5, 2, 3), LocalExecutor(), out_dir=tmp_path)[
        "c", 0
    ].reused


def test_the_cache_key_is_the_specs_canonical_json_and_the_numerics_mode() -> None:
    spec = counting("a", 1)
    # the default mode is absent from the key: the spec's kind and canonical JSON alone
    canonical = json.dumps({"kind": "test", "spec": spec.model_dump(mode="json")},
                           sort_keys=True, separators=(",", ":"))  # fmt: skip
    assert run_key(spec, "default") == hashlib.sha256(canonical.encode()).hexdigest()
    assert run_key(spec, "portable") != run_key(spec, "default")  # reused only in its own mode
    assert run_key(spec, "default", ["k"]) != run_key(spec, "default")
    assert run_key(counting("a", 2), "default") != run_key(spec, "default")


def test_a_failed_run_skips_the_runs_that_need_it_and_keeps_the_others(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(GridError) as failed:
        run_grid(counting_grid(tmp_path, -1, 2, 3), LocalExecutor(), out_dir=tmp_path,
                 log=lines.append)  # fmt: skip
    assert failed.value.failed == [(("a", 0), "value -1 is negative")]
    assert str(failed.value).startswith(
        "run a seed 0 failed: value -1 is negative; 1 that need a failed run were not run. "
        "1 finished run is kept"
    )
    assert "  a seed 0: failed — value -1 is negative" in lines
    assert (tmp_path / "runs" / "c" / "seed-0" / "run.json").exists()
    assert not (tmp_path / "runs" / "b").exists()


def test_which_checkpoint_is_evaluated_is_declared() -> None:
    # reproductions evaluate the last epoch's model, studies the best validated one
    assert {load_experiment(n).evaluated_checkpoint for n in experiment_names()} == {"last"}
    assert {load_study(n).evaluated_checkpoint for n in study_names()} == {"best"}
    config = load_experiment("moon")
    rows = row_specs(config, "smoke")
    spec = ReproductionSpec(
        row="Normal", seed=0, evaluated_checkpoint=config.evaluated_checkpoint,
        train=train_config(config, "smoke", rows[0], 0, None).model_dump(mode="json"),
        eps=[0.0], lsa_attack=config.lsa_attack, lsa_data_options={}, test_limit=None,
        lsa_limit=None,
    )  # fmt: skip
    assert spec.model_dump()["evaluated_checkpoint"] == "last"  # part of the key
    assert run_key(spec.model_copy(update={"evaluated_checkpoint": "best"}), "default") != run_key(
        spec, "default"
    )
