"""Algorithm 2 as one call: a model (or model spec, or nothing: the data set's model trained
normally first), data and perturbations in; the LSA and its MVL list out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsakit._io import atomic_write_text
from lsakit.config.workflows import AnalyzeOptions
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

#: The files an analysis writes into its output directory.
RESULT_FILE, FIGURE_FILE = "lsa.json", "lsa.png"
#: While it runs: the options it runs with and the state it resumes from (``resume``).
OPTIONS_FILE, STATE_FILE = "analyze.yaml", "lsa.state.json"
#: The options a resumed analysis may set anew (where it runs, not what it computes).
RESUME_MAY_SET = frozenset({"resume", "device", "data_dir"})


def run_dir(options: AnalyzeOptions) -> Path:
    """Where an analysis writes: ``out``, else ``runs/analyze-DATASET``."""
    return options.out or Path("runs") / f"analyze-{slug(options.dataset)}"


def default_mvl_source(names: list[str], preferred: str, perturbations: dict[str, Any]) -> str:
    """The preset's attack when present, else the last adversarial perturbation, else the last."""
    if preferred in names:
        return preferred
    adversarial = [n for n in names if getattr(perturbations[n], "is_adversarial", False)]
    return (adversarial or names)[-1]


def analyze(
    model: nn.Module | str | None = None,
    *,
    progress: bool = True,
    log: Log | None = print,
    **options: Any,
) -> Any:
    """Layer Sustainability Analysis of a model on a data set, and its MVL list (Algorithm 2).

    Everything is checked before any work: the options, the perturbation specs (built against a
    stand-in model), the layer selection (resolved on the model, or on the untrained
    architecture when the model is yet to be trained), the model and the data set. Python's,
    NumPy's and torch's global random generators are left as they were found.

    Args:
        model: an ``nn.Module`` (analysed as it is), a model spec (``model_a``, ``timm:resnet18``
            with ``model_kwargs``, pretrained weights such as ``torchvision:resnet50`` with
            ``model_kwargs={"weights": "DEFAULT"}``, or the architecture of a ``checkpoint``
            state dict), or None: the ``checkpoint``'s model, else the data set's model,
            trained normally first into ``out`` (as ``lsakit analyze`` does).
        progress: show progress bars.
        log: where the workflow's lines go (``print``; None says nothing).
        **options: the options of :class:`~lsakit.config.workflows.AnalyzeOptions` (the flags of
            ``lsakit analyze``, with the same defaults): ``dataset``, ``checkpoint``,
            ``perturbations``, ``layers``, ``eta``, ``mvl_from``, ``limit``, ``out``, …
            ``resume=DIR`` continues the interrupted analysis in ``DIR`` from its last completed
            batch with the options it recorded (pass the same ``nn.Module`` again if it analysed
            one); the result equals an uninterrupted run's.

    Returns:
        The :class:`~lsakit.analysis.LSAResult`; its ``meta["mvl"]`` holds the perturbation that
        selected the MVL list, η and the MVL labels. ``out/lsa.json`` and ``out/lsa.png`` are
        written (on the main rank under torchrun).
    """
    from lsakit._torch import kept_random_state

    model, opts = split_model(model, AnalyzeOptions, options)
    if opts.resume is not None:
        opts = resumed_options(opts, model)
    if model is not None and (opts.model is not None or opts.checkpoint is not None):
        raise ArgumentError(
            "an nn.Module is analysed as it is; drop {checkpoint} and the {model} spec"
        )
    with kept_random_state():
        return _analyze(opts, model, progress=progress, log=log or quiet)


def resumed_options(opts: AnalyzeOptions, module: nn.Module | None) -> AnalyzeOptions:
    """The options an interrupted analysis in ``opts.resume`` recorded (``device`` and
    ``data_dir`` may be given anew); refused when there is nothing to resume."""
    folder = opts.resume
    assert folder is not None
    extra = sorted(set(opts.given()) - RESUME_MAY_SET)
    if extra:
        raise ArgumentError(
            f"{{resume}} continues an analysis with the options it recorded in "
            f"{folder / OPTIONS_FILE}; drop {{{extra[0]}}}"
        )
    if not (folder / STATE_FILE).exists() or not (folder / OPTIONS_FILE).exists():
        done = (folder / RESULT_FILE).exists()
        raise ArgumentError(
            f"{folder} holds a finished analysis ({RESULT_FILE}); nothing to resume"
            if done
            else f"{folder} holds no interrupted analysis ({STATE_FILE} is missing); run it "
            f"without {{resume}}"
        )
    anew = {name: getattr(opts, name) for name in opts.given()}  # resume, device, data_dir
    recorded = AnalyzeOptions.from_yaml(folder / OPTIONS_FILE, **anew)
    if module is None and recorded.model is None and recorded.checkpoint is None:
        raise ArgumentError(
            f"the analysis in {folder} measured an nn.Module; pass the same module again with "
            f"{{resume}}"
        )
    return recorded


def _analyze(opts: AnalyzeOptions, module: nn.Module | None, *, progress: bool, log: Log) -> Any:
    from lsakit import data, speed
    from lsakit._torch import seed_everything
    from lsakit.analysis import analyze as run_lsa
    from lsakit.config.presets import preset
    from lsakit.probe import parse_layers
    from lsakit.train import CHECKPOINT_NAME, train

    data_options = opts.all_data_options()
    if opts.checkpoint is not None and not data_options:
        data_options = recorded_data_options(opts.checkpoint, opts.dataset)
    recipe = preset(opts.dataset, **data_options)
    target = run_dir(opts)
    dev = _device(opts.device, module)
    writes = main_rank(dev)
    say = log if writes else quiet
    specs = list(opts.perturbations or recipe.perturbations)
    parsed = check_perturbations(specs, "perturbations")
    speed.check_amp(opts.amp)
    layer_spec = parse_layers(opts.layers) if isinstance(opts.layers, str) else opts.layers
    config = None
    if module is not None:
        subject = own_module(module, dev)
    elif opts.checkpoint is not None:
        subject = from_checkpoint(opts.checkpoint, opts.model, opts.model_kwargs, dev)
        if subject.trained_on is not None and subject.trained_on != opts.dataset:
            raise ArgumentError(
                f"{opts.checkpoint} was trained on {subject.trained_on}, not {opts.dataset}; "
                f"pass {{dataset}} {subject.trained_on}"
            )
    elif opts.model is not None and is_pretrained(opts.model, opts.model_kwargs):
        loaded = load_pretrained(opts.model, opts.model_kwargs, say)  # its weights are analysed
        subject = Subject(
            loaded.model.to(dev).eval(), opts.model, dict(opts.model_kwargs),
            loaded.preprocessing, weights_meta(loaded),
        )  # fmt: skip
    else:
        config = recipe.train.with_overrides(
            model=opts.model, seed=opts.seed, model_kwargs=opts.model_kwargs or None,
            data_options=data_options or None,
        )  # fmt: skip
        check_model_and_data(config)
        subject = Subject(_architecture(config), config.model, dict(config.model_kwargs))
    _check_layers(subject.model, layer_spec, opts.dataset, data_options)
    if config is not None:  # everything checked: train the data set's model normally
        say(
            f"no checkpoint given: training {config.model} normally on {opts.dataset} first "
            f"({config.epochs} epochs) → {target / CHECKPOINT_NAME}"
        )
        # The model analyze trains for itself is one of its own outputs: a rerun replaces it.
        trained = train(
            config, target, device=opts.device, data_dir=opts.data_dir, progress=progress,
            overwrite=True,
        )  # fmt: skip
        say(f"clean test accuracy: {trained.metrics[-1]['test_accuracy']:.4f}")
        subject.model = trained.model

    net = subject.model
    state = target / STATE_FILE
    if opts.resume is None:  # a new analysis starts afresh
        _remove_states(state)
        if writes:
            made = {"checkpoint": target / CHECKPOINT_NAME} if config is not None else {}
            recorded = opts.model_copy(update={"out": target, "resume": None, **made})
            atomic_write_text(target / OPTIONS_FILE, recorded.to_yaml())
    else:
        say(f"resuming the analysis in {target} from {state}")
    seed_everything(recipe.train.seed if opts.seed is None else opts.seed)
    perturbations = build_perturbations(net, parsed)
    loader: Any = data.load(
        opts.dataset, opts.split, batch_size=opts.batch_size, shuffle=False, limit=opts.limit,
        data_dir=opts.data_dir, transform=transform(subject.preprocessing), **data_options,
    )  # fmt: skip
    loader = labels_for(net, loader, opts.dataset, data_options, say)
    with speed.attack_precision(opts.amp):
        result = run_lsa(
            net,
            loader,
            perturbations,
            layers=layer_spec,
            measure=opts.measure,
            reduction=opts.reduction,
            progress=progress,
            state_path=state,
            meta={
                "model": subject.name,
                "model_kwargs": subject.kwargs,
                "dataset": opts.dataset,
                **({"data_options": data_options} if data_options else {}),
                "split": opts.split,
                "checkpoint": str(opts.checkpoint) if opts.checkpoint else None,
                **subject.meta,
                **data_meta(opts.dataset, data_options),
                "perturbations": specs,
                **({"amp": opts.amp} if opts.amp != "off" else {}),
            },
        )
    eta = recipe.eta if opts.eta is None else opts.eta
    source = opts.mvl_from or default_mvl_source(
        result.names(), recipe.mvl_perturbation, perturbations
    )
    mvl = result.most_vulnerable_layers(eta, source)
    result = result.model_copy(
        update={
            "meta": {
                **result.meta,
                "mvl": {"perturbation": source, "eta": eta, "layers": [la.label for la in mvl]},
            }
        }
    )
    if writes:
        from lsakit.report import plot_layer_curves, save_figure

        result.save(target / RESULT_FILE)
        figure = plot_layer_curves(
            result,
            mvl=mvl,
            title=f"LSA of {subject.name} on {opts.dataset} ({opts.split}, "
            f"{result.n_samples} samples)",
        )
        save_figure(figure, target / FIGURE_FILE)
        (target / OPTIONS_FILE).unlink(missing_ok=True)
    _remove_states(state)  # the result is written: nothing is left to resume
    return result


def _remove_states(state: Path) -> None:
    """This rank's state file (:func:`lsakit.analysis_state.rank_path`), if any."""
    from lsakit.analysis_state import rank_path

    rank_path(state).unlink(missing_ok=True)


def _device(device: str, module: nn.Module | None) -> torch.device:
    """The device of the run: a module given with ``device="auto"`` stays where it is."""
    from lsakit._torch import model_device
    from lsakit.train import resolve_device

    if module is not None and device == "auto":
        return model_device(module)
    return resolve_device(device)


def check_model_and_data(config: Any) -> None:
    """Resolve the model spec and describe the data set: a missing package, factory or file, an
    unknown name or bad data fails here, before anything is trained."""
    from lsakit import data, models

    models.resolve(config.model, config.model_kwargs)
    data.info(config.dataset, **config.data_options)


def _architecture(config: Any) -> nn.Module:
    """The untrained model a config will train: what a layer selection is checked against."""
    from lsakit import models

    with torch.random.fork_rng(devices=[]):
        return models.build(config.model, **config.model_kwargs)


def _check_layers(net: nn.Module, layers: Any, dataset: str, data_options: dict[str, Any]) -> None:
    """Resolve a layer selection on ``net`` with one forward of a zero input of the data set's
    shape: an unknown name, an empty pattern or an ``L<k>`` beyond the layers fails here."""
    from lsakit import data
    from lsakit._torch import eval_mode, model_device
    from lsakit.probe import resolve_layers

    if layers is None:
        return  # the default activations: the analysis says when there are none
    shape = tuple(data.info(dataset, **data_options).input_shape)
    with eval_mode(net):
        resolve_layers(net, layers, torch.zeros((1, *shape), device=model_device(net)))
