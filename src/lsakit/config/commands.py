"""The options of ``prune``, ``search``, ``study`` and ``reproduce``: one declaration each
(:mod:`lsakit.config.options`), from which the commands derive their flags, ``--config`` and
``--print-config``."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from lsakit.config.defaults import (
    SEARCH_CELLS,
    SEARCH_CHANNELS,
    SEARCH_EPOCHS,
    SEARCH_LAM_BAR_FACTOR,
    SEARCH_NODES,
    TrackingBackend,
)
from lsakit.config.help import DATA_DIR_DEFAULT, DATA_DIR_HELP, DEVICE_HELP, field_help
from lsakit.config.options import Options, option
from lsakit.errors import ArgumentError
from lsakit.validate import positive_int


class PruneOptions(Options):
    """The options of ``lsakit prune``."""

    run_dir: Path = option(..., "A finished `lsakit train` run directory.", kind="argument")
    sparsity: float = option(..., "Fraction of conv/linear weights to zero, e.g. 0.85.")
    scope: str = option(
        "global", "global (one magnitude threshold) or per_layer (each layer alike)."
    )
    checkpoint: Path | None = option(
        None,
        "Weights to prune.",
        show_default="RUN_DIR/best.safetensors, else RUN_DIR/model.safetensors",
    )
    epochs: int | None = option(
        None, "Masked fine-tuning epochs.", show_default="a fifth of the run's"
    )
    lr: float | None = option(None, "Fine-tuning learning rate.", show_default="the run's")
    out: Path | None = option(None, "Output directory.", show_default="RUN_DIR/pruned-SPARSITY")
    overwrite: bool = option(False, "Delete a previous pruning run in the output and start over.")
    data_dir: Path | None = option(None, DATA_DIR_HELP, show_default=DATA_DIR_DEFAULT)
    device: str = option("auto", DEVICE_HELP)

    def check(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ArgumentError(f"{{sparsity}} must lie in [0, 1), got {self.sparsity:g}")
        if self.scope not in ("global", "per_layer"):
            raise ArgumentError(f"{{scope}} must be global or per_layer, got {self.scope!r}")


class SearchOptions(Options):
    """The options of ``lsakit search`` (RACL). The defaults of cells, nodes, channels, epochs
    and lam_bar_factor are :class:`lsakit.nas.SearchConfig`'s, declared once in
    :mod:`lsakit.config.defaults`."""

    dataset: str = option("mnist", "Image data set.", "--dataset", "-d")
    cells: int = option(SEARCH_CELLS, "Cells of the supernet.")
    nodes: int = option(SEARCH_NODES, "Intermediate nodes per cell.")
    channels: int = option(SEARCH_CHANNELS, "Channels of the first cell.")
    reductions: list[int] | None = option(
        None, "Indices of reduction cells, comma-separated (e.g. 1,2).", show_default="none"
    )
    epochs: int = option(SEARCH_EPOCHS, "Search epochs.")
    limit: int | None = option(
        None, "Training images used (half weights, half architecture).", show_default="all"
    )
    lipschitz: bool = option(True, "The Lipschitz constraint.")
    lam_bar_factor: float = option(SEARCH_LAM_BAR_FACTOR, "λ̄_F = exp(initial μ_F) × this factor.")
    seed: int = option(0, "Search seed.")
    out: Path | None = option(
        None, "Output directory.", show_default="runs/search-DATASET-racl|plain"
    )
    data_dir: Path | None = option(None, DATA_DIR_HELP, show_default=DATA_DIR_DEFAULT)
    device: str = option("auto", DEVICE_HELP)


class GridOptions(Options):
    """Where a grid's runs go, and what every run shares (``study`` and ``reproduce``)."""

    seeds: list[int] | None = option(None, "Comma-separated seeds.", show_default="the profile's")
    log_to: list[str] | None = option(None, field_help("log_to"), show_default="none")
    data_dir: Path | None = option(None, DATA_DIR_HELP, show_default=DATA_DIR_DEFAULT)
    device: str = option("auto", DEVICE_HELP)
    executor: str = option(
        "local",
        "Where the runs go: local (this machine, --jobs processes) or ray (one Ray task per "
        "(row, seed) run; needs lsakit[ray]; OUT must be a path every node sees).",
    )
    jobs: int = option(1, "Runs in parallel (local processes, 1 thread each).")
    address: str | None = option(
        None,
        "Ray: the cluster (HEAD:PORT, auto or ray://HEAD:10001).",
        show_default="$RAY_ADDRESS, else a cluster started on this machine, else a new local one",
    )
    cpus_per_run: float | None = option(
        None, "Ray: CPUs of each run, also its torch threads.", show_default="1"
    )
    gpus_per_run: float | None = option(
        None, "Ray: GPUs of each run (a fraction shares a GPU).", show_default="0"
    )
    max_retries: int | None = option(
        None, "Ray: reruns of a run whose worker or node died.", show_default="3"
    )

    def check(self) -> None:
        for backend in self.log_to or ():
            if backend not in get_args(TrackingBackend):
                raise ArgumentError(
                    f"unknown tracking backend {backend!r} in {{log_to}}; use "
                    f"{' or '.join(get_args(TrackingBackend))}"
                )
        positive_int(self.jobs, "jobs")
        ray = ("address", "cpus_per_run", "gpus_per_run", "max_retries")
        if self.executor == "local":
            given = [f"{{{name}}}" for name in ray if getattr(self, name) is not None]
            if given:
                raise ArgumentError(
                    f"{', '.join(given)}: options of {{executor}} ray; add it or drop them"
                )
        elif self.executor != "ray":
            raise ArgumentError(f"{{executor}} must be local or ray, got {self.executor!r}")
        elif self.jobs != 1:
            raise ArgumentError(
                "{jobs} is for {executor} local; on Ray the cluster's CPUs and {cpus_per_run} "
                "decide how many runs go at once"
            )


class StudyOptions(GridOptions):
    """The options of ``lsakit study``."""

    name: str = option(..., "lsp, rsr or racl (or a study YAML file).", kind="argument")
    profile: str = option("quick", "quick, full or smoke.")
    out: Path | None = option(None, "Output directory.", show_default="runs/study-STUDY-PROFILE")


class ReproduceOptions(GridOptions):
    """The options of ``lsakit reproduce``."""

    experiment: str = option(..., "moon, mnist or cifar10.", kind="argument")
    quick: bool = option(False, "The quick profile (fewer epochs).", "--quick")
    profile: str | None = option(
        None, "quick, full or smoke (a pipeline test).", show_default="full"
    )
    protocol: str | None = option(
        None,
        "The conventions: strict (the default: inputs in [0, 1], attacks clamp, ε in input "
        "units), paper (the fit to the published Normal row and curves — Moon: standardized "
        "coordinates, unbounded, one output; MNIST: see configs/mnist.yaml) or all (each "
        "protocol into OUT/PROTOCOL, then OUT/sensitivity.md: which of the paper's claims hold "
        "under which).",
        show_default="strict",
    )
    out: Path | None = option(
        None, "Output directory.", show_default="runs/reproduce-EXPERIMENT-PROFILE"
    )
    report: bool = option(True, "Write the Markdown/HTML report.")

    def check(self) -> None:
        super().check()
        if self.quick and self.profile not in (None, "quick"):
            raise ArgumentError("{quick} and {profile} disagree; give one of them")

    def chosen_profile(self) -> str:
        """The profile to run: ``quick`` with ``quick``, else ``profile``, else ``full``."""
        return "quick" if self.quick else (self.profile or "full")
