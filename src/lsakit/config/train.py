"""The training configuration: every option and its default, in one place.

The CLI, the YAML config files, the presets and the experiment runner all build a
:class:`TrainConfig`; nothing else holds a default. Each field's description is its help text
(``lsakit train --help``, the README's option table: :mod:`lsakit.options`). The CLI's flags and
YAML files (:func:`lsakit.config.load_config`) both start from the data set's preset
(:func:`lsakit.config.presets.train_config`); a run's own ``config.yaml`` is complete and read as
it is (:func:`lsakit.config.load_run_config`).

A leaf: it imports pydantic, PyYAML and :mod:`lsakit.errors`, never torch or the modules that run
a config; the defaults it shares with them are in :mod:`lsakit.config.defaults`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lsakit.config.defaults import (
    DEFAULT_BANDWIDTH,
    DEFAULT_ETA,
    DEFAULT_GAMMA,
    DEFAULT_GRAD_THROUGH,
    DEFAULT_LSP_WEIGHT,
    DEFAULT_PERPLEXITY,
    Amp,
    Bandwidth,
    GradThrough,
    LSPOn,
    LSPVariant,
    TrackingBackend,
)
from lsakit.errors import ArgumentError, ConfigError

Method = Literal["standard", "fgsm", "fast", "pgd", "trades", "mart", "apgd", "pni"]
#: Companion regularizers added to any objective (issue: LSP and RSR's lasso penalties).
Regularizer = Literal["lsp", "lasso", "group_lasso"]
Schedule = Literal["constant", "multistep", "cosine", "cyclic"]


class TrainConfig(BaseModel):
    """A training run: model, data, objective, regularizer, optimization, validation.

    Each field is one option, declared once: its type, default and description are what
    ``lsakit train --help``, the YAML loader and the README's option table show
    (:mod:`lsakit.options`). ``none_means`` (in ``json_schema_extra``) says what an unset
    (None) value does. The CLI and YAML files start from the data set's preset
    (:func:`lsakit.config.presets.train_config`); the defaults here are the library's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # what is trained, on what
    model: str = Field(
        description="model: a name of `lsakit models`, torchvision:NAME, timm:NAME, hf:DIR "
        "(a local config.json), package.module:factory or file.py:factory",
        json_schema_extra={"flags": ["--model", "-m"]},
    )
    dataset: str = Field(
        description="data set: a name of `lsakit datasets` or your own data",
        json_schema_extra={"flags": ["--dataset", "-d"]},
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="model constructor argument KEY=VALUE (repeatable; VALUE read as YAML), e.g. "
        "num_classes=2 for timm:/torchvision:, num_labels=2 or task=… for hf:, "
        "genotype=runs/search/genotype.json for genotype_net; pretrained weights: "
        "weights=DEFAULT (torchvision:), pretrained=true (timm:), revision=REV (hf:ORG/NAME), "
        "dataset=, threat_model=, model_dir= (robustbench:)",
        json_schema_extra={"flags": ["--model-arg"], "kind": "key_value"},
    )
    data_options: dict[str, Any] = Field(
        default_factory=dict,
        description="data set option KEY=VALUE (repeatable; VALUE read as YAML), e.g. size=32, "
        "mode=L for folder:PATH; test_fraction=0.2, data_seed=0 for your own data; noise=0.2 "
        "for moons",
        json_schema_extra={
            "flags": ["--data-option"],
            "kind": "key_value",
            "show_default": "the data set's",
        },
    )
    limit: int | None = Field(
        None,
        ge=1,
        description="use only the first N training samples",
        json_schema_extra={"none_means": "all"},
    )
    test_limit: int | None = Field(
        None,
        ge=1,
        description="evaluate on the first N test samples",
        json_schema_extra={"none_means": "all"},
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="held-out fraction of the training split for validation"
    )

    # objective (lsakit.train.objectives)
    method: Method = Field("standard", description="training objective")
    eps: float = Field(0.0, ge=0, description="attack budget ε in input units")
    alpha: float | None = Field(
        None, gt=0, description="attack step", json_schema_extra={"none_means": "the method's"}
    )
    steps: int = Field(10, ge=1, description="attack steps (pgd, trades, mart, apgd, pni)")
    beta: float = Field(6.0, ge=0, description="TRADES / MART trade-off β")
    eps_warmup: float = Field(
        0.0,
        ge=0,
        description="epochs over which the training ε (and a given α) rise linearly from 0",
    )

    # layer-wise regularizer (AT-LR)
    lr_layers: list[str] | None = Field(
        None,
        description="layers to regularize (AT-LR): labels (L2), module names, or mvl",
        json_schema_extra={"none_means": "none"},
    )
    gamma: float | list[float] = Field(
        DEFAULT_GAMMA, description="γ of the regularizer: one value, or one per layer"
    )
    grad_through: GradThrough = Field(
        DEFAULT_GRAD_THROUGH, description="regularizer gradient through"
    )
    eta: float = Field(DEFAULT_ETA, description="η of the MVL selection (lr_layers mvl)")
    mvl_checkpoint: str | None = Field(
        None,
        description="normally trained model whose LSA gives the MVL list",
        json_schema_extra={"none_means": "the model after mvl_epoch"},
    )
    mvl_epoch: int = Field(1, ge=0, description="epochs of base training before LSA picks the MVL")
    mvl_layers: list[str] | None = Field(
        None,
        description="with lr_layers mvl: the layers the MVL analysis measures (as analyze "
        "--layers, e.g. type:Conv2d); the MVL list is regularized by those same layers",
        json_schema_extra={"none_means": "the activations", "kind": "layers"},
    )

    # companion regularizers (lsakit.train.lsp, lsakit.defenses.sparsity)
    regularizer: list[Regularizer] = Field(default_factory=list, description="extra penalties")
    lsp_weight: float = Field(DEFAULT_LSP_WEIGHT, ge=0, description="λ of the LSP term")
    lsp_variant: LSPVariant = Field("kl", description="LSP form")
    lsp_layer: str | None = Field(
        None,
        description="LSP embedding layer",
        json_schema_extra={"none_means": "the penultimate"},
    )
    lsp_on: LSPOn = Field("clean", description="LSP on these points")
    lsp_k: int | None = Field(
        None,
        ge=1,
        description="LSP k-NN restriction (laplacian needs it)",
        json_schema_extra={"none_means": "all pairs"},
    )
    lsp_bandwidth: Bandwidth = Field(DEFAULT_BANDWIDTH, description="LSP kernel bandwidth rule")
    lsp_perplexity: float = Field(
        DEFAULT_PERPLEXITY, gt=0, description="LSP perplexity (lsp_bandwidth perplexity)"
    )
    lasso_weight: float = Field(1e-4, ge=0, description="λ₁ of the lasso penalty Σ‖W‖₁ (RSR)")
    group_lasso_weight: float = Field(
        1e-4, ge=0, description="λ_g of the group-lasso penalty Σ‖W_c‖₂ (RSR)"
    )

    # defenses (lsakit.defenses): noise injection, pruning
    noise_injection: bool = Field(
        False, description="PNI: channel-wise learnable weight noise on every conv/linear layer"
    )
    alpha_init: float = Field(0.25, ge=0, description="initial PNI noise scale α")
    init_checkpoint: str | None = Field(
        None,
        description="start from these weights (e.g. the dense model to prune)",
        json_schema_extra={"none_means": "fresh weights"},
    )
    prune_sparsity: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="magnitude-prune to this sparsity, then train masked (lsakit prune)",
        json_schema_extra={"none_means": "no pruning", "flags": []},
    )
    prune_scope: Literal["global", "per_layer"] = Field(
        "global", description="pruning threshold scope", json_schema_extra={"flags": []}
    )

    # optimization
    epochs: int = Field(10, ge=1, description="training epochs")
    batch_size: int = Field(128, ge=1, description="batch size")
    optimizer: Literal["sgd", "adam"] = Field("adam", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="weight decay")
    schedule: Schedule = Field(
        "constant", description="learning-rate schedule, stepped per iteration"
    )
    milestones: list[float] = Field(
        default_factory=lambda: [0.5, 0.75],
        description="multistep: fractions of the epochs where the lr is multiplied by lr_decay",
    )
    lr_decay: float = Field(0.1, gt=0, le=1, description="multistep: the lr factor")
    seed: int = Field(0, ge=0, description="random seed")

    # speed (lsakit.speed): all off by default; on CPU they only pay in special cases
    amp: Amp = Field("off", description="mixed precision of training forwards and attacks (GPU)")
    channels_last: bool = Field(False, description="channels-last layout for image batches")
    compile: bool = Field(False, description="compile the training model with torch.compile")

    # experiment tracking (lsakit.tracking): off by default
    log_to: list[TrackingBackend] = Field(
        default_factory=list,
        description="also track the run (needs lsakit[tracking]): RUN_DIR/tb, and "
        "$MLFLOW_TRACKING_URI or the SQLite store RUN_DIR/../mlflow.db",
    )

    # validation, best checkpoint, early stopping
    val_steps: int = Field(10, ge=1, description="PGD steps of the per-epoch robust validation")
    early_stopping: int | None = Field(
        None,
        ge=1,
        description="stop after this many epochs without a better validation accuracy",
        json_schema_extra={"none_means": "off"},
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.method != "standard" and self.eps <= 0:
            raise ValueError(f"method {self.method} needs eps > 0 (the attack budget)")
        if self.eps_warmup > 0 and self.method == "standard":
            raise ValueError("eps_warmup needs an adversarial method (standard has no ε)")
        if self.lr_layers is not None:
            if not self.lr_layers:
                raise ValueError("lr_layers is empty; give layer labels, module names or mvl")
            if self.method == "standard":
                raise ValueError("lr_layers needs an adversarial method (x̂), not standard")
            if "mvl" in self.lr_layers and self.lr_layers != ["mvl"]:
                raise ValueError("lr_layers: mvl cannot be combined with other layers")
            if self.lr_layers == ["mvl"] and isinstance(self.gamma, list):
                raise ValueError(
                    "with lr_layers mvl the layers are not known in advance: give one gamma"
                )
        if self.mvl_layers is not None and self.lr_layers != ["mvl"]:
            raise ValueError("mvl_layers selects what the MVL analysis measures: use lr_layers mvl")
        if len(set(self.regularizer)) != len(self.regularizer):
            raise ValueError("regularizer lists a penalty twice")
        if len(set(self.log_to)) != len(self.log_to):
            raise ValueError("log_to lists a backend twice")
        if "lsp" in self.regularizer:
            if self.lsp_on == "clean+adv" and self.method == "standard":
                raise ValueError("lsp_on clean+adv needs an adversarial method")
            if self.lsp_variant == "laplacian" and self.lsp_k is None:
                raise ValueError("the laplacian LSP variant needs lsp_k")
        if self.prune_sparsity is not None and self.init_checkpoint is None:
            raise ValueError("prune_sparsity needs init_checkpoint (the trained model to prune)")
        gammas = self.gamma if isinstance(self.gamma, list) else [self.gamma]
        if any(not math.isfinite(g) or g < 0 for g in gammas):
            raise ValueError("gamma must be finite and ≥ 0")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError("milestones are fractions of the epochs, each in (0, 1)")
        return self

    @property
    def regularized(self) -> bool:
        """Whether the layer-wise regularizer is on."""
        return self.lr_layers is not None

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A validated copy with the non-None overrides applied.

        Args:
            overrides: field → new value; a None value leaves the field as it is (so no field
                can be set to None this way), and a mapping replaces the field's whole mapping.

        Returns:
            The new, validated config (this one is frozen and unchanged).
        """
        values = {**self.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        return validate_config(values)


def validate_config(values: dict[str, Any], *, source: str = "options") -> TrainConfig:
    """Build a TrainConfig; a validation error becomes one ConfigError line naming the option.

    Args:
        values: option → value; every required field (``model``, ``dataset``) present, no unknown
            option. No preset is applied.
        source: where the values came from (e.g. a file's path), named in the error.

    Returns:
        The validated config.
    """
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as e:
        first = e.errors()[0]
        loc = [str(x) for x in first["loc"]]
        message = str(first["msg"]).removeprefix("Value error, ")
        # ArgumentError: Python names the field (epochs), the command line its flag (--epochs)
        if not loc:  # a check across fields ("lr_layers is empty; …"): the message names them
            raise ArgumentError(f"invalid configuration in {source}: {message}") from None
        option = f"{{{loc[0]}}}" + "".join(f".{x}" for x in loc[1:])
        raise ArgumentError(f"invalid {option} in {source}: {message}") from None


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping of option: value in a YAML file; one ConfigError line when it cannot be read.

    Args:
        path: the YAML file (UTF-8).

    Returns:
        The file's mapping, not validated; empty for an empty file.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot read config file {p}: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of option: value")
    return data


def merge_options(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the non-None ``overrides``; a mapping option (model_kwargs, data_options)
    is merged key by key, so ``--data-option noise=0.2`` keeps a file's other data options.

    Args:
        values: the options so far (e.g. a config file's); not modified.
        overrides: the options over them; None values are skipped.

    Returns:
        A new mapping of the merged options.
    """
    merged = dict(values)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = {**merged[key], **value}
        merged[key] = value
    return merged


def dump_config(config: TrainConfig) -> str:
    """The config as YAML (every field), readable back with :func:`lsakit.config.load_config`.

    Args:
        config: the config to write.

    Returns:
        The YAML text, one top-level key per field in declaration order.
    """
    return str(yaml.safe_dump(config.model_dump(), sort_keys=False))


__all__ = [
    "Method",
    "Regularizer",
    "Schedule",
    "TrainConfig",
    "dump_config",
    "merge_options",
    "read_config_file",
    "validate_config",
]
