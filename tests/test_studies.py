"""The companion-method studies: declarative rows through the one trainer, reuse, report."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg

from lsakit.errors import ConfigError
from lsakit.experiments import runner
from lsakit.experiments.studies import StudyResult, load_study, run_study, study_names
from lsakit.report.study import study_figure

TINY = {
    "study": "tiny",
    "description": "a pipeline test on Moons",
    "dataset": "moons",
    "model": "model_a",
    "train": {"epochs": 1, "batch_size": 64, "limit": 256, "lr": 0.01, "eps": 0.05, "steps": 2,
              "val_fraction": 0.25, "val_steps": 1},
    "rows": [
        {"name": "plain", "train": {"method": "standard"}},
        {"name": "lsp", "train": {"method": "standard", "regularizer": ["lsp"]}},
        {"name": "pni", "train": {"method": "pni", "noise_injection": True}},
        {"name": "pni-pruned", "train": {"method": "pni", "noise_injection": True},
         "prune": {"source": "pni", "sparsity": 0.6}},
    ],
    "evaluation": {"attacks": ["pgd=0.05,steps=3"], "eot_attacks": ["eot_pgd=0.05,steps=2,samples=2"],
                   "repeats": 2, "knn_k": 3, "knn_samples": 40},
    "choices": ["a documented choice"],
    "profiles": {"quick": {"seeds": [0], "test_limit": 100, "notes": "tiny"}},
}  # fmt: skip


def write(tmp_path: Path, values: dict[str, object]) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_a_study_trains_every_row_evaluates_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_study(str(write(tmp_path, TINY)))
    result = run_study(config, "quick", tmp_path / "out")
    by_row = {r.row: r.metrics for r in result.runs}
    assert set(by_row) == {"plain", "lsp", "pni", "pni-pruned"}
    assert 0 <= by_row["plain"]["pgd=0.05,steps=3"] <= by_row["plain"]["clean"] <= 1
    assert 0 <= by_row["lsp"]["knn_overlap"] <= 1
    # Stochastic rows: repeated evaluations (std), EOT, and the noise switched off.
    assert "clean±" in by_row["pni"] and "eot_pgd=0.05,steps=2,samples=2" in by_row["pni"]
    assert "pgd=0.05,steps=3 (noise off)" in by_row["pni"]
    assert (
        "clean±" not in by_row["plain"] and "eot_pgd=0.05,steps=2,samples=2" not in by_row["plain"]
    )
    assert by_row["pni-pruned"]["sparsity"] == pytest.approx(0.6, abs=1e-3)
    # a study evaluates (and a pruned row fine-tunes) each run's best checkpoint
    assert {Path(r.checkpoint).name for r in result.runs} == {"best.safetensors"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| pni-pruned |" in report and "a documented choice" in report
    # One seed: a deterministic row has no spread to show; a noisy one has its repeats' std.
    assert result.summary["plain"]["clean"][1] is None
    assert result.summary["pni"]["clean"][1] == pytest.approx(by_row["pni"]["clean±"])
    lines = {line.split(" | ")[0]: line for line in report.splitlines() if line.startswith("| ")}
    assert "±" not in lines["| plain"] and lines["| pni"].count("±") >= 2
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 1000
    assert StudyResult.load(tmp_path / "out" / "results.json") == result

    # A second run reuses every finished run: nothing is trained again.
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr(runner, "train", no_training)
    again = run_study(config, "quick", tmp_path / "out")
    assert again.summary == result.summary


def test_shipped_studies_load_and_bad_ones_are_refused(tmp_path: Path) -> None:
    assert {"lsp", "rsr"} <= set(study_names())
    for name in study_names():
        assert load_study(name).study == name
    with pytest.raises(ConfigError, match="unknown study 'nope'"):
        load_study("nope")
    bad = {**TINY, "rows": [{"name": "x", "prune": {"source": "later", "sparsity": 0.5}}]}
    with pytest.raises(ConfigError, match="prunes later, not an earlier row"):
        load_study(str(write(tmp_path, bad)))
    with pytest.raises(ConfigError, match="no profile 'full'"):
        run_study(load_study(str(write(tmp_path, TINY))), "full", tmp_path / "o")


def test_a_search_row_trains_the_derived_cell_and_reports_its_lipschitz_bound(
    tmp_path: Path, shared_data: Path
) -> None:
    values = {
        "study": "tiny-racl", "description": "pipeline", "dataset": "mnist",
        "model": "genotype_net",
        "train": {"epochs": 1, "limit": 128, "batch_size": 64, "method": "standard",
                  "val_fraction": 0.25, "model_kwargs": {"cells": 1, "channels": 4}},
        "rows": [{"name": "searched", "search": {"lipschitz": True}}],
        "evaluation": {"attacks": ["fgsm=0.1"]},
        "profiles": {"quick": {"seeds": [0], "test_limit": 32,
                               "search": {"limit": 64, "epochs": 2, "cells": 1, "nodes": 2,
                                          "channels": 4, "batch_size": 32}}},
    }  # fmt: skip
    result = run_study(load_study(str(write(tmp_path, values))), "quick", tmp_path / "out",
                       data_dir=shared_data)  # fmt: skip
    metrics = result.runs[0].metrics
    assert {"mu_F", "sigma_F", "ln λ_F (power iteration)", "clean"} <= set(metrics)
    run_dir = tmp_path / "out" / "runs" / "searched" / "seed-0"
    for name in ("genotype.json", "search.json", "cell.png", "model.safetensors"):
        assert (run_dir / name).exists(), name


def test_the_search_command_prints_the_constraint_and_writes_the_genotype(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_data: Path
) -> None:
    from lsakit.cli import main
    from lsakit.nas.genotype import load_genotype

    with pytest.raises(SystemExit) as done:
        main(["search", "--cells", "1", "--nodes", "2", "--channels", "4", "--epochs", "2",
              "--limit", "64", "--out", str(tmp_path), "--data-dir", str(shared_data)])  # fmt: skip
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    assert "μ_F" in out and "σ_F" in out and " g " in out and " u " in out
    load_genotype(str(tmp_path / "genotype.json"))  # a valid genotype
    assert "--model-arg genotype=" in " ".join(out.split())  # rich may wrap the line
    # ... which `lsakit train` builds and trains through --model-arg (values read as YAML)
    with pytest.raises(SystemExit) as done:
        main(["train", "-d", "mnist", "-m", "genotype_net", "--model-arg",
              f"genotype={tmp_path / 'genotype.json'}", "--model-arg", "cells=1",
              "--model-arg", "channels=4", "--epochs", "1", "--limit", "64",
              "--out", str(tmp_path / "run"), "--data-dir", str(shared_data)])  # fmt: skip
    assert done.value.code in (0, None)
    from lsakit.checkpoint import read_meta

    kwargs = read_meta(tmp_path / "run" / "model.safetensors").model_kwargs
    assert kwargs["cells"] == 1 and kwargs["channels"] == 4
    # the checkpoint holds the genotype itself, not the path: it still loads once the file is gone
    assert load_genotype(kwargs["genotype"]) == load_genotype(str(tmp_path / "genotype.json"))
    (tmp_path / "genotype.json").unlink()
    from lsakit.checkpoint import load_checkpoint

    load_checkpoint(tmp_path / "run" / "model.safetensors")
    with pytest.raises(SystemExit) as done:
        main(["train", "--model-arg", "cells"])
    assert done.value.code == 2
    assert "--model-arg takes KEY=VALUE" in capsys.readouterr().err


def test_the_study_plot_keeps_its_legend_off_the_bars() -> None:
    # Tall bars everywhere: a legend inside the axes would cover one of them.
    metrics = {"clean": (0.97, 0.01), "pgd=0.05": (0.95, None), "fgsm=0.05": (0.96, 0.02)}
    summary = {row: dict(metrics) for row in ("plain", "lsp", "pni", "pni-pruned")}
    result = StudyResult(study="tiny", profile="quick", runs=[], summary=summary)
    fig = study_figure(result)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    (ax,) = fig.axes
    bars = [patch.get_window_extent(renderer) for patch in ax.patches]
    assert len(bars) == 4 * 3
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(metrics)
    box = legend.get_window_extent(renderer)
    assert box.y0 >= ax.get_window_extent(renderer).y1  # above the axes, outside them
    assert not any(box.overlaps(bar) for bar in bars)
