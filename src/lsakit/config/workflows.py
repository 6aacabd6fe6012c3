"""The options of ``analyze`` and ``evaluate``: one declaration each (:mod:`lsakit.config.options`).

The workflows of :mod:`lsakit.workflows` take them as keyword arguments, ``lsakit analyze`` and
``lsakit evaluate`` derive their flags from them, and a ``--config`` YAML file sets them by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsakit.config.defaults import DEFAULT_ETA
from lsakit.config.help import (
    DATA_DIR_DEFAULT,
    DATA_DIR_HELP,
    DEVICE_HELP,
    DOMAIN_DEFAULT,
    DOMAIN_HELP,
    OWN_DATA_EPS,
    field_default,
    field_help,
    preset_text,
)
from lsakit.config.options import Options, option
from lsakit.config.presets import DEFAULT_DATASET
from lsakit.errors import ArgumentError
from lsakit.validate import positive_int

DEFAULT_ETA_TEXT = preset_text(lambda p: p.eta, DEFAULT_ETA)

MODEL_ARG_HELP = field_help("model_kwargs")
DATA_OPTION_HELP = field_help("data_options")
AMP_HELP = (
    "Mixed precision of the attacks' forwards: off, bf16 or fp16 (GPU; clean forwards stay in "
    "full precision)."
)
CHECKPOINT_HELP = (
    "Trained model: an lsakit checkpoint, or a plain state dict (.safetensors, .pt) of --model."
)


#: Fields both workflows declare alike: one declaration each.
MODEL_KWARGS_OPTION = option(
    {}, MODEL_ARG_HELP, "--model-arg", show_default="none", kind="key_value"
)
DATA_OPTIONS_OPTION = option(
    {}, DATA_OPTION_HELP, "--data-option", show_default="the data set's", kind="key_value"
)
DOMAIN_OPTION = option(None, DOMAIN_HELP, show_default=DOMAIN_DEFAULT)
AMP_OPTION = option("off", AMP_HELP)
DATA_DIR_OPTION = option(None, DATA_DIR_HELP, show_default=DATA_DIR_DEFAULT)
DEVICE_OPTION = option("auto", DEVICE_HELP)


class _Common(Options):
    """Options every model-and-data workflow shares (declared once, here)."""

    def check(self) -> None:
        domain = getattr(self, "domain", None)
        if domain is not None and "domain" in getattr(self, "data_options", {}):
            raise ArgumentError("the domain is given twice; use {domain} or {data_options} domain=")
        limit = getattr(self, "limit", None)
        if limit is not None:
            positive_int(limit, "limit")
        positive_int(getattr(self, "batch_size", 1), "batch_size")

    def all_data_options(self) -> dict[str, Any]:
        """The data set options with the domain among them."""
        options = dict(getattr(self, "data_options", {}))
        domain = getattr(self, "domain", None)
        if domain is not None:
            options["domain"] = domain
        return options


class AnalyzeOptions(_Common):
    """The options of :func:`lsakit.workflows.analyze` and ``lsakit analyze``."""

    dataset: str = option(DEFAULT_DATASET, "Data set (see `lsakit datasets`).", "--dataset", "-d")
    model: str | None = option(
        None, field_help("model"), "--model", "-m", show_default=field_default("model")
    )
    model_kwargs: dict[str, Any] = MODEL_KWARGS_OPTION
    checkpoint: Path | None = option(
        None, CHECKPOINT_HELP, show_default="none: train the data set's model normally first"
    )
    data_options: dict[str, Any] = DATA_OPTIONS_OPTION
    domain: str | None = DOMAIN_OPTION
    perturbations: list[str] | None = option(
        None,
        "NAME[=STRENGTH][,key=value…], repeatable, e.g. gaussian=0.1 or pgd=0.3,steps=40.",
        "--perturb",
        "-p",
        show_default="the preset's noise and attacks",
        kind="repeat",
    )
    measure: str = option("relative_error", "relative_error, mse, cosine_distance or linf.")
    reduction: str = option("sample", "sample (statistics over samples) or batch.")
    eta: float | None = option(None, "MVL cut-off η (Algorithm 1).", show_default=DEFAULT_ETA_TEXT)
    mvl_from: str | None = option(
        None,
        "Perturbation whose result selects the MVL list.",
        show_default="the preset's attack (pgd), else the last adversarial one",
    )
    layers: str | list[str] | None = option(
        None,
        "Layers to measure, comma-separated: module names, name#k (k-th call of a reused "
        "module), module:fn#k (an activation function's call), globs, L<k> labels or "
        "type:ClassName (e.g. type:Conv2d).",
        show_default="every activation: module or function call",
        kind="layers",
    )
    split: str = option("test", "Data split to analyse: train or test.")
    limit: int | None = option(None, "Analyse only the first N samples.", show_default="all")
    batch_size: int = option(256, "Batch size for the analysis.")
    seed: int | None = option(None, field_help("seed"), show_default=field_default("seed"))
    amp: str = AMP_OPTION
    out: Path | None = option(None, "Output directory.", show_default="runs/analyze-DATASET")
    resume: Path | None = option(
        None,
        "Continue the interrupted analysis in this output directory from its last completed "
        "batch, with the options it recorded; the result equals an uninterrupted run's.",
        show_default="none",
    )
    data_dir: Path | None = DATA_DIR_OPTION
    device: str = DEVICE_OPTION

    def check(self) -> None:
        super().check()
        if self.split not in ("train", "test"):
            raise ArgumentError(f"{{split}} must be train or test, got {self.split!r}")


class EvaluateOptions(_Common):
    """The options of :func:`lsakit.workflows.evaluate` and ``lsakit evaluate``."""

    checkpoint: Path | None = option(
        None,
        CHECKPOINT_HELP,
        show_default="none: --model with pretrained weights (e.g. robustbench:NAME)",
    )
    dataset: str | None = option(
        None, "Data set.", "--dataset", "-d", show_default="the checkpoint's"
    )
    model: str | None = option(
        None,
        "The model a plain state dict holds (any `analyze --model` form); for an lsakit "
        "checkpoint only needed to allow a model built by your code (module:factory, "
        "file.py:factory).",
        "--model",
        "-m",
        show_default="the checkpoint's",
    )
    model_kwargs: dict[str, Any] = MODEL_KWARGS_OPTION
    data_options: dict[str, Any] = DATA_OPTIONS_OPTION
    domain: str | None = DOMAIN_OPTION
    fgsm_eps: list[float] | None = option(
        None,
        "FGSM ε sweep, comma-separated.",
        show_default="the paper's grid for the data set; own data 0, ε/4, ε/2, ε, 2ε",
        kind="comma",
    )
    attacks: list[str] | None = option(
        None,
        "Further attacks, NAME=EPS[,key=value…], repeatable, e.g. pgd=0.3,steps=40 or apgd=0.3.",
        "--attack",
        "-a",
        show_default="PGD-20 and APGD-CE at the preset's training ε",
        kind="repeat",
    )
    suite: str | None = option(
        None,
        "Run an attack suite instead: standard (APGD-CE, APGD-T, FAB-T, Square; AutoAttack's "
        "protocol) or rand (EOT-APGD, for randomized models).",
        show_default="none",
    )
    eps: float | None = option(
        None, "ε of the suite.", show_default=preset_text(lambda p: p.train_eps, OWN_DATA_EPS)
    )
    limit: int | None = option(
        None, "Evaluate the first N test samples.", "--n-examples", "--limit", show_default="all"
    )
    batch_size: int = option(256, "Batch size.")
    leaderboard: Path | None = option(
        None,
        "RobustBench model_info JSON whose clean and AutoAttack accuracy --suite standard "
        "prints beside lsakit's (a robustbench: model's entry is looked up in lsakit's table "
        "of known entries without it).",
        show_default="lsakit's table",
    )
    state: Path | None = option(
        None,
        "Suite state file, rewritten after every batch; an interrupted run resumes from it.",
        show_default="OUT/suite-SUITE-epsEPS-nN.state.json",
    )
    checks: bool = option(
        True, "Run the gradient-masking checks after the suite.", "--checks/--no-checks"
    )
    seed: int = option(0, "Seed of the suite's random starts.")
    amp: str = AMP_OPTION
    out: Path | None = option(
        None,
        "Output directory.",
        show_default="the checkpoint's folder; runs/evaluate-MODEL for a pretrained --model",
    )
    data_dir: Path | None = DATA_DIR_OPTION
    device: str = DEVICE_OPTION

    def check(self) -> None:
        super().check()
        if self.suite is not None:
            if self.amp != "off":
                # The suite's state file does not record the precision: a resumed run could mix
                raise ArgumentError("{amp} applies to {attacks}, not to {suite}; drop {amp}")
            if self.attacks or self.fgsm_eps is not None:
                raise ArgumentError(
                    "{suite} runs its own attacks; drop {attacks} / {fgsm_eps} (run them in a "
                    "separate evaluation)"
                )
            if self.eps is not None and not self.eps > 0:
                raise ArgumentError(f"{{eps}} must be > 0, got {self.eps}")
        elif self.eps is not None or self.state is not None:
            raise ArgumentError(
                "{eps} and {state} belong to {suite}; for other attacks use {attacks} NAME=EPS"
            )
        if self.leaderboard is not None and self.suite != "standard":
            raise ArgumentError("{leaderboard} goes with {suite} standard (AutoAttack's protocol)")
