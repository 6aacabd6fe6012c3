"""Evaluation as one call: the paper's protocol (an FGSM ε sweep and its R&G score, plus PGD and
APGD), or an attack suite with its gradient-masking checks, on a model and a data set."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from lsakit.config.workflows import EvaluateOptions
from lsakit.errors import ArgumentError
from lsakit.workflows._common import (
    Log,
    Subject,
    build_perturbations,
    check_perturbations,
    data_meta,
    from_checkpoint,
    is_pretrained,
    labels_for,
    load_pretrained,
    main_rank,
    own_module,
    quiet,
    recorded_data_options,
    slug,
    split_model,
    transform,
    weights_meta,
)

#: The file of the paper's protocol in the output directory.
RESULT_FILE = "evaluation.json"


def suite_tag(suite: str, eps: float, n: int) -> str:
    """The stem of a suite's files: ``suite-standard-eps0.3-n1000``."""
    return f"suite-{suite}-eps{eps:g}-n{n}"


def output_dir(options: EvaluateOptions) -> Path:
    """Where an evaluation of a checkpoint or model spec writes: ``out``, else the
    checkpoint's folder, else ``runs/evaluate-MODEL``."""
    if options.out is not None:
        return options.out
    if options.checkpoint is not None:
        return options.checkpoint.parent
    return Path("runs") / f"evaluate-{slug(options.model or 'model')}"


def evaluate(
    model: nn.Module | str | None = None,
    *,
    progress: bool = True,
    log: Log | None = print,
    **options: Any,
) -> Any:
    """Evaluate a model on a data set's test split, as ``lsakit evaluate`` does.

    Without ``suite``: FGSM accuracy over the data set's ε grid (the paper's; own data 0, ε/4,
    ε/2, ε, 2ε) and its R&G score, plus ``attacks`` (default PGD-20 and APGD-CE at the preset's
    training ε), written to ``out/evaluation.json``. With ``suite`` (``standard``: AutoAttack's
    protocol; ``rand``): robust accuracy after each attack and combined (per-sample worst case),
    resumable from its state file, then the gradient-masking checks (``checks``), written to
    ``out/suite-SUITE-epsEPS-nN.json``.

    Every option is checked before anything is loaded. The global random generators are left
    as they were found.

    Args:
        model: an ``nn.Module`` (evaluated as it is; give ``dataset``), a model spec with
            pretrained weights (``robustbench:NAME``, ``torchvision:NAME`` with
            ``model_kwargs={"weights": "DEFAULT"}``), the architecture of a ``checkpoint``
            state dict, or None: the ``checkpoint``'s own.
        progress: show progress bars.
        log: where the workflow's lines go (``print``; None says nothing).
        **options: the options of :class:`~lsakit.config.workflows.EvaluateOptions` (the flags
            of ``lsakit evaluate``, with the same defaults).

    Returns:
        An :class:`~lsakit.evaluate.EvaluationResult`, or with ``suite`` a
        :class:`~lsakit.suite.SuiteResult` (its ``checks`` filled; ``meta["leaderboard"]`` the
        RobustBench entry printed beside it, where one is known).
    """
    from lsakit._torch import kept_random_state

    model, opts = split_model(model, EvaluateOptions, options)
    with kept_random_state():
        return _evaluate(opts, model, progress=progress, log=log or quiet)


def _subject(
    opts: EvaluateOptions, module: nn.Module | None, dev: Any, say: Log
) -> tuple[Subject, str, dict[str, Any], Path, str]:
    """The model, its data set and options, the output folder and what the result names as the
    model's source."""
    if module is not None:
        if opts.dataset is None:
            raise ArgumentError("an nn.Module has no data set of its own; pass {dataset}")
        if opts.checkpoint is not None or opts.model is not None:
            raise ArgumentError(
                "an nn.Module is evaluated as it is; drop {checkpoint} and the {model} spec"
            )
        subject = own_module(module, dev)
        out = opts.out or Path("runs") / f"evaluate-{slug(type(module).__name__)}"
        return subject, opts.dataset, opts.all_data_options(), out, subject.name
    if opts.checkpoint is not None:
        subject = from_checkpoint(opts.checkpoint, opts.model, opts.model_kwargs, dev)
        dataset = opts.dataset or subject.trained_on
        if dataset is None:
            raise ArgumentError(f"{opts.checkpoint} does not say its data set; pass {{dataset}}")
        if subject.trained_on is not None and subject.trained_on != dataset:
            raise ArgumentError(
                f"{opts.checkpoint} was trained on {subject.trained_on}, not {dataset}; "
                "drop {dataset}"
            )
        data_options = opts.all_data_options() or recorded_data_options(opts.checkpoint, dataset)
        return subject, dataset, data_options, output_dir(opts), str(opts.checkpoint)
    if opts.model is None or not is_pretrained(opts.model, opts.model_kwargs):
        raise ArgumentError(
            "give {checkpoint} (a trained model), or {model} with pretrained weights (e.g. "
            "robustbench:NAME, torchvision:NAME with {model_kwargs} weights=DEFAULT)"
        )
    if opts.dataset is None:
        raise ArgumentError(f"{{model}} {opts.model} has no data set of its own; pass {{dataset}}")
    loaded = load_pretrained(opts.model, opts.model_kwargs, say)
    subject = Subject(
        loaded.model.to(dev).eval(), opts.model, dict(opts.model_kwargs), loaded.preprocessing,
        weights_meta(loaded),
    )  # fmt: skip
    return subject, opts.dataset, opts.all_data_options(), output_dir(opts), opts.model


def _evaluate(opts: EvaluateOptions, module: nn.Module | None, *, progress: bool, log: Log) -> Any:
    from lsakit import data, speed
    from lsakit._torch import model_device
    from lsakit.config.presets import preset
    from lsakit.evaluate import evaluate as run_evaluation
    from lsakit.evaluate import paper_eps
    from lsakit.train import resolve_device

    dev = model_device(module) if module is not None and opts.device == "auto" else None
    dev = dev or resolve_device(opts.device)
    writes = main_rank(dev)
    say = log if writes else quiet
    speed.check_amp(opts.amp)
    published = None
    if opts.suite is not None:
        from lsakit import distributed
        from lsakit.suite import suite_attacks

        if distributed.is_distributed():
            raise ArgumentError(
                "the attack suite runs in one process (its state file has one writer); run the "
                "{suite} without torchrun"
            )
        suite_attacks(opts.suite)  # an unknown name fails before anything is loaded
        if module is None and opts.checkpoint is None and opts.model is not None:
            published = _leaderboard(opts.model, opts.model_kwargs, opts.leaderboard)
    parsed = check_perturbations(opts.attacks or (), "attacks")
    subject, dataset, data_options, out, source = _subject(opts, module, dev, say)
    if opts.suite is not None and module is None and opts.checkpoint is not None:
        published = _leaderboard(subject.name, opts.model_kwargs, opts.leaderboard)
    elif opts.suite is not None and module is not None and opts.leaderboard is not None:
        from lsakit.models.robustbench import leaderboard_entry

        published = leaderboard_entry(subject.name, "cifar10", "Linf", opts.leaderboard)
    recipe = preset(dataset, **data_options)
    if opts.suite is not None:
        return _suite(
            opts, subject, source, dataset, data_options, out, say, progress=progress,
            eps=opts.eps if opts.eps is not None else recipe.train_eps, published=published,
        )  # fmt: skip
    grid = tuple(opts.fgsm_eps) if opts.fgsm_eps is not None else None
    grid = grid or recipe.fgsm_eps or paper_eps(dataset)
    if not parsed:
        eps = recipe.train_eps
        parsed = [("pgd", eps, {"steps": 20, "alpha": eps / 4}), ("apgd", eps, {})]
    attacks = build_perturbations(subject.model, parsed)
    loader: Any = data.load(
        dataset, "test", batch_size=opts.batch_size, shuffle=False, limit=opts.limit,
        data_dir=opts.data_dir, transform=transform(subject.preprocessing), **data_options,
    )  # fmt: skip
    loader = labels_for(subject.model, loader, dataset, data_options, say)
    with speed.attack_precision(opts.amp):
        result = run_evaluation(
            subject.model, loader, fgsm_eps=grid, attacks=attacks, progress=progress,
            meta={"checkpoint": str(opts.checkpoint) if opts.checkpoint else None,
                  "dataset": dataset, "model": subject.name, **subject.meta,
                  **data_meta(dataset, data_options),
                  **({"amp": opts.amp} if opts.amp != "off" else {})},
        )  # fmt: skip
    if writes:
        result.save(out / RESULT_FILE)
    return result


def _leaderboard(model_name: str, kwargs: dict[str, Any], file: Path | None) -> Any:
    """RobustBench's entry for a ``robustbench:`` model (or the ``leaderboard`` file's)."""
    from lsakit.models import parse_spec

    spec = parse_spec(model_name)
    if file is None and spec.kind != "robustbench":
        return None
    from lsakit.models.robustbench import leaderboard_entry

    return leaderboard_entry(
        spec.target, str(kwargs.get("dataset", "cifar10")),
        str(kwargs.get("threat_model", "Linf")), file,
    )  # fmt: skip


def _suite(
    opts: EvaluateOptions,
    subject: Subject,
    source: str,
    dataset: str,
    data_options: dict[str, Any],
    out: Path,
    say: Log,
    *,
    progress: bool,
    eps: float,
    published: Any,
) -> Any:
    from lsakit import data
    from lsakit.domain import input_domain
    from lsakit.masking import masking_checks
    from lsakit.suite import run_suite

    assert opts.suite is not None
    x, y = data.load_tensors(
        dataset, "test", limit=opts.limit, data_dir=opts.data_dir,
        transform=transform(subject.preprocessing), **data_options,
    )  # fmt: skip
    tag = suite_tag(opts.suite, eps, x.shape[0])
    state_path = opts.state or out / f"{tag}.state.json"
    if state_path.exists():
        say(f"resuming from {state_path}")
    say(
        f"{opts.suite} suite on {subject.name} / {dataset}: {x.shape[0]} test samples, "
        f"ε = {eps:g} (state: {state_path})"
    )
    model = subject.model
    with input_domain(data.domain(dataset, **data_options)):
        result = run_suite(
            model, x, y, eps=eps, suite=opts.suite, batch_size=opts.batch_size, seed=opts.seed,
            state_path=state_path, progress=progress,
            meta={"checkpoint": source, "dataset": dataset, "model": subject.name,
                  **subject.meta,
                  **({"leaderboard": dataclasses.asdict(published)} if published else {})},
        )  # fmt: skip
        if opts.checks:
            outcomes = masking_checks(
                model, x, y, eps=eps, suite_result=result, seed=opts.seed, progress=progress
            )
            result = result.model_copy(update={"checks": outcomes})
    result.save(out / f"{tag}.json")
    return result
