"""Reproductions and studies as Python calls: a grid of training runs, each over several seeds,
reused from the cache where finished, then results.json and the report."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsakit.config.commands import GridOptions, ReproduceOptions, StudyOptions
from lsakit.errors import ArgumentError
from lsakit.workflows._common import Log, quiet


def grid_executor(options: GridOptions) -> Any:
    """The RayExecutor the options ask for, or None for the local one (the runners' default)."""
    if options.executor != "ray":
        return None
    from lsakit.experiments.executors import RayExecutor

    kwargs: dict[str, Any] = {"cpus_per_run": options.cpus_per_run,
                              "gpus_per_run": options.gpus_per_run,
                              "max_retries": options.max_retries}  # fmt: skip
    return RayExecutor(options.address, **{k: v for k, v in kwargs.items() if v is not None})


def study(log: Log | None = print, **options: Any) -> Any:
    """Run a companion-method study (``lsakit study``): every row trained with the one
    trainer, evaluated alike, then ``results.json``, ``report.md`` and ``accuracy.png`` in
    ``out`` (default ``runs/study-STUDY-PROFILE``). Finished runs are reused.

    Args:
        log: where progress lines go (None: nowhere).
        **options: :class:`~lsakit.config.commands.StudyOptions` (``name``, ``profile``,
            ``seeds``, ``executor``, ``jobs``, …).

    Returns:
        The :class:`~lsakit.experiments.results.StudyResult`, as written to ``results.json``.
    """
    from lsakit.experiments.studies import load_study, run_study

    opts = StudyOptions.build(options)
    say = log or quiet
    config = load_study(opts.name)
    root = study_dir(opts, config.study)
    grid = grid_executor(opts)
    say(f"study {config.study} ({opts.profile}) → {root}")
    with grid or contextlib.nullcontext():
        return run_study(
            config, opts.profile, root, seeds=opts.seeds, data_dir=opts.data_dir,
            device=opts.device, log=say, log_to=opts.log_to, jobs=opts.jobs, executor=grid,
        )  # fmt: skip


def study_dir(options: StudyOptions, study_name: str) -> Path:
    """Where a study writes: ``out``, else ``runs/study-STUDY-PROFILE``."""
    return options.out or Path("runs") / f"study-{study_name}-{options.profile}"


def reproduce_dir(options: ReproduceOptions) -> Path:
    """Where a reproduction writes: ``out``, else ``runs/reproduce-EXPERIMENT-PROFILE``."""
    suffix = f"-{options.protocol}" if options.protocol else ""
    return options.out or Path("runs") / (
        f"reproduce-{options.experiment}-{options.chosen_profile()}{suffix}"
    )


def reproduce(
    log: Log | None = print,
    on_result: Callable[[Any, Path, tuple[Path, Path] | None], None] | None = None,
    on_sensitivity: Callable[[str, dict[str, Any], tuple[Path, Path]], None] | None = None,
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """Reproduce a table of the paper (``lsakit reproduce``): every row over several seeds,
    ``results.json`` and the report per experiment and protocol; with ``protocol="all"`` each
    protocol into ``OUT/PROTOCOL``, then ``OUT/sensitivity.md``.

    Finished runs are kept in ``OUT/runs`` and reused, so an interrupted reproduction
    continues. Every experiment and protocol is checked before anything runs.

    Args:
        log: where progress lines go (None: nowhere).
        on_result: called with each ExperimentResult, its folder and its report's files
            (Markdown, HTML; None without ``report``) once written.
        on_sensitivity: with ``protocol="all"``, called with each experiment's name, its
            results by protocol and the sensitivity report's files.
        **options: :class:`~lsakit.config.commands.ReproduceOptions` (``experiment``,
            ``profile``, ``protocol``, ``seeds``, ``jobs``, ``executor``, ``report``, …).

    Returns:
        experiment name → protocol → its ExperimentResult.
    """
    from lsakit.experiments import SUITES, load_experiment, run_experiment

    opts = ReproduceOptions.build(options)
    say = log or quiet
    if opts.experiment not in SUITES:
        raise ArgumentError(
            f"unknown {{experiment}} {opts.experiment!r}; choose one of {', '.join(SUITES)}"
        )
    every = opts.protocol == "all"
    protocols: dict[str, list[str]] = {}
    for name in SUITES[opts.experiment]:  # an unknown protocol fails before anything runs
        config = load_experiment(name)
        protocols[name] = (
            config.protocol_names() if every else [opts.protocol or config.default_protocol]
        )
        if not every:
            config.under(opts.protocol)
    root = reproduce_dir(opts)
    grid = grid_executor(opts)
    done: dict[str, dict[str, Any]] = {}
    with grid or contextlib.nullcontext():  # one Ray connection for the whole suite
        for name in SUITES[opts.experiment]:
            folder = root if len(SUITES[opts.experiment]) == 1 else root / name
            results: dict[str, Any] = {}
            for chosen in protocols[name]:
                target = folder / chosen if every else folder
                result = run_experiment(
                    name, opts.chosen_profile(), target, seeds=opts.seeds, jobs=opts.jobs,
                    data_dir=opts.data_dir, device=opts.device, log=say, log_to=opts.log_to,
                    executor=grid, protocol=chosen,
                )  # fmt: skip
                results[result.protocol] = result
                paths = None
                if opts.report:
                    from lsakit.report.reproduction import write_report

                    paths = write_report(result, target, data_dir=opts.data_dir)
                if on_result is not None:
                    on_result(result, target, paths)
            if every and len(results) > 1:
                from lsakit.report.sensitivity import write_sensitivity_report

                written = write_sensitivity_report(results, folder)
                if on_sensitivity is not None:
                    on_sensitivity(name, results, written)
            done[name] = results
    return done
