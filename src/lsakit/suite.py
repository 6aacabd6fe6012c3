"""The standard attack suite: AutoAttack's protocol, per-sample worst case, resumable.

Croce & Hein (ICML 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", Sec. 5) evaluate a model with several complementary attacks run
in sequence, each on the samples that every earlier attack left correctly classified. A test point
counts as robust only if it survives all of them — the per-sample worst case, never an average.

``standard`` (AutoAttack's "standard" version for L∞; ``fra31/auto-attack``, ``autoattack.py``):

1. APGD-CE  — :class:`~lsakit.perturb.APGD`, cross-entropy, 100 iterations, 1 run;
2. APGD-T   — :class:`~lsakit.perturb.APGDT`, targeted DLR, top-9 targets, 100 iterations each;
3. FAB-T    — :class:`~lsakit.perturb.FABT`, top-9 targets, 100 iterations each;
4. Square   — :class:`~lsakit.perturb.Square`, p_init 0.8, the stripe start + 5000 updates
   (``queries=5001``), the schedule of p not rescaled (``resc_schedule=False``), as
   AutoAttack builds it (black-box).

``rand`` (AutoAttack's "rand" version, for randomized models): APGD-CE and APGD-DLR, each with
EOT over 20 draws of the model's randomness per gradient (:class:`~lsakit.perturb.EOTAPGD`).

Choices where AutoAttack is silent or does otherwise, documented here once (each attack's own
deviations from its reference are listed in its module; the ones that can move a suite number are
APGD's first-step checkpoint test, Square's per-sample squares and FAB-T's and APGD-T's cap of
the targets at C − 1):

* Attacks that need more classes than the model has are skipped and say so in the result
  (APGD-T's targeted DLR needs 4, APGD-DLR 3); AutoAttack would fail on them.
* Randomness is reproducible and resumable: every batch of every attack gets its own seed, derived
  from ``seed``, the attack's position and the batch's position. An interrupted evaluation resumed
  from its state file therefore gives exactly the numbers of an uninterrupted one (AutoAttack's
  ``state_path`` resumes per attack and re-seeds the global generator).
* The state file is written atomically after every batch (AutoAttack: after every attack), so at
  most one batch of work is lost. It records the settings and fingerprints of the model and the
  data; resuming with anything different is refused rather than silently mixed.
* The default batch is 256 samples (AutoAttack's ``bs=250``); the batch decides which samples
  share a random stream, so per-sample results depend on it, and ``batch_size=250`` gives
  AutoAttack's batches.
* AutoAttack's sanity checks (``checks.py``) run inside ``run_standard_evaluation``; here the
  gradient-masking checks (:mod:`lsakit.masking`) are a separate step after the suite, and
  ``run_suite`` runs none.
* Every adversarial point is checked to lie in B∞(x, ε) ∩ D (D the declared input domain, [0, 1]ᵈ by
  default) before it may count; a point
  outside is a bug in the attack and stops the evaluation (AutoAttack only warns).

Example::

    >>> result = run_suite(model, x_test[:1000], y_test[:1000], eps=0.3, state_path="suite.state")
    >>> result.robust_accuracy, [(a.label, a.robust_accuracy) for a in result.attacks]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from lsakit import __version__
from lsakit._checks import check_inputs, check_labels, check_nonnegative
from lsakit._frozen import FrozenModel
from lsakit._html import block, plural, table
from lsakit._outputs import OutputSelector, select_logits
from lsakit._progress import progress_bar
from lsakit._results import JsonResult
from lsakit._torch import eval_mode, fingerprint, model_device, model_fingerprint
from lsakit.domain import current_domain
from lsakit.errors import ConfigError, InputError, LsakitError
from lsakit.perturb.apgd import APGD
from lsakit.perturb.apgd_targeted import APGDT
from lsakit.perturb.base import Attack
from lsakit.perturb.eot import EOTAPGD
from lsakit.perturb.fab import FABT
from lsakit.perturb.square import Square
from lsakit.validate import positive_int

__all__ = [
    "SUITES",
    "CheckOutcome",
    "SuiteAttack",
    "SuiteAttackResult",
    "SuiteResult",
    "run_suite",
    "suite_attacks",
]

#: ``fooled_by`` value of a sample that survived every attack run so far.
ROBUST = -1
#: ``fooled_by`` value of a sample misclassified on its clean input (never attacked).
CLEAN_MISTAKE = 0
#: Slack of the ε-ball check, for float rounding in x + δ.
_BALL_TOLERANCE = 1e-6

#: Builds one attack: ``(model, eps, seed, output) -> Attack``.
AttackFactory = Callable[[nn.Module, float, int, OutputSelector], Attack]


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite: its label, how to build it, and how many classes it needs."""

    label: str
    build: AttackFactory
    min_classes: int = 2


SUITES: dict[str, tuple[SuiteAttack, ...]] = {
    "standard": (
        SuiteAttack(
            "APGD-CE",
            lambda m, e, s, o: APGD(m, eps=e, steps=100, loss="ce", restarts=1, seed=s, output=o),
        ),
        SuiteAttack(
            "APGD-T",
            lambda m, e, s, o: APGDT(
                m, eps=e, steps=100, n_target_classes=9, restarts=1, seed=s, output=o
            ),
            min_classes=4,
        ),
        SuiteAttack(
            "FAB-T",
            lambda m, e, s, o: FABT(
                m, eps=e, steps=100, n_target_classes=9, restarts=1, seed=s, output=o
            ),
        ),
        SuiteAttack(
            "Square",
            lambda m, e, s, o: Square(
                m, eps=e, queries=5001, p_init=0.8, rescale_schedule=False, seed=s, output=o
            ),
        ),
    ),
    "rand": (
        SuiteAttack(
            "EOT-APGD-CE",
            lambda m, e, s, o: EOTAPGD(
                m, eps=e, steps=100, samples=20, loss="ce", seed=s, output=o
            ),
        ),
        SuiteAttack(
            "EOT-APGD-DLR",
            lambda m, e, s, o: EOTAPGD(
                m, eps=e, steps=100, samples=20, loss="dlr", seed=s, output=o
            ),
            min_classes=3,
        ),
    ),
}

#: The black-box attacks of the suites (for the masking check "black-box must not beat white-box").
BLACK_BOX = frozenset({"Square"})


def suite_attacks(suite: str) -> tuple[SuiteAttack, ...]:
    """The attacks of ``suite``; ConfigError naming the suites for an unknown one.

    Args:
        suite: the suite's name, a key of :data:`SUITES` (``"standard"`` or ``"rand"``).

    Returns:
        The suite's attacks, in the order they run.
    """
    try:
        return SUITES[suite]
    except KeyError:
        raise ConfigError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}") from None


# --------------------------------------------------------------------------------------------
# Results and state
# --------------------------------------------------------------------------------------------


class SuiteAttackResult(FrozenModel):
    """One attack's share of the suite."""

    label: str
    params: dict[str, Any]
    #: samples it attacked (those every earlier attack left correctly classified)
    attacked: int = Field(ge=0)
    #: of those, how many it misclassified
    fooled: int = Field(ge=0)
    #: robust accuracy over all n examples after this attack (worst case so far)
    robust_accuracy: float = Field(ge=0, le=1)
    seconds: float = Field(ge=0)
    #: why the attack did not run (e.g. too few classes); None when it ran
    skipped: str | None = None


class CheckOutcome(FrozenModel):
    """A gradient-masking check (:mod:`lsakit.masking`): its verdict and the evidence."""

    name: str
    status: str = Field(pattern="^(pass|warn|skip)$")
    evidence: str
    advice: str = ""


class SuiteResult(JsonResult):
    """The outcome of :func:`run_suite` (``suite.json``)."""

    kind: ClassVar[str] = "a suite result"
    rewrite: ClassVar[str] = "re-run `lsakit evaluate --suite …` to rewrite it"

    format: int = 1
    lsakit_version: str = __version__
    suite: str
    eps: float = Field(ge=0)
    n_examples: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    seed: int
    clean_accuracy: float = Field(ge=0, le=1)
    attacks: list[SuiteAttackResult]
    robust_accuracy: float = Field(ge=0, le=1)
    #: per sample: -1 robust, 0 misclassified clean, k ≥ 1 fooled by the k-th attack
    fooled_by: list[int]
    checks: list[CheckOutcome] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)

    def table_rows(self) -> list[tuple[str, str, str, str]]:
        """(attack, attacked, robust accuracy %, seconds) rows for printing.

        Returns:
            String rows: clean first (the number of examples and the clean accuracy), then one
            per attack (a skipped one says why), then the suite's worst-case robust accuracy.
            Percentages with two decimals, seconds with one.
        """
        rows = [("clean", str(self.n_examples), f"{100 * self.clean_accuracy:.2f}", "")]
        for a in self.attacks:
            if a.skipped:
                rows.append((a.label, "—", f"skipped: {a.skipped}", ""))
            else:
                rows.append(
                    (a.label, str(a.attacked), f"{100 * a.robust_accuracy:.2f}", f"{a.seconds:.1f}")
                )
        rows.append(
            (f"{self.suite} suite (worst case)", "", f"{100 * self.robust_accuracy:.2f}", "")
        )
        return rows

    def __repr__(self) -> str:
        """Returns one line: the suite, ε, examples, clean and robust accuracy, the checks."""
        ran = sum(1 for a in self.attacks if not a.skipped)
        checks = ", ".join(f"{c.name} {c.status}" for c in self.checks)
        return (
            f"SuiteResult(suite={self.suite!r}, ε={self.eps:g}, "
            f"{plural(self.n_examples, 'example')}: clean accuracy {self.clean_accuracy:.3f}, "
            f"robust accuracy {self.robust_accuracy:.3f} after {plural(ran, 'attack')}"
            + (f"; checks: {checks})" if checks else ")")
        )

    def _repr_html_(self) -> str:
        """Returns Jupyter's display: the table of :meth:`table_rows`, then the checks' table."""
        header = ("attack", "attacked", "robust accuracy %", "seconds")
        parts = [table(header, self.table_rows(), caption=f"{self.suite} suite, ε = {self.eps:g}")]
        if self.checks:
            rows = [(c.name, c.status, c.evidence, c.advice) for c in self.checks]
            warned = [i for i, c in enumerate(self.checks) if c.status == "warn"]
            parts.append(
                table(("check", "status", "evidence", "advice"), rows,
                      caption="gradient-masking checks", marked=warned, text_columns=4)
            )  # fmt: skip
        return block(*parts)


class SuiteState(JsonResult):
    """The resumable state of an evaluation (``--state``), rewritten after every batch."""

    kind: ClassVar[str] = "a suite state file"
    rewrite: ClassVar[str] = "delete it to start the evaluation afresh"

    format: int = 1
    settings: dict[str, Any]
    fooled_by: list[int]
    #: index of the attack in progress (len(attacks) once finished)
    attack: int = Field(ge=0)
    #: samples of that attack's targets already attacked
    done: int = Field(ge=0)
    seconds: list[float]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def batch_seed(seed: int, attack_index: int, start: int) -> int:
    """The seed of one batch: a function of the run's seed, the attack and the batch position."""
    return (seed * 1_000_003 + attack_index * 10_007 + start) % 2**63


def _logits(model: nn.Module, x: Tensor, output: OutputSelector, batch_size: int) -> Tensor:
    device = model_device(model)
    chunks = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits = select_logits(model(x[start : start + batch_size].to(device)), output)
            if logits.dim() != 2 or logits.shape[0] != min(batch_size, x.shape[0] - start):
                raise InputError(
                    f"the model's logits have shape {tuple(logits.shape)}; expected (N, classes) "
                    "— fix output= or the model's head"
                )
            chunks.append(logits.cpu())
    return torch.cat(chunks)


def _check_in_ball(label: str, x_adv: Tensor, x: Tensor, eps: float) -> None:
    distance = float((x_adv - x).abs().max()) if x.numel() else 0.0
    domain = current_domain()
    if distance > eps + _BALL_TOLERANCE or not domain.contains(x_adv):
        raise LsakitError(
            f"{label} returned a point outside B∞(x, {eps:g}) ∩ {domain.describe()} (distance "
            f"{distance:.6g}); this is a bug in the attack — please report it"
        )


def run_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    suite: str | Sequence[SuiteAttack] = "standard",
    batch_size: int = 256,
    seed: int = 0,
    state_path: str | Path | None = None,
    output: OutputSelector = None,
    progress: bool = False,
    meta: dict[str, Any] | None = None,
    on_batch: Callable[[str, int, int], None] | None = None,
) -> SuiteResult:
    """Run a suite on ``(x, y)`` with the per-sample worst case; see the module docstring.

    Args:
        model: the classifier (its device is used; eval mode, restored afterwards).
        x, y: the test points (N, …) in [0, 1] and their labels (N,), e.g. the first
            ``--n-examples`` of the test set. They stay where they are; batches move to the model.
        eps: the L∞ budget ε.
        suite: ``"standard"`` or ``"rand"`` (:data:`SUITES`), or a sequence of
            :class:`SuiteAttack` (recorded as ``"custom"``, like AutoAttack's custom version).
        batch_size: samples per attack call.
        seed: the base of every batch's seed (:func:`batch_seed`).
        state_path: a file to resume from if it exists, rewritten after every batch; ``None``
            keeps no state.
        output: where the logits are in the model's output.
        progress: show a progress bar per attack.
        meta: free-form provenance stored in the result.
        on_batch: called as ``on_batch(label, done, total)`` after every batch, once its result is
            in the state file (an exception raised there interrupts the run like Ctrl-C would).

    Returns:
        The :class:`SuiteResult`; the state file, if any, then records the finished run.
    """
    if isinstance(suite, str):
        suite_name, attacks = suite, suite_attacks(suite)
    else:
        suite_name, attacks = "custom", tuple(suite)
        labels = [a.label for a in attacks]
        if not attacks or len(set(labels)) != len(labels):
            raise ConfigError(f"a custom suite needs attacks with distinct labels, got {labels}")
    x = check_inputs(x, "x")
    y = check_labels(y, x.shape[0], "y")
    eps = check_nonnegative(eps, "eps")
    batch_size = positive_int(batch_size, "batch_size")
    n = x.shape[0]
    if n == 0:
        raise InputError("the suite needs at least one test point; x is empty")

    clean_logits = _logits(model, x, output, batch_size)
    num_classes = clean_logits.shape[1]
    check_labels(y, n, "y", num_classes=num_classes)
    probe_model = nn.Identity()
    settings = {
        "suite": suite_name,
        "eps": eps,
        "n_examples": n,
        "batch_size": batch_size,
        "seed": seed,
        "attacks": {a.label: _params(a.build(probe_model, eps, 0, output)) for a in attacks},
        "model": model_fingerprint(model),
        "data": fingerprint(x, y),
    }
    correct = clean_logits.argmax(dim=1) == y.cpu()
    state = SuiteState(
        settings=settings,
        fooled_by=torch.where(correct, ROBUST, CLEAN_MISTAKE).tolist(),
        attack=0,
        done=0,
        seconds=[0.0] * len(attacks),
    )
    path = Path(state_path) if state_path is not None else None
    if path is not None and path.exists():
        state = _resume(SuiteState.load(path), settings, path)

    fooled_by = torch.tensor(state.fooled_by, dtype=torch.int64)
    seconds = list(state.seconds)
    for index in range(state.attack, len(attacks)):
        entry = attacks[index]
        k = index + 1
        if num_classes < entry.min_classes:
            continue
        # The targets of attack k: robust before it, i.e. robust now or fooled by it already.
        targets = ((fooled_by == ROBUST) | (fooled_by == k)).nonzero().squeeze(1)
        first = state.done if index == state.attack else 0
        starts = range(first, targets.numel(), batch_size)
        with progress_bar(starts, None, progress, f"{entry.label} (ε={eps:g})") as advance:
            for start in starts:
                chunk = targets[start : start + batch_size]
                xb, yb = x[chunk], y[chunk]
                began = time.perf_counter()
                attack = entry.build(model, eps, batch_seed(seed, index, start), output)
                x_adv = attack(xb, yb)
                _check_in_ball(entry.label, x_adv.cpu(), xb.cpu(), eps)
                wrong = _logits(model, x_adv, output, batch_size).argmax(dim=1) != yb.cpu()
                fooled_by[chunk[wrong]] = k
                seconds[index] += time.perf_counter() - began
                state = state.model_copy(
                    update={
                        "fooled_by": fooled_by.tolist(),
                        "attack": index,
                        "done": start + chunk.numel(),
                        "seconds": seconds,
                    }
                )
                if path is not None:
                    state.save(path)
                advance()
                if on_batch is not None:
                    on_batch(entry.label, start + chunk.numel(), targets.numel())
        state = state.model_copy(update={"attack": index + 1, "done": 0, "seconds": seconds})
        if path is not None:
            state.save(path)

    return _result(settings, attacks, fooled_by, seconds, num_classes, meta or {})


def _params(attack: Attack) -> dict[str, Any]:
    return {k: v for k, v in attack.params().items() if k != "seed"}


def _resume(state: SuiteState, settings: dict[str, Any], path: Path) -> SuiteState:
    for key, value in settings.items():
        if state.settings.get(key) != value:
            raise ConfigError(
                f"state file {path} was written for {key} = {state.settings.get(key)!r}, not "
                f"{value!r}; give the same settings, another --state, or delete the file"
            )
    if len(state.fooled_by) != settings["n_examples"] or len(state.seconds) != len(
        settings["attacks"]
    ):
        raise ConfigError(f"state file {path} is inconsistent; delete it to start afresh")
    return state


def _result(
    settings: dict[str, Any],
    attacks: Sequence[SuiteAttack],
    fooled_by: Tensor,
    seconds: list[float],
    num_classes: int,
    meta: dict[str, Any],
) -> SuiteResult:
    n = fooled_by.numel()
    rows = []
    for index, entry in enumerate(attacks):
        k = index + 1
        survivors = int(((fooled_by == ROBUST) | (fooled_by > k)).sum())
        if num_classes < entry.min_classes:
            skipped = f"needs ≥ {entry.min_classes} classes, the model has {num_classes}"
            attacked = fooled = 0
        else:
            skipped = None
            fooled = int((fooled_by == k).sum())
            attacked = survivors + fooled
        rows.append(
            SuiteAttackResult(
                label=entry.label,
                params=settings["attacks"][entry.label],
                attacked=attacked,
                fooled=fooled,
                robust_accuracy=survivors / n,
                seconds=seconds[index],
                skipped=skipped,
            )
        )
    return SuiteResult(
        suite=settings["suite"],
        eps=settings["eps"],
        n_examples=n,
        batch_size=settings["batch_size"],
        seed=settings["seed"],
        clean_accuracy=float((fooled_by != CLEAN_MISTAKE).sum()) / n,
        attacks=rows,
        robust_accuracy=float((fooled_by == ROBUST).sum()) / n,
        fooled_by=fooled_by.tolist(),
        meta={**meta, "model_fingerprint": settings["model"], "data_fingerprint": settings["data"]},
    )
