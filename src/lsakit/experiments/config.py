"""Declarative experiment configs (``configs/*.yaml``) and the published tables (``tables/*.yaml``).

An experiment names a data set, a model, the paper's table, the base AT methods and the LR
proposals; training settings shared by every row, per-method overrides, and profiles (``quick``,
``full``, ``smoke``) that change seeds, epochs and data sizes. The rows of the table are derived:
``Normal``, each base ``AT-<METHOD>``, and each ``AT-<METHOD>-LR-<proposal>``.

``protocols`` name the conventions an experiment can run under (issue 12): each entry overrides
the data options, model arguments, LSA perturbations and training settings of the config's top
level, and :meth:`ExperimentConfig.under` applies one by name. The top level itself is the
``default_protocol`` (``strict``: lsakit's conventions), whose entry then overrides nothing. The ε
grid is not a protocol field: it follows the data's coordinates (:func:`lsakit.evaluate.paper_eps`).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lsakit.config import DEFAULT_ETA
from lsakit.errors import ConfigError
from lsakit.experiments.results import PublishedClaims, PublishedRow

#: The paper's names of the base methods (Table 2 writes TRADES as "AT-TRADE").
BASE_NAMES = {
    "fgsm": "AT-FGSM",
    "pgd": "AT-PGD",
    "trades": "AT-TRADE",
    "fast": "AT-FAST",
    "apgd": "AT-APGD",
    "mart": "AT-MART",
}

#: Which weights of a trained run a grid evaluates: ``last``, the model after the last epoch (the
#: weights in ``model.safetensors``), or ``best``, ``best.safetensors`` (the epoch with the best
#: robust validation accuracy; the last where the run kept no validation split). Reproductions
#: evaluate the last (:attr:`ExperimentConfig.evaluated_checkpoint`), studies the best
#: (:attr:`lsakit.experiments.studies.StudyConfig.evaluated_checkpoint`).
EvaluatedCheckpoint: TypeAlias = Literal["last", "best"]

#: ``lsakit reproduce NAME`` → the experiments it runs.
SUITES = {
    "moon": ["moon"],
    "mnist": ["mnist"],
    "cifar10": ["cifar10-vgg", "cifar10-wrn"],
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Profile(_Strict):
    """How much of the experiment to run; ``notes`` says what it reduces, for the report."""

    seeds: list[int] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig overrides for every row
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-method overrides
    test_limit: int | None = Field(None, ge=1)
    lsa_limit: int | None = Field(None, ge=1)
    #: narrow the table (e.g. the demo: one base method, the MVL proposal)
    base_methods: list[str] | None = None
    proposals: list[str] | None = None
    notes: str = ""
    expected_runtime: str = ""


class Protocol(_Strict):
    """A named set of conventions: overrides of the experiment's top-level settings.

    ``data_options``, ``model_kwargs``, ``train`` and ``methods`` (per method) are merged over the
    top level's; ``lsa_attack`` and ``lsa_perturbations`` replace it when given, and
    ``lsa_data_options`` is merged over the top level's.
    """

    description: str
    data_options: dict[str, Any] = Field(default_factory=dict)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    lsa_attack: str | None = None
    lsa_perturbations: list[str] | None = None
    lsa_data_options: dict[str, Any] = Field(default_factory=dict)
    #: replaces the profiles' expected_runtime text where the protocol's differs
    expected_runtime: dict[str, str] = Field(default_factory=dict)


class ExperimentConfig(_Strict):
    """One table of the paper and how we reproduce it."""

    experiment: str
    description: str
    dataset: str
    model: str
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    table: str  # file name in tables/
    base_methods: list[str] = Field(min_length=1)
    proposals: list[str] = Field(min_length=1)  # "L0", "L1", … or "MVL"
    rows: list[str] | None = None  # a subset of the derived rows (the paper's table)
    lsa_attack: str  # perturbation spec of the LSA after training, e.g. "pgd=0.3,steps=20"
    lsa_perturbations: list[str]  # the normal model's LSA (the "before" curves)
    #: data options of the LSA's test data only, over ``data_options`` (MNIST's paper protocol
    #: reads it unclamped, ``domain: unbounded``, while training and the FGSM table clamp)
    lsa_data_options: dict[str, Any] = Field(default_factory=dict)
    eta: float = DEFAULT_ETA
    #: which checkpoint of each run the table and the LSA evaluate: ``last`` (the model after the
    #: last epoch, as the paper's runs end) or ``best`` (the best robust validation accuracy);
    evaluated_checkpoint: EvaluatedCheckpoint = "last"
    train: dict[str, Any]  # TrainConfig fields common to every row
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    data_options: dict[str, Any] = Field(default_factory=dict)
    profiles: dict[str, Profile]
    #: named conventions (see the module docstring); empty: the top level is the only protocol
    protocols: dict[str, Protocol] = Field(default_factory=dict)
    default_protocol: str = "strict"
    #: the protocol applied (set by :meth:`under`; None: the top level as written)
    protocol: str | None = None

    def protocol_names(self) -> list[str]:
        """The protocols this experiment knows (the default one always).

        Returns:
            ``default_protocol`` first, then the names of ``protocols``, each once.
        """
        return list(dict.fromkeys([self.default_protocol, *self.protocols]))

    def under(self, protocol: str | None = None) -> ExperimentConfig:
        """This experiment under ``protocol`` (default: ``default_protocol``): its overrides
        applied, ``protocol`` set; ConfigError (one line, the known names) if unknown.

        Args:
            protocol: a name of :meth:`protocol_names`; None or empty: ``default_protocol``.

        Returns:
            A copy of the config with ``protocol`` set and, where the protocol has an entry in
            ``protocols``, its data options, model arguments, training settings, per-method
            settings and LSA data options merged over the top level's, its LSA attack and
            perturbations in place of the top level's where it gives them, and its expected
            runtimes in the profiles; this config itself is unchanged.
        """
        name = protocol or self.default_protocol
        if name not in self.protocol_names():
            raise ConfigError(
                f"experiment {self.experiment} has no protocol {name!r}; protocols: "
                f"{', '.join(self.protocol_names())}"
            )
        entry = self.protocols.get(name)
        if entry is None:
            return self.model_copy(update={"protocol": name})
        methods = {
            key: {**self.methods.get(key, {}), **entry.methods.get(key, {})}
            for key in {**self.methods, **entry.methods}
        }
        profiles = {
            key: prof.model_copy(update={"expected_runtime": entry.expected_runtime[key]})
            if key in entry.expected_runtime
            else prof
            for key, prof in self.profiles.items()
        }
        return self.model_copy(
            update={
                "protocol": name,
                "data_options": {**self.data_options, **entry.data_options},
                "model_kwargs": {**self.model_kwargs, **entry.model_kwargs},
                "train": {**self.train, **entry.train},
                "methods": methods,
                "lsa_attack": entry.lsa_attack or self.lsa_attack,
                "lsa_data_options": {**self.lsa_data_options, **entry.lsa_data_options},
                "lsa_perturbations": (
                    self.lsa_perturbations
                    if entry.lsa_perturbations is None
                    else entry.lsa_perturbations
                ),
                "profiles": profiles,
            }
        )


class RowSpec(_Strict):
    """A row to run: its name, objective, and regularized layers."""

    name: str
    method: str
    base: str | None
    lr_layers: list[str] | None


def row_specs(config: ExperimentConfig, profile: str | None = None) -> list[RowSpec]:
    """The rows of the table: Normal, the bases, then each base with each LR proposal.

    A profile may narrow the base methods and proposals (the demo runs one base and the MVL).
    ConfigError for an unknown base method or a ``rows`` entry that is not a derived row.

    Args:
        config: the experiment.
        profile: a profile name whose ``base_methods``/``proposals`` narrow the table (then the
            config's ``rows`` subset is not applied); None, or a name the config has no profile
            of: the whole table.

    Returns:
        The rows, in table order, restricted to ``config.rows`` (in its order) when it is given
        and the profile does not narrow.
    """
    prof = config.profiles.get(profile) if profile is not None else None
    base_methods = (prof.base_methods if prof else None) or config.base_methods
    proposals = (prof.proposals if prof else None) or config.proposals
    narrowed = prof is not None and (prof.base_methods or prof.proposals)
    rows = [RowSpec(name="Normal", method="standard", base=None, lr_layers=None)]
    for method in base_methods:
        if method not in BASE_NAMES:
            raise ConfigError(f"{config.experiment}: unknown base method {method!r}")
        rows.append(RowSpec(name=BASE_NAMES[method], method=method, base=None, lr_layers=None))
    for method in base_methods:
        base = BASE_NAMES[method]
        for proposal in proposals:
            layers = ["mvl"] if proposal.upper() == "MVL" else [proposal]
            name = f"{base}-LR-{proposal.upper() if proposal.upper() == 'MVL' else proposal}"
            rows.append(RowSpec(name=name, method=method, base=base, lr_layers=layers))
    if config.rows is not None and not narrowed:
        by_name = {r.name: r for r in rows}
        unknown = [n for n in config.rows if n not in by_name]
        if unknown:
            raise ConfigError(f"{config.experiment}: rows {unknown} are not derived rows")
        rows = [by_name[n] for n in config.rows]
    return rows


def _read_yaml(kind: str, filename: str) -> Any:
    try:
        text = (
            resources.files("lsakit.experiments")
            .joinpath(kind)
            .joinpath(filename)
            .read_text("utf-8")
        )
    except FileNotFoundError:
        raise ConfigError(
            f"no {kind[:-1]} file {filename!r} in lsakit/experiments/{kind}"
        ) from None
    return yaml.safe_load(text)


def experiment_names() -> list[str]:
    """Names of the packaged experiments.

    Returns:
        The names of the ``configs/*.yaml`` files, sorted.
    """
    folder = resources.files("lsakit.experiments").joinpath("configs")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_experiment(name: str) -> ExperimentConfig:
    """The packaged experiment ``name`` (``moon``, ``mnist``, ``cifar10-vgg``, ``cifar10-wrn``).

    ConfigError for an unknown name or an invalid file, naming the first invalid field.

    Args:
        name: a name of :func:`experiment_names`.

    Returns:
        The validated config, its top level as written (no protocol applied: see
        :meth:`ExperimentConfig.under`).
    """
    if name not in experiment_names():
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(experiment_names())}")
    try:
        return ExperimentConfig.model_validate(_read_yaml("configs", f"{name}.yaml"))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"experiment config {name}.yaml: {where}: {first['msg']}") from None


def load_table(filename: str) -> tuple[list[float], dict[str, PublishedRow]]:
    """The published table: the ε grid as printed and the rows by name.

    Args:
        filename: a file in the packaged ``tables/`` folder (an experiment's ``table``, e.g.
            ``moon.yaml``); ConfigError if there is none.

    Returns:
        ``(eps, rows)``: the paper's ε values, in the paper's units, and each row's FGSM
        accuracies and R&G score by row name.
    """
    data = _read_yaml("tables", filename)
    rows = {name: PublishedRow.model_validate(row) for name, row in data["rows"].items()}
    return [float(e) for e in data["eps"]], rows


def load_claims(filename: str) -> PublishedClaims | None:
    """The paper's claims about the table's experiment (its ``claims`` entry), if it states any."""
    claims = _read_yaml("tables", filename).get("claims")
    return None if claims is None else PublishedClaims.model_validate(claims)
