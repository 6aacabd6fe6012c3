"""One declaration per option: the CLI's flags, --help, YAML configs and the README agree."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import typer
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.core import TyperOption

from conftest import REPO
from helpers import cli_output
from lsakit.cli import app
from lsakit.config import TrainConfig, load_config
from lsakit.errors import LsakitError
from lsakit.options import field_default, field_help, train_flags, update_readme


def test_the_readme_option_tables_are_the_generated_ones() -> None:
    assert update_readme(REPO / "docs" / "guide" / "cli.md", check=True), (
        "docs/guide/cli.md's option tables are out of date: run "
        "`python -m lsakit.options docs/guide/cli.md`"
    )


def test_every_option_of_every_command_shows_its_default() -> None:
    group = typer.main.get_command(app)
    commands = {"lsakit": group, **group.commands}  # type: ignore[attr-defined]
    missing = []
    for name, command in commands.items():
        for param in command.params:
            if not isinstance(param, TyperOption) or param.name == "help" or param.required:
                continue
            if param.is_flag and not param.secondary_opts:
                continue  # a plain switch (--debug, --quick): off unless given
            shown = isinstance(param.show_default, str) or (
                param.default is not None and param.show_default is not False
            )
            if not shown:
                missing.append(f"{name} {param.opts[0]}")
    assert missing == []


def test_train_help_and_defaults_come_from_the_config_fields() -> None:
    flags = train_flags()
    assert flags["beta"].help == "TRADES / MART trade-off β." and flags["beta"].show_default == "6"
    assert flags["method"].help == (
        "Training objective: standard, fgsm, fast, pgd, trades, mart, apgd, pni."
    )
    assert flags["epochs"].show_default == (
        "preset: moons 20, mnist 3, fashion-mnist 5, cifar10 100; own data 10"
    )
    assert field_default("lr").startswith("preset: moons 0.01, mnist 0.001")
    assert field_default("alpha") == "the method's" and field_default("milestones") == "0.5,0.75"
    assert (
        field_help("regularizer") == "Extra penalties: lsp, lasso, group_lasso (comma-separated)."
    )
    # the data set's own default: --help of analyze shows η of the presets, search its config's
    code, out, _ = cli_output(["analyze", "--help"])
    assert code == 0 and "0.5, every preset's" in out


def test_a_yaml_config_starts_from_the_data_sets_preset(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("dataset: moons\nmethod: pgd\n")
    config = load_config(path)  # no model: the data set's; lr, batch, epochs: the preset's
    assert (config.model, config.lr, config.batch_size, config.epochs) == ("model_a", 0.01, 32, 20)
    assert config.eps == 0.05  # an adversarial method trains at the preset's ε
    path.write_text("dataset: mnist\nlr: 0.002\n")
    config = load_config(path, epochs=1)
    assert (config.model, config.lr, config.batch_size, config.epochs) == ("model_b", 0.002, 128, 1)


# -- YAML ≡ flags ---------------------------------------------------------------------------------
#: A value of every field a flag sets (valid and invalid combinations alike).
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "dataset": st.sampled_from(["moons", "mnist"]),
    "model": st.sampled_from(["model_a", "model_b"]),
    "data_options": st.sampled_from([{"n_samples": 300}, {"noise": 0.2, "n_samples": 200}]),
    "limit": st.integers(1, 5000),
    "test_limit": st.integers(1, 500),
    "val_fraction": st.sampled_from([0.0, 0.2, 0.5]),
    "method": st.sampled_from(["standard", "fgsm", "fast", "pgd", "trades", "mart", "apgd", "pni"]),
    "eps": st.sampled_from([0.0, 0.1, 0.3]),
    "alpha": st.sampled_from([0.01, 0.375]),
    "steps": st.integers(1, 40),
    "beta": st.sampled_from([1.0, 6.0]),
    "eps_warmup": st.sampled_from([0.0, 1.5]),
    "lr_layers": st.sampled_from([["L2"], ["L0", "L1"], ["mvl"], ["fc1"]]),
    "gamma": st.sampled_from([0.5, [0.1, 0.2]]),
    "grad_through": st.sampled_from(["both", "adversarial", "clean"]),
    "eta": st.sampled_from([0.3, 0.5]),
    "mvl_checkpoint": st.just("runs/normal/model.safetensors"),
    "mvl_epoch": st.integers(0, 3),
    "mvl_layers": st.just(["type:Linear"]),
    "regularizer": st.sampled_from([["lsp"], ["lasso", "group_lasso"]]),
    "lsp_weight": st.sampled_from([0.1, 2.0]),
    "lsp_variant": st.sampled_from(["kl", "laplacian"]),
    "lsp_layer": st.just("fc2"),
    "lsp_on": st.sampled_from(["clean", "clean+adv"]),
    "lsp_k": st.integers(1, 10),
    "lsp_bandwidth": st.sampled_from(["median", "perplexity"]),
    "lsp_perplexity": st.sampled_from([10.0, 30.0]),
    "lasso_weight": st.sampled_from([1e-5, 1e-3]),
    "group_lasso_weight": st.sampled_from([1e-5, 1e-3]),
    "noise_injection": st.booleans(),
    "alpha_init": st.sampled_from([0.1, 0.25]),
    "init_checkpoint": st.just("runs/dense/model.safetensors"),
    "epochs": st.integers(1, 30),
    "batch_size": st.integers(1, 256),
    "optimizer": st.sampled_from(["sgd", "adam"]),
    "lr": st.sampled_from([1e-4, 0.05]),
    "momentum": st.sampled_from([0.0, 0.9]),
    "weight_decay": st.sampled_from([0.0, 5e-4]),
    "schedule": st.sampled_from(["constant", "multistep", "cosine", "cyclic"]),
    "milestones": st.sampled_from([[0.3], [0.25, 0.5, 0.9]]),
    "lr_decay": st.sampled_from([0.2, 1.0]),
    "seed": st.integers(0, 9),
    "val_steps": st.integers(1, 20),
    "early_stopping": st.integers(1, 5),
    "amp": st.sampled_from(["off", "bf16", "fp16"]),
    "channels_last": st.booleans(),
    "compile": st.booleans(),
    "log_to": st.sampled_from([["tensorboard"], ["tensorboard", "mlflow"]]),
}


def test_the_property_covers_every_field_a_flag_sets() -> None:
    fields = {name for name in train_flags() if name in TrainConfig.model_fields}
    assert set(VALUES) == fields - {"model_kwargs"}  # --model-arg: any model's own arguments


def _flags(values: dict[str, Any]) -> list[str]:
    """``values`` as lsakit train's flags."""
    args: list[str] = []
    for name, value in values.items():
        param = train_flags()[name]
        if name == "data_options":
            args += [a for k, v in value.items() for a in ("--data-option", f"{k}={v}")]
        elif isinstance(value, bool):
            args.append(param.opts[0] if value else param.secondary_opts[0])
        elif isinstance(value, list):
            args += [param.opts[0], ",".join(str(v) for v in value)]
        else:
            args += [param.opts[0], str(value)]
    return args


#: The click command behind `lsakit` built once (typer rebuilds it on every call of main()).
COMMAND = typer.main.get_command(app)


def _printed(args: list[str], source: Path) -> tuple[int, Any]:
    """The config `lsakit train … --print-config` resolves, or its error (the source named
    alike)."""
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            COMMAND.main(["train", *args, "--print-config"], standalone_mode=False)
    except LsakitError as e:  # main() prints these as one `error:` line, exit 2
        assert "\n" not in str(e)
        return 2, str(e).replace(str(source), "options")
    return 0, yaml.safe_load(out.getvalue())


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.fixed_dictionaries({}, optional=VALUES), data=st.data())
def test_a_yaml_config_and_the_same_flags_give_the_same_config(
    tmp_path: Path, values: dict[str, Any], data: st.DataObject
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))  # the flags' order
    by_flags = _printed(_flags(values), path)
    by_yaml = _printed(["--config", str(path)], path)
    assert by_yaml == by_flags
    event("accepted" if by_flags[0] == 0 else "refused by both")
    # Part in the file, the rest as flags over it: still the same.
    in_file = data.draw(st.sets(st.sampled_from(sorted(values)))) if values else set()
    path.write_text(
        yaml.safe_dump({k: v for k, v in values.items() if k in in_file}, sort_keys=False)
    )
    rest = {k: v for k, v in values.items() if k not in in_file}
    assert _printed(["--config", str(path), *_flags(rest)], path) == by_flags
    if by_flags[0] == 0:  # and the flags' config is the preset with the values over it
        config = TrainConfig.model_validate(by_flags[1])
        preset_lr = {"moons": 0.01, "mnist": 0.001}[values.get("dataset", "moons")]
        assert config.lr == values.get("lr", preset_lr)
        assert {k: getattr(config, k) for k in values} == values
