"""``lsakit train``: its flags are TrainConfig's fields (help, shown default and form from each
field's one declaration; an option left out is the --config file's, else the preset's), plus
the run's own options."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from lsakit.cli._app import app, main_rank, out
from lsakit.cli._derive import command, flag_words, given_values, parameters
from lsakit.config import options as decl
from lsakit.config.help import (
    DATA_DIR_DEFAULT,
    DEVICE_HELP,
    DOMAIN_DEFAULT,
    DOMAIN_HELP,
    field_default,
    field_help,
)
from lsakit.config.train import TrainConfig
from lsakit.errors import ConfigError
from lsakit.workflows._common import slug

DOC = """Train a model: normal or adversarial training, with the layer-wise regularizer, LSP, lasso
penalties or noise injection as configured.

Writes config.yaml, model.safetensors (last), best.safetensors (best robust validation
accuracy), metrics.jsonl and state.pt (for --resume: it records the data directory too) into
the run directory.
"""

#: The run's own options (not TrainConfig fields).
RUN_OPTIONS: dict[str, Any] = {
    "config_file": Annotated[Path | None, typer.Option(
        "--config", help="YAML file with any training option (flags override it).",
        show_default="none")],
    "resume": Annotated[Path | None, typer.Option(
        help="Continue the run in this directory from its last epoch (with --epochs N: extend "
        "it to N epochs).", show_default="none, a new run")],
    "overwrite": Annotated[bool, typer.Option(
        help="Delete a previous run in --out and start over.")],
    "print_config": Annotated[bool, typer.Option(
        "--print-config", help="Print the resolved config as YAML and exit (trains nothing).")],
    "out_dir": Annotated[Path | None, typer.Option(
        "--out", help="Run directory.", show_default="runs/train-DATASET-MODEL-METHOD")],
    "data_dir": Annotated[Path | None, typer.Option(
        "--data-dir", help="Data directory (a --resume finds the run's own: state.pt records it).",
        show_default=DATA_DIR_DEFAULT)],
    "device": Annotated[str, typer.Option("--device", help=DEVICE_HELP)],
}  # fmt: skip
_DEFAULTS = {"overwrite": False, "print_config": False, "device": "auto"}


def _parameters() -> list[inspect.Parameter]:
    fields = parameters(TrainConfig, help_of=field_help, shown_of=field_default, unset=True)
    at = [p.name for p in fields].index("data_options") + 1
    domain = inspect.Parameter("domain", inspect.Parameter.KEYWORD_ONLY, default=None,
                               annotation=Annotated[str | None, typer.Option(
                                   "--domain", help=DOMAIN_HELP, show_default=DOMAIN_DEFAULT)])  # fmt: skip
    run = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                          default=_DEFAULTS.get(name), annotation=annotation)
        for name, annotation in RUN_OPTIONS.items()
    ]  # fmt: skip
    return [*fields[:at], domain, *fields[at:], *run]


def train_command(ctx: typer.Context, **values: Any) -> None:
    words = {"out": "--out", "overwrite": "--overwrite", "resume": "--resume", "device": "--device"}
    with flag_words(TrainConfig, extra=words):
        _train(ctx, **values)


def _train(
    ctx: typer.Context,
    *,
    domain: str | None,
    config_file: Path | None,
    resume: Path | None,
    overwrite: bool,
    print_config: bool,
    out_dir: Path | None,
    data_dir: Path | None,
    device: str,
    **fields: Any,
) -> None:
    flags = {n: decl.flags(TrainConfig, n)[0].split("/")[0] for n in TrainConfig.model_fields
             if decl.flags(TrainConfig, n)}  # fmt: skip
    from lsakit.config.presets import train_config
    from lsakit.train import dump_config, load_config, load_run_config, resolve_device, train
    from lsakit.train.trainer import check_run_dir, resume_point
    from lsakit.workflows.analyze import check_model_and_data

    given = given_values(TrainConfig, ctx, fields)
    main_rank(resolve_device(device))
    given = {k: v for k, v in given.items() if v is not None}  # "--mvl-layers default" is unset
    if domain is not None:
        if "domain" in given.get("data_options", {}):
            raise ConfigError("the domain is given twice; use --domain or --data-option domain=")
        given["data_options"] = {**given.get("data_options", {}), "domain": domain}
    epochs = given.get("epochs")
    if resume is not None:
        refused = [flags.get(k, k) for k in given if k != "epochs"]
        refused += ["--config"] * (config_file is not None) + ["--overwrite"] * overwrite
        refused += ["--out"] * (out_dir is not None and out_dir != resume)
        if refused:
            raise ConfigError(
                f"--resume continues a run with its own config.yaml (--epochs N extends it); "
                f"drop {', '.join(refused)}"
            )
        config = load_run_config(resume).with_overrides(epochs=epochs)
        run_dir = resume
    else:
        config = load_config(config_file, **given) if config_file else train_config(given)
        run_dir = out_dir or Path("runs") / (
            f"train-{slug(config.dataset)}-{slug(config.model)}-{config.method}"
        )
    check_model_and_data(config)  # an unknown model or data set fails before anything is printed
    if print_config:
        typer.echo(dump_config(config), nl=False)
        return
    # Refusals before anything is printed: a --out holding a run, a run with nothing left to do.
    if resume is None:
        check_run_dir(run_dir, overwrite=overwrite)
        started = "training"
    else:
        point = resume_point(resume, config.epochs)
        if point.epoch > config.epochs:
            raise ConfigError(
                f"{resume} has trained {point.epoch} epochs already; --epochs {config.epochs} "
                "would shorten it"
            )
        if point.complete:
            out.print(_complete(point, config), highlight=False, soft_wrap=True)
            return
        started = f"resuming at epoch {point.epoch + 1}/{config.epochs}:"
    out.print(
        f"{started} [bold]{escape(config.model)}[/] on [bold]{escape(config.dataset)}[/] with "
        f"{config.method}"
        + (f" + LR on {', '.join(config.lr_layers)}" if config.lr_layers else "")
        + f" → {escape(str(run_dir))}"
    )
    result = train(
        config, run_dir, device=device, data_dir=data_dir, progress=True, log=out.print,
        resume=resume is not None, overwrite=overwrite,
    )  # fmt: skip
    out.print(f"last checkpoint: {result.checkpoint}; best: {result.best_checkpoint}")


def _complete(point: Any, config: Any) -> str:
    """The one line for a --resume with nothing left to train."""
    if point.stopped_early:
        done = f"early stopping ended it at epoch {point.epoch}/{point.epochs}"
        extend = ""
    else:
        done = f"{point.epoch}/{point.epochs} epochs"
        extend = " use --epochs N to extend it, or"
    return (
        f"{point.run_dir} is already complete ({done}); nothing to resume —{extend} start it over "
        f"with lsakit train --config {point.run_dir / 'config.yaml'} --out {point.run_dir} "
        "--overwrite"
    )


command(app, "train", _parameters(), train_command, DOC)
