"""The ``lsakit`` command line: a thin layer that wires the stages together.

Every user error is an :class:`~lsakit.errors.LsakitError`: printed as one ``error: …`` line on
stderr with exit code 2, no traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

from lsakit import __version__
from lsakit.analysis import DEFAULT_ETA
from lsakit.errors import ConfigError, LsakitError
from lsakit.options import OWN_DATA_EPS, preset_text, train_option
from lsakit.presets import DEFAULT_DATASET
from lsakit.train.config import TrainConfig

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
            help="CPU threads for torch. Use 1 for small models on a busy machine: "
            "oversubscribed threads can make them many times slower.",
            show_default="torch's, one per core",
        ),
    ] = None,
    numerics_mode: Annotated[
        str | None,
        typer.Option(
            "--numerics",
            help="default (each math library's fastest path on this CPU) or portable (MKL, "
            "ATen and oneDNN pinned: the same seed gives the same numbers on x86-64 CPUs of "
            "another make, at the same --threads; recorded in results.json).",
            show_default="$LSAKIT_NUMERICS, else default",
        ),
    ] = None,
) -> None:
    """lsakit: which layers of a network break under adversarial attack, and how to fix them."""
    if numerics_mode is not None:  # first: the libraries read their paths at their first use
        from lsakit import numerics

        numerics.use(numerics_mode)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# -- shared options ------------------------------------------------------------------------------
DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="Data set (see `lsakit datasets`).")
]
ModelOpt = Annotated[str | None, train_option("model", "--model", "-m")]
ModelArgsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model-arg",
        help="Model constructor argument KEY=VALUE (repeatable; VALUE read as YAML), e.g. "
        "num_classes=2 for timm:/torchvision:, num_labels=2 or task=… for hf:, "
        "genotype=runs/search/genotype.json for genotype_net; pretrained weights: "
        "weights=DEFAULT (torchvision:), pretrained=true (timm:), revision=REV (hf:ORG/NAME), "
        "dataset=, threat_model=, model_dir= (robustbench:).",
        show_default="none",
    ),
]
DataOptionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data-option",
        help="Data set option KEY=VALUE (repeatable; VALUE read as YAML), e.g. size=32, mode=L "
        "for folder:PATH; test_fraction=0.2, data_seed=0 for your own data; noise=0.2 for moons.",
        show_default="the data set's",
    ),
]
DomainOpt = Annotated[
    str | None,
    typer.Option(
        "--domain",
        help="Input domain of a tensor-file data set: LOW,HIGH, unit or unbounded.",
        show_default="the file's domain field, else 0,1",
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory.",
        show_default="$LSAKIT_DATA, else ~/.cache/lsakit/data",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SeedOpt = Annotated[int | None, train_option("seed", "--seed")]
LogToOpt = Annotated[str | None, train_option("log_to", "--log-to")]
AmpOpt = Annotated[
    str,
    typer.Option(
        help="Mixed precision of the attacks' forwards: off, bf16 or fp16 (GPU; clean forwards "
        "stay in full precision)."
    ),
]


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


# -- train -------------------------------------------------------------------------------------
# Every option that sets a TrainConfig field takes its help and shown default from the field
# (lsakit.options.train_option); an option left out is the --config file's, else the preset's.
@app.command("train")
def train_command(
    dataset: Annotated[str | None, train_option("dataset", "--dataset", "-d")] = None,
    model: Annotated[str | None, train_option("model", "--model", "-m")] = None,
    model_args: ModelArgsOpt = None,
    data_option: DataOptionsOpt = None,
    domain: DomainOpt = None,
    limit: Annotated[int | None, train_option("limit")] = None,
    test_limit: Annotated[int | None, train_option("test_limit")] = None,
    val_fraction: Annotated[float | None, train_option("val_fraction")] = None,
    # objective
    method: Annotated[str | None, train_option("method")] = None,
    eps: Annotated[float | None, train_option("eps")] = None,
    alpha: Annotated[float | None, train_option("alpha")] = None,
    steps: Annotated[int | None, train_option("steps")] = None,
    beta: Annotated[float | None, train_option("beta")] = None,
    eps_warmup: Annotated[float | None, train_option("eps_warmup")] = None,
    # the layer-wise regularizer (AT-LR)
    lr_layers: Annotated[str | None, train_option("lr_layers")] = None,
    gamma: Annotated[str | None, train_option("gamma")] = None,
    grad_through: Annotated[str | None, train_option("grad_through")] = None,
    eta: Annotated[float | None, train_option("eta")] = None,
    mvl_checkpoint: Annotated[str | None, train_option("mvl_checkpoint")] = None,
    mvl_epoch: Annotated[int | None, train_option("mvl_epoch")] = None,
    mvl_layers: Annotated[str | None, train_option("mvl_layers")] = None,
    # companion regularizers and defenses
    regularizer: Annotated[str | None, train_option("regularizer")] = None,
    lsp_weight: Annotated[float | None, train_option("lsp_weight")] = None,
    lsp_variant: Annotated[str | None, train_option("lsp_variant")] = None,
    lsp_layer: Annotated[str | None, train_option("lsp_layer")] = None,
    lsp_on: Annotated[str | None, train_option("lsp_on")] = None,
    lsp_k: Annotated[int | None, train_option("lsp_k")] = None,
    lsp_bandwidth: Annotated[str | None, train_option("lsp_bandwidth")] = None,
    lsp_perplexity: Annotated[float | None, train_option("lsp_perplexity")] = None,
    lasso_weight: Annotated[float | None, train_option("lasso_weight")] = None,
    group_lasso_weight: Annotated[float | None, train_option("group_lasso_weight")] = None,
    noise_injection: Annotated[
        bool | None, train_option("noise_injection", "--noise-injection/--no-noise-injection")
    ] = None,
    alpha_init: Annotated[float | None, train_option("alpha_init")] = None,
    init_checkpoint: Annotated[str | None, train_option("init_checkpoint")] = None,
    # optimization
    epochs: Annotated[int | None, train_option("epochs")] = None,
    batch_size: Annotated[int | None, train_option("batch_size")] = None,
    optimizer: Annotated[str | None, train_option("optimizer")] = None,
    lr: Annotated[float | None, train_option("lr")] = None,
    momentum: Annotated[float | None, train_option("momentum")] = None,
    weight_decay: Annotated[float | None, train_option("weight_decay")] = None,
    schedule: Annotated[str | None, train_option("schedule")] = None,
    milestones: Annotated[str | None, train_option("milestones")] = None,
    lr_decay: Annotated[float | None, train_option("lr_decay")] = None,
    seed: Annotated[int | None, train_option("seed")] = None,
    # validation, speed, tracking
    val_steps: Annotated[int | None, train_option("val_steps")] = None,
    early_stopping: Annotated[int | None, train_option("early_stopping")] = None,
    amp: Annotated[str | None, train_option("amp")] = None,
    channels_last: Annotated[
        bool | None, train_option("channels_last", "--channels-last/--no-channels-last")
    ] = None,
    compile: Annotated[bool | None, train_option("compile", "--compile/--no-compile")] = None,
    log_to: LogToOpt = None,
    # the run
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML file with any training option (flags override it).",
            show_default="none",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run in this directory from its last epoch (with --epochs N: "
            "extend it to N epochs).",
            show_default="none, a new run",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Delete a previous run in --out and start over.")
    ] = False,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="Print the resolved config as YAML and exit (trains nothing)."
        ),
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Run directory.", show_default="runs/train-DATASET-MODEL-METHOD"
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Data directory (a --resume finds the run's own: state.pt records it).",
            show_default="$LSAKIT_DATA, else ~/.cache/lsakit/data",
        ),
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Train a model: normal or adversarial training, with the layer-wise regularizer, LSP, lasso
    penalties or noise injection as configured.

    Writes config.yaml, model.safetensors (last), best.safetensors (best robust validation
    accuracy), metrics.jsonl and state.pt (for --resume: it records the data directory too) into
    the run directory.
    """
    # The options that set TrainConfig fields (parameters named as the fields), before any other
    # local variable exists.
    given = {k: v for k, v in locals().items() if k in TrainConfig.model_fields and v is not None}
    from lsakit.presets import train_config
    from lsakit.train import dump_config, load_config, load_run_config, resolve_device, train
    from lsakit.train.trainer import check_run_dir, resume_point

    _main_rank(resolve_device(device))
    for key, parse in _LIST_OPTIONS.items():
        if key in given:
            given[key] = parse(given[key])
    given = {k: v for k, v in given.items() if v is not None}  # "--layers default" is unset
    data_options = _data_options(data_option, domain)
    if resume is not None:
        refused = [f"--{k.replace('_', '-')}" for k in given if k != "epochs"]
        refused += ["--model-arg"] * bool(model_args) + ["--data-option"] * bool(data_options)
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
        if model_args:
            given["model_kwargs"] = _model_args(model_args)
        if data_options:
            given["data_options"] = data_options
        config = load_config(config_file, **given) if config_file else train_config(given)
        run_dir = out_dir or Path("runs") / (
            f"train-{_slug(config.dataset)}-{_slug(config.model)}-{config.method}"
        )
    _check_model_and_data(config)  # an unknown model or data set fails before anything is printed
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


@app.command("prune")
def prune_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished `lsakit train` run directory.")],
    sparsity: Annotated[
        float, typer.Option(help="Fraction of conv/linear weights to zero, e.g. 0.85.")
    ],
    scope: Annotated[
        str,
        typer.Option(
            "--scope", help="global (one magnitude threshold) or per_layer (each layer alike)."
        ),
    ] = "global",
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Weights to prune.",
            show_default="RUN_DIR/best.safetensors, else RUN_DIR/model.safetensors",
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Masked fine-tuning epochs.", show_default="a fifth of the run's"),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Fine-tuning learning rate.", show_default="the run's")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory.", show_default="RUN_DIR/pruned-SPARSITY"),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Delete a previous pruning run in the output and start over.")
    ] = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Magnitude-prune a trained model, then fine-tune it with the mask fixed under the run's loss.

    The run's config.yaml is reused (objective, regularizers, noise injection); the pruned
    weights stay exactly zero through fine-tuning and in the checkpoints, and the sparsity
    reported is counted from the saved weights.
    """
    from lsakit.checkpoint import load_checkpoint
    from lsakit.defenses.sparsity import sparsity_report
    from lsakit.train import load_run_config, train

    config = load_run_config(run_dir)
    source = checkpoint
    if source is None:
        best = run_dir / "best.safetensors"
        source = best if best.exists() else run_dir / "model.safetensors"
    if scope not in ("global", "per_layer"):
        raise ConfigError(f"--scope must be global or per_layer, got {scope!r}")
    pruned = config.with_overrides(
        init_checkpoint=str(source), prune_sparsity=sparsity, prune_scope=scope, lr=lr,
        epochs=epochs if epochs is not None else max(1, config.epochs // 5),
    )  # fmt: skip
    target = out_dir or run_dir / f"pruned-{sparsity:g}"
    out.print(f"pruning {source} to {sparsity:.0%} ({scope}), fine-tuning → {target}")
    result = train(
        pruned, target, device=device, data_dir=data_dir, progress=True, log=out.print,
        overwrite=overwrite,
    )  # fmt: skip
    saved = result.best_checkpoint or result.checkpoint
    assert saved is not None
    model, _ = load_checkpoint(saved, model=config.model)
    report = sparsity_report(model)
    out.print(
        f"{saved}: {report['zeros']:,} of {report['total']:,} conv/linear weights are zero "
        f"(sparsity {report['sparsity']:.2%}, counted from the saved weights)"
    )


def _main_rank(dev: Any) -> bool:
    """Under torchrun: join the process group; only rank 0 prints and writes. True on rank 0."""
    from lsakit import distributed

    distributed.init(dev)
    main_rank = distributed.is_main_process()
    out.quiet = not main_rank
    return main_rank


def _seed_list(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` → [0, 1, 2]; None when not given."""
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got {text!r}") from None


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _milestones(text: str) -> list[float]:
    try:
        return [float(part) for part in _split(text) or []]
    except ValueError:
        raise ConfigError(f"--milestones takes comma-separated fractions, got {text!r}") from None


def _layers(text: str) -> list[str] | None:
    from lsakit.probe import parse_layers

    return parse_layers(text)


#: ``lsakit train``'s comma-separated options and how each becomes its TrainConfig field.
_LIST_OPTIONS: dict[str, Any] = {
    "lr_layers": _split, "gamma": lambda text: _gammas(text), "mvl_layers": _layers,
    "regularizer": _split, "log_to": _split, "milestones": _milestones,
}  # fmt: skip


def _model_args(items: list[str], flag: str = "--model-arg") -> dict[str, Any]:
    """``KEY=VALUE`` pairs of --model-arg; each VALUE read as YAML (numbers, lists, strings)."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            parsed[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{flag} {key.strip()}: cannot read {text!r}") from None
    return parsed


def _data_options(items: list[str] | None, domain: str | None) -> dict[str, Any]:
    """--data-option KEY=VALUE pairs, with --domain as the ``domain`` option."""
    options = _model_args(items or [], "--data-option")
    if domain is not None:
        if "domain" in options:
            raise ConfigError("the domain is given twice; use --domain or --data-option domain=")
        options["domain"] = domain
    return options


def _check_model_and_data(config: Any) -> None:
    """Resolve the model spec and describe the data set: a missing package, factory or file, an
    unknown name or bad data fails here, before anything is printed or trained."""
    from lsakit import data, models

    models.resolve(config.model, config.model_kwargs)
    data.info(config.dataset, **config.data_options)


def _slug(spec: str) -> str:
    """A file-name-safe short form of a model or data set spec for default run directories:
    ``timm:resnet18`` → ``timm-resnet18``, ``folder:/data/pets`` → ``folder-pets``,
    ``nets/small.py:make`` → ``small-make``, ``/tmp/x.npz`` → ``x``."""
    parts = [Path(part).stem if ("/" in part or "." in part) else part for part in spec.split(":")]
    text = "-".join(p for p in parts if p) or "model"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _recorded_data_options(checkpoint: Path, dataset: str | None) -> dict[str, Any]:
    """The data options an lsakit checkpoint was trained with, when it names ``dataset`` (or
    ``dataset`` is None); {} for plain state dicts and other data sets."""
    from lsakit.checkpoint import read_meta
    from lsakit.errors import CheckpointError

    try:
        meta = read_meta(checkpoint)
    except CheckpointError:
        return {}  # not an lsakit checkpoint (or unreadable: loading it says why)
    if dataset is not None and meta.extra.get("dataset") != dataset:
        return {}
    config = meta.extra.get("config")
    options = config.get("data_options") if isinstance(config, dict) else None
    return dict(options) if isinstance(options, dict) else {}


def _gammas(text: str | None) -> float | list[float] | None:
    parts = _split(text)
    if parts is None:
        return None
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--gamma takes numbers (one, or one per layer), got {text!r}") from None
    return values[0] if len(values) == 1 else values


# -- analyze ----------------------------------------------------------------------------------------
@app.command("analyze")
def analyze_command(
    dataset: DatasetOpt = DEFAULT_DATASET,
    model: ModelOpt = None,
    model_args: ModelArgsOpt = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Trained model: an lsakit checkpoint, or a plain state dict (.safetensors, .pt) "
            "of --model.",
            show_default="none: train the data set's model normally first",
        ),
    ] = None,
    data_option: DataOptionsOpt = None,
    domain: DomainOpt = None,
    perturb_specs: Annotated[
        list[str] | None,
        typer.Option(
            "--perturb",
            "-p",
            help="NAME[=STRENGTH][,key=value…], repeatable, e.g. gaussian=0.1 or pgd=0.3,steps=40.",
            show_default="the preset's noise and attacks",
        ),
    ] = None,
    measure: Annotated[str, typer.Option(help="relative_error, mse, cosine_distance or linf.")] = (
        "relative_error"
    ),
    reduction: Annotated[str, typer.Option(help="sample (statistics over samples) or batch.")] = (
        "sample"
    ),
    eta: Annotated[
        float | None,
        typer.Option(
            help="MVL cut-off η (Algorithm 1).",
            show_default=preset_text(lambda p: p.eta, DEFAULT_ETA),
        ),
    ] = None,
    mvl_from: Annotated[
        str | None,
        typer.Option(
            help="Perturbation whose result selects the MVL list.",
            show_default="the preset's attack (pgd), else the last adversarial one",
        ),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(
            help="Layers to measure, comma-separated: module names, name#k (k-th call of a "
            "reused module), globs, L<k> labels or type:ClassName (e.g. type:Conv2d).",
            show_default="every activation module",
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Data split to analyse: train or test.")] = "test",
    limit: Annotated[
        int | None, typer.Option(help="Analyse only the first N samples.", show_default="all")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size for the analysis.")] = 256,
    seed: SeedOpt = None,
    amp: AmpOpt = "off",
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory.", show_default="runs/analyze-DATASET"),
    ] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Layer Sustainability Analysis: per-layer measures under noise and attacks, and the MVL list."""
    from lsakit import data, perturb, speed
    from lsakit._torch import seed_everything
    from lsakit.analysis import analyze
    from lsakit.checkpoint import load_weights
    from lsakit.presets import preset
    from lsakit.report import plot_layer_curves
    from lsakit.train import CHECKPOINT_NAME, resolve_device, train

    data_options = _data_options(data_option, domain)
    if checkpoint is not None and not data_options:
        data_options = _recorded_data_options(checkpoint, dataset)
    recipe = preset(dataset, **data_options)
    run_dir = out_dir or Path("runs") / f"analyze-{_slug(dataset)}"
    dev = resolve_device(device)
    main_rank = _main_rank(dev)
    specs = list(perturb_specs or recipe.perturbations)
    parsed = [perturb.parse_spec(s) for s in specs]  # fail on a bad spec before any training
    names = [name for name, _, _ in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"each perturbation may be given once, got {', '.join(names)}")
    for name, strength, params in parsed:
        # Build each against a stand-in model once, so a bad name or value fails before training.
        perturb.build(name, model=nn.Identity(), strength=strength, **params)
    # The analysis's own options, too, are checked before a model is trained for it.
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be ≥ 1, got {limit}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be ≥ 1, got {batch_size}")
    if split not in ("train", "test"):
        raise ConfigError(f"--split must be train or test, got {split!r}")
    speed.check_amp(amp)
    kwargs = _model_args(model_args or [])
    preprocessing, weights_meta = None, {}
    if checkpoint is not None:
        net, meta = load_weights(checkpoint, model=model, model_kwargs=kwargs, map_location=dev)
        trained_on = meta.extra.get("dataset")
        if trained_on is not None and trained_on != dataset:
            raise ConfigError(
                f"{checkpoint} was trained on {trained_on}, not {dataset}; pass --dataset {trained_on}"
            )
        model_name, model_kwargs = meta.model, meta.model_kwargs
        preprocessing = meta.preprocessing
    elif model is not None and _pretrained(model, kwargs):
        loaded = _load_pretrained(model, kwargs)  # its weights are the model analysed
        net, model_name, model_kwargs = loaded.model.to(dev).eval(), model, kwargs
        preprocessing, weights_meta = loaded.preprocessing, _weights_meta(loaded)
    else:
        config = recipe.train.with_overrides(
            model=model, seed=seed, model_kwargs=_model_args(model_args) if model_args else None,
            data_options=data_options or None,
        )  # fmt: skip
        _check_model_and_data(config)  # before anything is printed or trained
        out.print(
            f"no --checkpoint: training [bold]{config.model}[/] normally on {dataset} first "
            f"({config.epochs} epochs) → {run_dir / CHECKPOINT_NAME}"
        )
        # The model analyze trains for itself is one of its own outputs: a rerun replaces it.
        trained = train(
            config, run_dir, device=device, data_dir=data_dir, progress=True, overwrite=True
        )
        out.print(f"clean test accuracy: {trained.metrics[-1]['test_accuracy']:.4f}")
        net, model_name, model_kwargs = trained.model, config.model, dict(config.model_kwargs)

    seed_everything(recipe.train.seed if seed is None else seed)
    perturbations = {
        name: perturb.build(name, model=net, strength=strength, **params)
        for name, strength, params in parsed
    }
    loader: Any = data.load(
        dataset, split, batch_size=batch_size, shuffle=False, limit=limit, data_dir=data_dir,
        transform=_transform(preprocessing), **data_options,
    )  # fmt: skip
    loader = _labels_for(net, loader, dataset, data_options)
    from lsakit.probe import parse_layers

    layer_spec = parse_layers(layers)
    with speed.attack_precision(amp):
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
                **({"data_options": data_options} if data_options else {}),
                "split": split,
                "checkpoint": str(checkpoint) if checkpoint else None,
                **weights_meta,
                **_data_meta(dataset, data_options),
                "perturbations": specs,
                **({"amp": amp} if amp != "off" else {}),
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
    if not main_rank:
        return
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


# -- evaluate ----------------------------------------------------------------------------------
@app.command("evaluate")
def evaluate_command(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Trained model: an lsakit checkpoint, or a plain state dict (.safetensors, .pt) "
            "of --model.",
            show_default="none: --model with pretrained weights (e.g. robustbench:NAME)",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Data set.", show_default="the checkpoint's"),
    ] = None,
    model_spec: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="The model a plain state dict holds (any `analyze --model` form); for an lsakit "
            "checkpoint only needed to allow a model built by your code (module:factory, "
            "file.py:factory).",
            show_default="the checkpoint's",
        ),
    ] = None,
    model_args: ModelArgsOpt = None,
    data_option: DataOptionsOpt = None,
    domain: DomainOpt = None,
    fgsm_eps: Annotated[
        str | None,
        typer.Option(
            help="FGSM ε sweep, comma-separated.",
            show_default="the paper's grid for the data set; own data 0, ε/4, ε/2, ε, 2ε",
        ),
    ] = None,
    attack_specs: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            "-a",
            help="Further attacks, NAME=EPS[,key=value…], repeatable, e.g. pgd=0.3,steps=40 or "
            "apgd=0.3.",
            show_default="PGD-20 and APGD-CE at the preset's training ε",
        ),
    ] = None,
    suite: Annotated[
        str | None,
        typer.Option(
            help="Run an attack suite instead: standard (APGD-CE, APGD-T, FAB-T, Square; "
            "AutoAttack's protocol) or rand (EOT-APGD, for randomized models).",
            show_default="none",
        ),
    ] = None,
    eps: Annotated[
        float | None,
        typer.Option(
            help="ε of the suite.", show_default=preset_text(lambda p: p.train_eps, OWN_DATA_EPS)
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--n-examples",
            "--limit",
            help="Evaluate the first N test samples.",
            show_default="all",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 256,
    leaderboard: Annotated[
        Path | None,
        typer.Option(
            help="RobustBench model_info JSON whose clean and AutoAttack accuracy --suite "
            "standard prints beside lsakit's (a robustbench: model's entry is looked up in "
            "lsakit's table of known entries without it).",
            show_default="lsakit's table",
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            help="Suite state file, rewritten after every batch; an interrupted run resumes from "
            "it.",
            show_default="OUT/suite-SUITE-epsEPS-nN.state.json",
        ),
    ] = None,
    checks: Annotated[
        bool, typer.Option(help="Run the gradient-masking checks after the suite.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the suite's random starts.")] = 0,
    amp: AmpOpt = "off",
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output directory.",
            show_default="the checkpoint's folder; runs/evaluate-MODEL for a pretrained --model",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """The paper's protocol: FGSM accuracy over an ε sweep and its R&G score, plus PGD / APGD.

    With --suite, the attack suite instead: robust accuracy after each attack and combined
    (per-sample worst case), resumable, followed by the gradient-masking checks.
    """
    from lsakit import data, perturb, speed
    from lsakit.checkpoint import load_weights
    from lsakit.evaluate import evaluate, paper_eps
    from lsakit.presets import preset
    from lsakit.train import resolve_device

    dev = resolve_device(device)
    main_rank = _main_rank(dev)
    speed.check_amp(amp)
    if suite is not None and amp != "off":
        # The suite's state file does not record the precision: a resumed run could mix two.
        raise ConfigError("--amp applies to -a attacks, not to --suite; drop --amp")
    if suite is not None:
        from lsakit import distributed
        from lsakit.suite import suite_attacks

        if distributed.is_distributed():
            raise ConfigError(
                "the attack suite runs in one process (its state file has one writer); launch "
                "`lsakit evaluate --suite` without torchrun"
            )

        suite_attacks(suite)  # an unknown name fails before anything is loaded
        if attack_specs or fgsm_eps is not None:
            raise ConfigError(
                "--suite runs its own attacks; drop --attack / --fgsm-eps (run them in a "
                "separate `lsakit evaluate`)"
            )
        if eps is not None and not eps > 0:
            raise ConfigError(f"--eps must be > 0, got {eps}")
    elif eps is not None or state is not None:
        raise ConfigError("--eps and --state belong to --suite; for other attacks use -a NAME=EPS")
    specs = [perturb.parse_spec(s) for s in attack_specs or ()]
    for name, strength, params in specs:  # fail on a bad spec before loading anything
        perturb.build(name, model=nn.Identity(), strength=strength, **params)
    if leaderboard is not None and suite != "standard":
        raise ConfigError("--leaderboard goes with --suite standard (AutoAttack's protocol)")
    kwargs = _model_args(model_args or [])
    weights_meta: dict[str, Any] = {}
    if checkpoint is not None:
        model, meta = load_weights(
            checkpoint, model=model_spec, model_kwargs=kwargs, map_location=dev
        )
        model_name, preprocessing, source = meta.model, meta.preprocessing, str(checkpoint)
        trained_on = meta.extra.get("dataset")
        dataset_name = dataset or trained_on
        if dataset_name is None:
            raise ConfigError(f"{checkpoint} does not say its data set; pass --dataset")
        if trained_on is not None and trained_on != dataset_name:
            raise ConfigError(
                f"{checkpoint} was trained on {trained_on}, not {dataset_name}; drop --dataset"
            )
        data_options = _data_options(data_option, domain) or _recorded_data_options(
            checkpoint, dataset_name
        )
        out_dir = out_dir or checkpoint.parent
    else:
        if model_spec is None or not _pretrained(model_spec, kwargs):
            raise ConfigError(
                "give --checkpoint (a trained model), or --model with pretrained weights (e.g. "
                "robustbench:NAME, torchvision:NAME --model-arg weights=DEFAULT)"
            )
        if dataset is None:
            raise ConfigError(f"--model {model_spec} has no data set of its own; pass --dataset")
        dataset_name, data_options = dataset, _data_options(data_option, domain)
        loaded = _load_pretrained(model_spec, kwargs)
        model, model_name, preprocessing = (
            loaded.model.to(dev).eval(),
            model_spec,
            loaded.preprocessing,
        )
        weights_meta, source = _weights_meta(loaded), model_spec
        out_dir = out_dir or Path("runs") / f"evaluate-{_slug(model_spec)}"
    recipe = preset(dataset_name, **data_options)
    if suite is not None:
        _run_suite(
            model, source, model_name, dataset_name, suite=suite,
            eps=eps if eps is not None else recipe.train_eps, limit=limit,
            batch_size=batch_size, state=state, checks=checks, seed=seed,
            out_dir=out_dir, data_dir=data_dir, data_options=data_options,
            preprocessing=preprocessing, weights_meta=weights_meta,
            published=_leaderboard(model_name, kwargs, leaderboard),
        )  # fmt: skip
        return
    if fgsm_eps is not None:
        try:
            grid = tuple(float(e) for e in fgsm_eps.split(","))
        except ValueError:
            raise ConfigError(
                f"--fgsm-eps takes comma-separated numbers, got {fgsm_eps!r}"
            ) from None
    else:
        grid = recipe.fgsm_eps or paper_eps(dataset_name)
    if not specs:
        eps = recipe.train_eps
        specs = [("pgd", eps, {"steps": 20, "alpha": eps / 4}), ("apgd", eps, {})]
    attacks = {
        spec_name: perturb.build(spec_name, model=model, strength=strength, **params)
        for spec_name, strength, params in specs
    }
    loader: Any = data.load(
        dataset_name, "test", batch_size=batch_size, shuffle=False, limit=limit, data_dir=data_dir,
        transform=_transform(preprocessing), **data_options,
    )  # fmt: skip
    loader = _labels_for(model, loader, dataset_name, data_options)
    with speed.attack_precision(amp):
        result = evaluate(
            model, loader, fgsm_eps=grid, attacks=attacks, progress=True,
            meta={"checkpoint": str(checkpoint) if checkpoint else None, "dataset": dataset_name,
                  "model": model_name, **weights_meta, **_data_meta(dataset_name, data_options),
                  **({"amp": amp} if amp != "off" else {})},
        )  # fmt: skip
    table = Table(title=f"{model_name} on {dataset_name} ({result.n_samples} test samples)")
    table.add_column("attack")
    table.add_column("ε", justify="right")
    table.add_column("accuracy %", justify="right")
    for eps_value, acc in result.fgsm_accuracies().items():
        table.add_row("FGSM" if eps_value else "clean", f"{eps_value:g}", f"{100 * acc:.2f}")
    table.add_row("R&G", "", f"{result.rg_score:.2f}")
    table.add_section()
    for attack_name, entry in result.attacks.items():
        table.add_row(attack_name, f"{entry.params.get('eps', 0):g}", f"{100 * entry.accuracy:.2f}")
    out.print(table)
    if main_rank:
        out.print(f"wrote {result.save(out_dir / 'evaluation.json')}")


def _leaderboard(model_name: str, kwargs: dict[str, Any], file: Path | None) -> Any:
    """RobustBench's entry for a ``robustbench:`` model (or the ``--leaderboard`` file's)."""
    from lsakit.models import parse_spec

    spec = parse_spec(model_name)
    if file is None and spec.kind != "robustbench":
        return None
    from lsakit.models.robustbench import leaderboard_entry

    return leaderboard_entry(
        spec.target, str(kwargs.get("dataset", "cifar10")),
        str(kwargs.get("threat_model", "Linf")), file,
    )  # fmt: skip


def _run_suite(
    model: nn.Module,
    source: str,
    model_name: str,
    dataset_name: str,
    *,
    suite: str,
    eps: float,
    limit: int | None,
    batch_size: int,
    state: Path | None,
    checks: bool,
    seed: int,
    out_dir: Path,
    data_dir: Path | None,
    data_options: dict[str, Any],
    preprocessing: Any = None,
    weights_meta: dict[str, Any] | None = None,
    published: Any = None,
) -> None:
    from lsakit import data
    from lsakit.domain import input_domain

    x, y = data.load_tensors(
        dataset_name, "test", limit=limit, data_dir=data_dir, transform=_transform(preprocessing),
        **data_options,
    )  # fmt: skip
    with input_domain(data.domain(dataset_name, **data_options)):
        _suite_and_checks(
            model, source, model_name, dataset_name, x, y, suite=suite, eps=eps,
            batch_size=batch_size, state=state, checks=checks, seed=seed, out_dir=out_dir,
            weights_meta=weights_meta or {}, published=published,
        )  # fmt: skip


def _suite_and_checks(
    model: nn.Module,
    source: str,
    model_name: str,
    dataset_name: str,
    x: Any,
    y: Any,
    *,
    suite: str,
    eps: float,
    batch_size: int,
    state: Path | None,
    checks: bool,
    seed: int,
    out_dir: Path,
    weights_meta: dict[str, Any],
    published: Any = None,
) -> None:
    from lsakit.masking import masking_checks
    from lsakit.suite import run_suite

    tag = f"suite-{suite}-eps{eps:g}-n{x.shape[0]}"
    state_path = state or out_dir / f"{tag}.state.json"
    if state_path.exists():
        out.print(f"resuming from {state_path}")
    out.print(
        f"{suite} suite on {model_name} / {dataset_name}: {x.shape[0]} test samples, ε = {eps:g}"
        f" (state: {state_path})"
    )
    result = run_suite(
        model, x, y, eps=eps, suite=suite, batch_size=batch_size, seed=seed,
        state_path=state_path, progress=True,
        meta={"checkpoint": source, "dataset": dataset_name, "model": model_name,
              **weights_meta},
    )  # fmt: skip
    table = Table(title=f"{suite} suite: {model_name} on {dataset_name}, ε = {eps:g}")
    for column in ("attack", "attacked", "robust accuracy %", "seconds"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for row in result.table_rows():
        table.add_row(*row)
    out.print(table)
    if published is not None:
        _print_leaderboard(published, result, eps)
    if checks:
        outcomes = masking_checks(
            model, x, y, eps=eps, suite_result=result, seed=seed, progress=True
        )
        result = result.model_copy(update={"checks": outcomes})
        for outcome in outcomes:
            if outcome.status == "warn":
                err.print(
                    f"[yellow]warning[/yellow] (gradient masking? {outcome.name}): "
                    f"{outcome.evidence}. {outcome.advice}",
                    highlight=False,
                )
            else:
                out.print(f"check {outcome.name}: {outcome.status} — {outcome.evidence}")
    out.print(f"wrote {result.save(out_dir / f'{tag}.json')}")


def _print_leaderboard(published: Any, result: Any, eps: float) -> None:
    """The leaderboard's clean and AutoAttack accuracy beside the suite's, one table."""
    table = Table(title=f"RobustBench leaderboard: {published.name} ({published.source})")
    for column in ("", "ε", "clean %", "robust %"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("leaderboard (AutoAttack)", published.eps, f"{published.clean_acc:.2f}",
                  f"{published.autoattack_acc:.2f}")  # fmt: skip
    table.add_row(f"lsakit ({result.n_examples} samples)", f"{eps:g}",
                  f"{100 * result.clean_accuracy:.2f}", f"{100 * result.robust_accuracy:.2f}")  # fmt: skip
    out.print(table)
    if abs(published.eps_value - eps) > 1e-6:
        err.print(
            f"[yellow]warning[/yellow]: the leaderboard's ε is {published.eps}, this suite's "
            f"{eps:g}; pass --eps {published.eps_value:.6g} to compare",
            highlight=False,
        )


# -- search (RACL) ------------------------------------------------------------------------------
# The defaults of cells, nodes, channels, epochs and lam_bar_factor are SearchConfig's (the CLI
# shows them in --help without importing lsakit.nas, which loads matplotlib; a test keeps them
# equal).
@app.command("search")
def search_command(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Image data set.")] = "mnist",
    cells: Annotated[int, typer.Option(help="Cells of the supernet.")] = 2,
    nodes: Annotated[int, typer.Option(help="Intermediate nodes per cell.")] = 3,
    channels: Annotated[int, typer.Option(help="Channels of the first cell.")] = 8,
    reductions: Annotated[
        str | None,
        typer.Option(
            help="Indices of reduction cells, comma-separated (e.g. 1,2).", show_default="none"
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Search epochs.")] = 5,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Training images used (half weights, half architecture).", show_default="all"
        ),
    ] = None,
    lipschitz: Annotated[
        bool, typer.Option("--lipschitz/--no-lipschitz", help="The Lipschitz constraint.")
    ] = True,
    lam_bar_factor: Annotated[
        float, typer.Option(help="λ̄_F = exp(initial μ_F) × this factor.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Search seed.")] = 0,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output directory.", show_default="runs/search-DATASET-racl|plain"
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """RACL: differentiable architecture search with a Lipschitz constraint (Dong et al. 2020).

    Prints μ_F, σ_F, the constraint g and the dual variable u every epoch; writes genotype.json
    (train it with `lsakit train -m genotype_net --model-arg genotype=OUT/genotype.json`),
    search.json and
    cell.png. --no-lipschitz is the same search without the constraint.
    """
    from lsakit.nas.study import search_for_study
    from lsakit.train import resolve_device

    settings: dict[str, Any] = {
        k: v
        for k, v in {
            "cells": cells, "nodes": nodes, "channels": channels, "epochs": epochs,
            "limit": limit, "lam_bar_factor": lam_bar_factor,
            "reductions": [int(r) for r in _split(reductions) or []] if reductions else None,
        }.items()
        if v is not None
    }  # fmt: skip
    settings["lipschitz"] = lipschitz
    root = out_dir or Path("runs") / f"search-{dataset}-{'racl' if lipschitz else 'plain'}"

    def show(record: Any) -> None:
        if record.kind == "epoch":
            out.print(record.describe())

    out.print(f"searching on {dataset} ({'with' if lipschitz else 'without'} the constraint)")
    metrics = search_for_study(
        dataset, settings, seed, root / "genotype.json", data_dir=data_dir,
        device=resolve_device(device), progress=show, show_progress=True,
    )  # fmt: skip
    out.print(
        f"μ_F {metrics['mu_F']:.3f}, σ_F {metrics['sigma_F']:.3f} (ln λ̄_F "
        f"{metrics['mu_F target (ln λ̄_F)']:.3f}); wrote {root / 'genotype.json'}, "
        f"{root / 'search.json'}, {root / 'cell.png'}"
    )
    out.print(
        f"train the cell: lsakit train -d {dataset} -m genotype_net --model-arg "
        f"genotype={root / 'genotype.json'} --method pgd --eps …"
    )


# -- where a grid's runs go (reproduce, study) ----------------------------------------------------
ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where the runs go: local (this machine, --jobs processes) or ray (one Ray task per "
        "(row, seed) run; needs lsakit\\[ray]; OUT must be a path every node sees).",
    ),
]
JobsOpt = Annotated[
    int, typer.Option(min=1, help="Runs in parallel (local processes, 1 thread each).")
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray: the cluster (HEAD:PORT, auto or ray://HEAD:10001).",
        show_default="$RAY_ADDRESS, else a cluster started on this machine, else a new local one",
    ),
]
CpusPerRunOpt = Annotated[
    float | None,
    typer.Option(
        "--cpus-per-run", help="Ray: CPUs of each run, also its torch threads.", show_default="1"
    ),
]
GpusPerRunOpt = Annotated[
    float | None,
    typer.Option(
        "--gpus-per-run", help="Ray: GPUs of each run (a fraction shares a GPU).", show_default="0"
    ),
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-retries", help="Ray: reruns of a run whose worker or node died.", show_default="3"
    ),
]


def _grid_executor(
    executor: str,
    jobs: int,
    address: str | None,
    cpus_per_run: float | None,
    gpus_per_run: float | None,
    max_retries: int | None,
) -> Any:
    """The RayExecutor the options ask for, or None for the local one (the runners' default)."""
    ray_options = {"--address": address, "--cpus-per-run": cpus_per_run,
                   "--gpus-per-run": gpus_per_run, "--max-retries": max_retries}  # fmt: skip
    if executor == "local":
        given = [name for name, value in ray_options.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: options of --executor ray; add it or drop them")
        return None
    if executor != "ray":
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    if jobs != 1:
        raise ConfigError(
            "--jobs is for --executor local; on Ray the cluster's CPUs and --cpus-per-run decide "
            "how many runs go at once"
        )
    from lsakit.experiments.executors import RayExecutor

    kwargs: dict[str, Any] = {"cpus_per_run": cpus_per_run, "gpus_per_run": gpus_per_run,
                              "max_retries": max_retries}  # fmt: skip
    return RayExecutor(address, **{k: v for k, v in kwargs.items() if v is not None})


# -- study -------------------------------------------------------------------------------------
@app.command("study")
def study_command(
    name: Annotated[str, typer.Argument(help="lsp, rsr or racl (or a study YAML file).")],
    profile: Annotated[str, typer.Option(help="quick, full or smoke.")] = "quick",
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds.", show_default="the profile's")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory.", show_default="runs/study-STUDY-PROFILE"),
    ] = None,
    log_to: LogToOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = "local",
    jobs: JobsOpt = 1,
    address: AddressOpt = None,
    cpus_per_run: CpusPerRunOpt = None,
    gpus_per_run: GpusPerRunOpt = None,
    max_retries: RetriesOpt = None,
) -> None:
    """Run a companion-method study (LSP, RSR/PNI, RACL): every row trained with the one trainer,
    evaluated alike, then results.json, report.md and accuracy.png. Finished runs are reused."""
    from lsakit.experiments.studies import load_study, run_study

    config = load_study(name)
    seed_list = _seed_list(seeds)
    root = out_dir or Path("runs") / f"study-{config.study}-{profile}"
    grid = _grid_executor(executor, jobs, address, cpus_per_run, gpus_per_run, max_retries)
    out.print(f"study {config.study} ({profile}) → {root}")
    with grid or contextlib.nullcontext():
        run_study(config, profile, root, seeds=seed_list, data_dir=data_dir, device=device,
                  log=out.print, log_to=_split(log_to), jobs=jobs, executor=grid)  # fmt: skip
    out.print(f"wrote {root / 'results.json'}, {root / 'report.md'}, {root / 'accuracy.png'}")


# -- reproduce ---------------------------------------------------------------------------------
@app.command("reproduce")
def reproduce_command(
    experiment: Annotated[str, typer.Argument(help="moon, mnist or cifar10.")],
    quick: Annotated[
        bool, typer.Option("--quick", help="The quick profile (fewer epochs).")
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(help="quick, full or smoke (a pipeline test).", show_default="full"),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds.", show_default="the profile's")
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="The conventions: strict (the default: inputs in [0, 1], attacks clamp, ε in "
            "input units), paper (the fit to the published Normal row and curves — Moon: "
            "standardized coordinates, unbounded, one output; MNIST: see configs/mnist.yaml) or "
            "all (each protocol into OUT/PROTOCOL, then OUT/sensitivity.md: which of the "
            "paper's claims hold under which).",
            show_default="strict",
        ),
    ] = None,
    jobs: JobsOpt = 1,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output directory.", show_default="runs/reproduce-EXPERIMENT-PROFILE"
        ),
    ] = None,
    report: Annotated[bool, typer.Option(help="Write the Markdown/HTML report.")] = True,
    log_to: LogToOpt = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = "local",
    address: AddressOpt = None,
    cpus_per_run: CpusPerRunOpt = None,
    gpus_per_run: GpusPerRunOpt = None,
    max_retries: RetriesOpt = None,
) -> None:
    """Reproduce a table of the paper: every row over several seeds, results.json and a report.

    Finished runs are kept in OUT/runs and reused, so an interrupted reproduction continues.
    With --executor ray each (row, seed) is one task on a Ray cluster; results.json and the
    report are written here, as in a local run.
    """
    from lsakit.experiments import SUITES, load_experiment, run_experiment

    if experiment not in SUITES:
        raise ConfigError(f"unknown experiment {experiment!r}; choose one of {', '.join(SUITES)}")
    every = protocol == "all"
    protocols: dict[str, list[str]] = {}
    for name in SUITES[experiment]:  # an unknown protocol fails before anything runs
        config = load_experiment(name)
        protocols[name] = (
            config.protocol_names() if every else [protocol or config.default_protocol]
        )
        if not every:
            config.under(protocol)
    if quick and profile not in (None, "quick"):
        raise ConfigError("--quick and --profile disagree; give one of them")
    chosen = "quick" if quick else (profile or "full")
    seed_list = _seed_list(seeds)
    suffix = f"-{protocol}" if protocol else ""
    root = out_dir or Path("runs") / f"reproduce-{experiment}-{chosen}{suffix}"
    grid = _grid_executor(executor, jobs, address, cpus_per_run, gpus_per_run, max_retries)
    with grid or contextlib.nullcontext():  # one Ray connection for the whole suite
        for name in SUITES[experiment]:
            folder = root if len(SUITES[experiment]) == 1 else root / name
            results = {}
            for chosen_protocol in protocols[name]:
                target = folder / chosen_protocol if every else folder
                result = run_experiment(
                    name, chosen, target, seeds=seed_list, jobs=jobs, data_dir=data_dir,
                    device=device, log=out.print, log_to=_split(log_to), executor=grid,
                    protocol=chosen_protocol,
                )  # fmt: skip
                results[result.protocol] = result
                _print_reproduction(result)
                out.print(f"wrote {target / 'results.json'} ({result.seconds:.0f} s)")
                if report:
                    from lsakit.report.reproduction import write_report

                    md, html = write_report(result, target, data_dir=data_dir)
                    out.print(f"wrote {md} and {html}")
            if every and len(results) > 1:
                from lsakit.report.sensitivity import claims, write_sensitivity_report

                table = Table(title=f"{name}: the paper's claims under each protocol")
                for column in ("claim", "paper", *results):
                    table.add_column(column)
                for claim in claims(results):
                    table.add_row(
                        claim.name, claim.paper, *(claim.verdicts[p].text() for p in results)
                    )
                out.print(table)
                md, html = write_sensitivity_report(results, folder)
                out.print(f"wrote {md} and {html}")


def _print_reproduction(result: Any) -> None:
    from lsakit.experiments.results import mean_std

    lsa = Table(title="LSA of the normally trained model: relative error per layer")
    lsa.add_column("layer")
    for name in result.normal_lsa:
        lsa.add_column(name, justify="right")
    for i, label in enumerate(result.layer_labels):
        marked = f"[bold red]{label}*[/]" if label in result.mvl else label
        lsa.add_row(marked, *[_fmt(values[i]) for values in result.normal_lsa.values()])
    out.print(lsa)
    table = Table(
        title=f"{result.experiment} ({result.profile}, protocol {result.protocol}): "
        "FGSM accuracy %, ours (paper)"
    )
    table.add_column("training")
    for e in result.eps_paper:
        table.add_column(f"ε={e:g}", justify="right")
    table.add_column("R&G", justify="right")
    for row in result.rows:
        pub = row.published
        ours = [*zip(row.mean, row.std, strict=True), (row.rg_mean, row.rg_std)]
        paper = [*pub.accuracies, pub.rg] if pub else [None] * len(ours)
        table.add_row(
            row.name,
            *[
                mean_std(m, s if row.varied else None, digits=1, sep="±")
                + ("" if p is None else f" ({p:.1f})")
                for (m, s), p in zip(ours, paper, strict=True)
            ],
        )
    out.print(table)
    attack = result.settings.get("lsa_attack", "the LSA attack")
    errors = Table(
        title=f"relative error per layer under {attack} after training (mean over seeds)"
    )
    errors.add_column("training")
    for label in result.layer_labels:
        errors.add_column(label, justify="right")
    for row in result.rows:
        errors.add_row(
            row.name + (f" [{', '.join(row.resolved_layers)}]" if row.resolved_layers else ""),
            *[_fmt(v) for v in row.relative_errors_mean],
        )
    out.print(errors)
    out.print(f"MVL of the normal model (η = {result.eta:g}): {', '.join(result.mvl) or 'none'}")


def _pretrained(model: str, kwargs: dict[str, Any]) -> bool:
    """Whether ``--model`` and its arguments ask for pretrained weights (nothing loaded yet)."""
    from lsakit import models

    return models.resolve(model, kwargs).pretrained(kwargs)


def _load_pretrained(model: str, kwargs: dict[str, Any]) -> Any:
    """Load pretrained weights (lsakit.models.load) and say what was loaded, in two lines."""
    from lsakit import models

    loaded = models.load(model, **kwargs)
    labels = loaded.labels or ()
    shown = ", ".join(labels[:3]) + (", …" if len(labels) > 3 else "")
    classes = f"; {len(labels)} classes ({shown})" if labels else ""
    assert loaded.provenance is not None
    out.print(f"pretrained {model}: {loaded.provenance.describe()}{classes}", highlight=False)
    if loaded.preprocessing is not None:
        out.print(f"preprocessing: {loaded.preprocessing.describe()}", highlight=False)
    return loaded


def _weights_meta(loaded: Any) -> dict[str, Any]:
    """What a result records of pretrained weights: where they came from, their preprocessing
    and class names."""
    meta: dict[str, Any] = {"weights": loaded.provenance.to_json()}
    if loaded.preprocessing is not None:
        meta["preprocessing"] = loaded.preprocessing.to_json()
    if loaded.labels:
        meta["class_names"] = list(loaded.labels)
    return meta


def _data_meta(dataset: str, data_options: dict[str, Any]) -> dict[str, Any]:
    """Where a hub data set came from (its resolved commit), for a result's meta."""
    from lsakit.data import hub

    if not hub.is_hub_name(dataset):
        return {}
    return {"data_provenance": hub.provenance(dataset, data_options)}


def _transform(preprocessing: Any) -> Any:
    """The data transform of a model's preprocessing (None where it changes nothing)."""
    return None if preprocessing is None or preprocessing.identity else preprocessing.transform


def _labels_for(net: nn.Module, loader: Any, dataset: str, data_options: dict[str, Any]) -> Any:
    """``loader``, or — when the model's classes are not the data set's (an ImageNet model on
    CIFAR-10) — the loader with each label replaced by the model's clean prediction."""
    import torch

    from lsakit import data
    from lsakit._outputs import select_logits
    from lsakit._torch import eval_mode, model_device
    from lsakit.data.transforms import PredictedLabels

    # one sample read from the data set: iterating the loader would draw from torch's global
    # random generator (its worker seed) and change the noises drawn after it
    x = loader.dataset[0][0].unsqueeze(0)
    with torch.no_grad(), eval_mode(net):
        outputs = select_logits(net(x.to(model_device(net)))).shape[-1]
    classes = data.info(dataset, **data_options).num_classes
    if outputs in (classes, 1):  # 1: a binary model's single logit
        return loader
    out.print(
        f"the model has {outputs} classes and {dataset} has {classes}: each input's label is "
        "the model's own prediction on it (clean accuracy 1 by construction)",
        highlight=False,
    )
    return PredictedLabels(loader, net)


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
        # escape: a message's [brackets] (e.g. lsakit[mlflow]) are text, not rich markup
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
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
