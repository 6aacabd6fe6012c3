"""The ``lsakit`` command line: a thin layer that wires the stages together.

Every user error is an :class:`~lsakit.errors.LsakitError`: printed as one ``error: …`` line on
stderr with exit code 2, no traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from torch import nn

from lsakit import __version__
from lsakit.errors import ConfigError, LsakitError

app = typer.Typer(
    name="lsakit",
    help="Layer-level adversarial robustness: Layer Sustainability Analysis (LSA) and friends.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are wide: when output is not a terminal (logs, CI), do not wrap them at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"lsakit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch (default: torch's, one per core). Use 1 for small models "
            "on a busy machine: oversubscribed threads can make them many times slower.",
        ),
    ] = None,
) -> None:
    """lsakit: which layers of a network break under adversarial attack, and how to fix them."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# -- shared options ------------------------------------------------------------------------------
DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="Data set (see `lsakit datasets`).")
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model (see `lsakit models`); default: the data set's."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (else $LSAKIT_DATA, else ~/.cache)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: the preset's).")]


def _config_from(base: Any, **overrides: Any) -> Any:
    """A copy of a pydantic config with the non-None overrides applied and validated."""
    values = {**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return type(base).model_validate(values)
    except ValidationError as e:
        first = e.errors()[0]
        name = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"invalid --{name.replace('_', '-')}: {first['msg']}") from None


# -- listing commands ------------------------------------------------------------------------------
@app.command("models")
def models_command() -> None:
    """List the models with their parameter counts."""
    from lsakit import models

    table = Table("name", "parameters", "input", "classes", "description", box=None)
    for name in models.names():
        info = models.info(name)
        params = models.count_parameters(models.build(name))
        shape = "×".join(str(s) for s in info.input_shape)
        table.add_row(name, f"{params:,}", shape, str(info.num_classes), info.description)
    out.print(table)


@app.command("datasets")
def datasets_command() -> None:
    """List the data sets."""
    from lsakit import data

    table = Table("name", "input", "classes", "default model", "description", box=None)
    for name in data.names():
        info = data.info(name)
        shape = "×".join(str(s) for s in info.input_shape)
        table.add_row(name, shape, str(info.num_classes), info.default_model, info.description)
    out.print(table)


# -- train -------------------------------------------------------------------------------------------
@app.command("train")
def train_command(
    dataset: DatasetOpt = "moons",
    model: ModelOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the preset's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd or adam.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay.")] = None,
    seed: SeedOpt = None,
    limit: Annotated[
        int | None, typer.Option(help="Use only the first N training samples.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run directory.")] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Train a model normally (clean cross-entropy); writes model.safetensors and metrics.jsonl."""
    from lsakit.presets import preset
    from lsakit.train import train

    config = _config_from(
        preset(dataset).train,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        limit=limit,
    )
    run_dir = out_dir or Path("runs") / f"train-{dataset}-{config.model}"
    out.print(f"training [bold]{config.model}[/] on [bold]{dataset}[/] → {run_dir}")
    result = train(config, run_dir, device=device, data_dir=data_dir, progress=True, log=out.print)
    out.print(f"checkpoint: {result.checkpoint}")


# -- analyze ----------------------------------------------------------------------------------------
@app.command("analyze")
def analyze_command(
    dataset: DatasetOpt = "moons",
    model: ModelOpt = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Trained model (.safetensors); default: train one first.")
    ] = None,
    perturb_specs: Annotated[
        list[str] | None,
        typer.Option(
            "--perturb",
            "-p",
            help="NAME[=STRENGTH][,key=value…], repeatable, e.g. gaussian=0.1 or pgd=0.3,steps=40 "
            "(default: the preset's noise and attacks).",
        ),
    ] = None,
    measure: Annotated[str, typer.Option(help="relative_error, mse, cosine_distance or linf.")] = (
        "relative_error"
    ),
    reduction: Annotated[str, typer.Option(help="sample (statistics over samples) or batch.")] = (
        "sample"
    ),
    eta: Annotated[float | None, typer.Option(help="MVL cut-off η (Algorithm 1).")] = None,
    mvl_from: Annotated[
        str | None, typer.Option(help="Perturbation whose result selects the MVL list.")
    ] = None,
    layers: Annotated[
        str | None, typer.Option(help="Comma-separated module names, globs or L<k> labels.")
    ] = None,
    split: Annotated[str, typer.Option(help="Data split to analyse.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Analyse only the first N samples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size for the analysis.")] = 256,
    seed: SeedOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output directory.")] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Layer Sustainability Analysis: per-layer measures under noise and attacks, and the MVL list."""
    from lsakit import data, perturb
    from lsakit._torch import seed_everything
    from lsakit.analysis import analyze
    from lsakit.checkpoint import load_checkpoint
    from lsakit.presets import preset
    from lsakit.report import plot_layer_curves
    from lsakit.train import CHECKPOINT_NAME, resolve_device, train

    recipe = preset(dataset)
    run_dir = out_dir or Path("runs") / f"analyze-{dataset}"
    dev = resolve_device(device)
    specs = list(perturb_specs or recipe.perturbations)
    parsed = [perturb.parse_spec(s) for s in specs]  # fail on a bad spec before any training
    names = [name for name, _, _ in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"each perturbation may be given once, got {', '.join(names)}")
    for name, strength, params in parsed:
        # Build each against a stand-in model once, so a bad name or value fails before training.
        perturb.build(name, model=nn.Identity(), strength=strength, **params)
    if checkpoint is not None:
        net, meta = load_checkpoint(checkpoint, map_location=dev)
        if model is not None and model != meta.model:
            raise ConfigError(
                f"--model {model} but {checkpoint} holds a {meta.model}; drop --model or pass "
                f"a checkpoint of {model}"
            )
        trained_on = meta.extra.get("dataset")
        if trained_on is not None and trained_on != dataset:
            raise ConfigError(
                f"{checkpoint} was trained on {trained_on}, not {dataset}; pass --dataset {trained_on}"
            )
        model_name, model_kwargs = meta.model, meta.model_kwargs
    else:
        config = _config_from(recipe.train, model=model, seed=seed)
        out.print(
            f"no --checkpoint: training [bold]{config.model}[/] normally on {dataset} first "
            f"({config.epochs} epochs) → {run_dir / CHECKPOINT_NAME}"
        )
        trained = train(config, run_dir, device=device, data_dir=data_dir, progress=True)
        out.print(f"clean test accuracy: {trained.metrics[-1]['test_accuracy']:.4f}")
        net, model_name, model_kwargs = trained.model, config.model, dict(config.model_kwargs)

    seed_everything(recipe.train.seed if seed is None else seed)
    perturbations = {
        name: perturb.build(name, model=net, strength=strength, **params)
        for name, strength, params in parsed
    }
    loader = data.load(
        dataset, split, batch_size=batch_size, shuffle=False, limit=limit, data_dir=data_dir
    )
    layer_spec = [s.strip() for s in layers.split(",") if s.strip()] if layers else None
    result = analyze(
        net,
        loader,
        perturbations,
        layers=layer_spec,
        measure=measure,
        reduction=reduction,
        progress=True,
        meta={
            "model": model_name,
            "model_kwargs": model_kwargs,
            "dataset": dataset,
            "split": split,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "perturbations": specs,
        },
    )
    eta_value = recipe.eta if eta is None else eta
    source = mvl_from or _default_mvl_source(result.names(), recipe.mvl_perturbation, perturbations)
    mvl = result.most_vulnerable_layers(eta_value, source)
    _print_result(result, mvl)
    out.print(
        f"MVL ({source}, η = {eta_value:g}): "
        + (", ".join(str(layer) for layer in mvl) if mvl else "none above the cut-off")
    )
    json_path = result.model_copy(
        update={
            "meta": {
                **result.meta,
                "mvl": {
                    "perturbation": source,
                    "eta": eta_value,
                    "layers": [la.label for la in mvl],
                },
            }
        }
    ).save(run_dir / "lsa.json")
    png = plot_layer_curves(
        result,
        run_dir / "lsa.png",
        mvl=mvl,
        title=f"LSA of {model_name} on {dataset} ({split}, {result.n_samples} samples)",
    )
    out.print(f"wrote {json_path} and {png}")


def _default_mvl_source(names: list[str], preferred: str, perturbations: dict[str, Any]) -> str:
    """The preset's attack when present, else the last adversarial perturbation, else the last."""
    if preferred in names:
        return preferred
    adversarial = [n for n in names if getattr(perturbations[n], "is_adversarial", False)]
    return (adversarial or names)[-1]


def _print_result(result: Any, mvl: list[Any]) -> None:
    table = Table(title=f"{result.measure} per layer (mean ± std over {result.reduction}s)")
    table.add_column("layer")
    table.add_column("module")
    for p in result.perturbations:
        table.add_column(p.name, justify="right")
    marked = {layer.label for layer in mvl}
    for i, layer in enumerate(result.layers):
        cells = []
        for p in result.perturbations:
            s = p.layers[i]
            cells.append("all-zero clean" if s.mean is None else f"{s.mean:.3f}±{s.std:.2f}")
        label = f"[bold red]{layer.label}*[/]" if layer.label in marked else layer.label
        table.add_row(label, layer.module_name, *cells)
    table.add_section()
    table.add_row("μ", "", *[_fmt(p.mu) for p in result.perturbations])
    table.add_row("σ", "", *[_fmt(p.sigma) for p in result.perturbations])
    table.add_row(
        "acc",
        f"clean {result.clean_accuracy:.3f}",
        *[_fmt(p.accuracy) for p in result.perturbations],
    )
    out.print(table)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


# -- entry point -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning user errors into one line and exit 2.

    Typer's standalone mode already handles usage errors (exit 2), --help and Ctrl-C; everything
    else that escapes a command lands here.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="lsakit")
    except LsakitError as e:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:
        if debug:
            raise
        err.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {e} (run with --debug for the "
            f"traceback, and please report it)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
