"""The workflows as Python calls (lsakit.workflows): an nn.Module or a spec in, the CLI's defaults,
every argument checked before any work, errors in the caller's words, global random state kept,
and the CLI's --print-config / --config round trip."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import run_cli
from lsakit import workflows
from lsakit.config.workflows import AnalyzeOptions, EvaluateOptions
from lsakit.errors import ArgumentError, ConfigError
from lsakit.evaluate import paper_eps


@pytest.fixture(scope="module")
def moon_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model A trained normally on Moon for 5 epochs (in process, through the one trainer)."""
    from lsakit.config.presets import train_config
    from lsakit.train import train

    run_dir = tmp_path_factory.mktemp("moon")
    train(train_config({"dataset": "moons", "epochs": 5}), run_dir)
    return run_dir / "model.safetensors"


def _moon_mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2)
    )


def _random_states() -> tuple[object, ...]:
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state()


def test_analyze_takes_an_nn_module_and_leaves_the_global_generators_alone(
    tmp_path: Path,
) -> None:
    model = _moon_mlp()
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    before = _random_states()
    result = workflows.analyze(
        model, dataset="moons", perturbations=["gaussian=0.05", "fgsm=0.05"], limit=64,
        out=tmp_path, progress=False, log=None,
    )  # fmt: skip
    after = _random_states()
    assert after[0] == before[0] and after[1] == before[1]
    assert torch.equal(after[2], before[2])  # type: ignore[arg-type]
    assert [layer.module_name for layer in result.layers] == ["1", "3"]
    assert result.n_samples == 64 and result.names() == ["gaussian", "fgsm"]
    # the MVL list is chosen by the data set's rule: fgsm (the only attack), the preset's η
    assert result.meta["mvl"]["perturbation"] == "fgsm" and result.meta["mvl"]["eta"] == 0.5
    saved = json.loads((tmp_path / "lsa.json").read_text())
    assert saved["meta"]["mvl"] == result.meta["mvl"]
    assert (tmp_path / "lsa.png").stat().st_size > 0


def test_analyze_of_a_module_equals_the_core_analysis_under_the_same_seed(tmp_path: Path) -> None:
    """The workflow adds defaults and files, not numbers: its result equals lsakit.analyze on the
    same loader and perturbations under the preset's seed."""
    from lsakit import analyze, data, perturb
    from lsakit._torch import seed_everything

    model = _moon_mlp()
    result = workflows.analyze(
        model, dataset="moons", perturbations=["gaussian=0.05", "pgd=0.05,steps=3"], limit=96,
        batch_size=32, out=tmp_path, progress=False, log=None,
    )  # fmt: skip
    seed_everything(0)  # the moons preset's seed
    perturbations = {
        "gaussian": perturb.build("gaussian", model=model, strength=0.05),
        "pgd": perturb.build("pgd", model=model, strength=0.05, steps=3),
    }
    loader = data.load("moons", "test", batch_size=32, shuffle=False, limit=96)
    direct = analyze(model, loader, perturbations)
    assert [p.means() for p in result.perturbations] == [p.means() for p in direct.perturbations]


def test_errors_from_python_name_the_arguments_not_the_flags(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match=r"^batch_size must be an integer ≥ 1, got 0$"):
        workflows.analyze(dataset="moons", batch_size=0, out=tmp_path / "a")
    with pytest.raises(ArgumentError, match="unknown option 'batch'; did you mean batch_size"):
        workflows.analyze(dataset="moons", batch=10)
    with pytest.raises(ArgumentError) as caught:
        workflows.evaluate(
            checkpoint=tmp_path / "x.safetensors", suite="standard", attacks=["pgd=0.3"]
        )
    assert "suite runs its own attacks; drop attacks / fgsm_eps" in str(caught.value)
    assert "--" not in str(caught.value)
    assert not (tmp_path / "a").exists()


def test_every_argument_is_checked_before_a_model_is_trained(tmp_path: Path) -> None:
    """The issue's case: an unknown layer used to be refused after the model was trained and
    written into the output folder."""
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="unknown layer 'nosuch'"):
        workflows.analyze(dataset="moons", layers="nosuch", out=out, log=None)
    with pytest.raises(ConfigError, match="L9"):
        workflows.analyze(dataset="moons", layers=["L9"], out=out, log=None)
    with pytest.raises(ConfigError, match="perturbation"):
        workflows.analyze(dataset="moons", perturbations=["nosuch=0.1"], out=out, log=None)
    with pytest.raises(ConfigError):
        workflows.analyze(dataset="nosuch-data", out=out, log=None)
    assert not out.exists()


def test_the_cli_says_the_same_errors_in_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(
        ["analyze", "-d", "moons", "--layers", "nosuch", "--out", str(out)], capsys
    )
    assert code == 2 and "unknown layer 'nosuch'" in err
    code, _, err = run_cli(
        ["evaluate", "--checkpoint", "x.safetensors", "--suite", "standard", "-a", "pgd=0.3"],
        capsys,
    )
    assert code == 2
    assert "error: --suite runs its own attacks; drop --attack / --fgsm-eps" in err
    assert not out.exists()


def test_python_defaults_are_the_cli_defaults() -> None:
    """One declaration: each flag's default is the options model's field default."""
    import typer

    from lsakit.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name, cls in (("analyze", AnalyzeOptions), ("evaluate", EvaluateOptions)):
        params = {p.name: p for p in commands[name].params}
        assert set(cls.model_fields) <= set(params)
        for field, info in cls.model_fields.items():
            default = info.get_default(call_default_factory=True)
            expected = None if isinstance(default, (list, dict)) else default
            assert params[field].default == expected, (name, field)


def test_evaluate_uses_the_data_sets_grid_and_the_clis_attacks(moon_run: Path) -> None:
    """The issue's case: evaluate() used the MNIST ε grid for any data set and ran no attack."""
    result = workflows.evaluate(checkpoint=moon_run, limit=64, progress=False, log=None)
    assert [p.eps for p in result.fgsm] == list(paper_eps("moons"))
    assert list(result.attacks) == ["pgd", "apgd"]
    assert result.attacks["pgd"].params["steps"] == 20
    assert (moon_run.parent / "evaluation.json").exists()


def test_print_config_fed_back_through_config_gives_the_same_run(
    moon_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["analyze", "--checkpoint", str(moon_run), "-p", "gaussian=0.05", "-p",
             "fgsm=0.05", "--limit", "48", "--eta", "0.4"]  # fmt: skip
    code, printed, err = run_cli([*flags, "--out", str(tmp_path / "a"), "--print-config"], capsys)
    assert code == 0, err
    assert not (tmp_path / "a").exists()  # --print-config runs nothing
    config = tmp_path / "analyze.yaml"
    config.write_text(printed)
    code, again, _ = run_cli(["analyze", "--config", str(config), "--print-config"], capsys)
    assert code == 0 and again == printed
    assert run_cli([*flags, "--out", str(tmp_path / "a")], capsys)[0] == 0
    config.write_text(printed.replace(str(tmp_path / "a"), str(tmp_path / "b")))
    assert run_cli(["analyze", "--config", str(config)], capsys)[0] == 0
    first = json.loads((tmp_path / "a" / "lsa.json").read_text())
    second = json.loads((tmp_path / "b" / "lsa.json").read_text())
    assert first == second
    # flags override the file
    code, printed, _ = run_cli(
        ["analyze", "--config", str(config), "--limit", "7", "--print-config"], capsys
    )
    assert code == 0 and "limit: 7" in printed and "eta: 0.4" in printed


@pytest.mark.parametrize(
    "args",
    [
        [
            "evaluate",
            "--checkpoint",
            "runs/x/model.safetensors",
            "--suite",
            "standard",
            "--eps",
            "0.1",
            "--n-examples",
            "100",
            "--no-checks",
        ],
        [
            "train",
            "-d",
            "moons",
            "--method",
            "pgd",
            "--eps",
            "0.1",
            "--lr-layers",
            "L1,L2",
            "--gamma",
            "0.5,0.25",
            "--log-to",
            "tensorboard",
            "--model-arg",
            "outputs=2",
        ],
        ["prune", "runs/x", "--sparsity", "0.8", "--scope", "per_layer"],
        ["search", "--cells", "1", "--reductions", "1", "--no-lipschitz"],
        ["study", "lsp", "--profile", "smoke", "--seeds", "0,1", "--jobs", "2"],
        ["reproduce", "moon", "--profile", "smoke", "--protocol", "paper", "--no-report"],
    ],
    ids=lambda args: args[0],
)
def test_every_commands_print_config_reads_back_as_the_same_options(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--print-config → a file → --config FILE --print-config prints the same options, and
    runs nothing (no run directory appears)."""
    code, printed, err = run_cli([*args, "--print-config"], capsys)
    assert code == 0, err
    config = tmp_path / "config.yaml"
    config.write_text(printed)
    positional = (
        [a for a in args[1:2] if not a.startswith("-")]
        if args[0] in ("prune", "study", "reproduce")
        else []
    )
    code, again, err = run_cli(
        [args[0], *positional, "--config", str(config), "--print-config"], capsys
    )
    assert code == 0, err
    assert again == printed
    assert not Path("runs/x").exists()
