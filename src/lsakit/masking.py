"""Gradient-masking checks: signs that an evaluation overestimates robustness.

A model can look robust because the attacks fail, not because it is: its input gradients are zero,
NaN or useless (shattered or obfuscated gradients, Athalye, Carlini & Wagner, ICML 2018), or it is
randomized and a single gradient sample misleads. Carlini et al. (2019, "On evaluating adversarial
robustness", Sec. 5) and AutoAttack (Croce & Hein 2020, ``autoattack/checks.py``) list symptoms
that are cheap to test. Each check returns a :class:`~lsakit.suite.CheckOutcome` with the evidence,
so a warning says what was measured, not only that something is wrong:

``logits``        the outputs look like probabilities (rows in [0, 1] summing to 1): attacks on a
                  softmax output see vanishing gradients — give the model's logits.
``determinism``   two forward passes on the same batch agree; if not the model is randomized and
                  only an EOT attack (``--suite rand``) is meaningful.
``gradients``     the input gradient of the margin z_y − max_{j≠y} z_j is finite and non-zero on
                  every correctly classified sample. The margin, not cross-entropy: a confident
                  model's cross-entropy gradient underflows to exactly 0 in float32 without any
                  masking (AutoAttack checks the cross-entropy gradient and then warns on such
                  models), while the margin's gradient is zero only where the logits are locally
                  constant in x — a non-differentiable input step such as 8-bit rounding.
``eps-growth``    robust accuracy under PGD falls to ~0 as ε grows (ε, 2ε, 4ε, … up to 1, where the
                  ball holds every image): an attack that cannot fool the model with an unbounded
                  budget is not finding its gradients (Carlini et al. 2019, Sec. 5.2).
``black-box``     Square (black-box, scores only) must not fool more than 0.2 % of the test points
                  that the white-box attacks of the suite left robust (AutoAttack's
                  ``check_square_sr`` tolerance): if it does, the gradients mislead.

The checks run on a small sample (the first ``n`` correctly classified test points) and cost a few
PGD runs; they warn, they never change a number.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lsakit._checks import check_inputs, check_labels, check_nonnegative
from lsakit._outputs import OutputSelector, select_logits
from lsakit._progress import Progress
from lsakit._torch import eval_mode, model_device
from lsakit.domain import current_domain
from lsakit.perturb.pgd import PGD
from lsakit.suite import BLACK_BOX, CheckOutcome, SuiteResult
from lsakit.validate import positive_int

__all__ = [
    "BLACK_BOX_TOLERANCE",
    "EPS_GROWTH_TOLERANCE",
    "UNBOUNDED_DOUBLINGS",
    "check_black_box",
    "check_determinism",
    "check_eps_growth",
    "check_gradients",
    "check_logits",
    "growth_grid",
    "margin_gradients",
    "masking_checks",
]

#: Largest accuracy at the biggest ε of the growth check that still counts as "~0".
EPS_GROWTH_TOLERANCE = 0.01
#: AutoAttack's tolerance for Square improving on the white-box attacks (a fraction of n).
BLACK_BOX_TOLERANCE = 0.002
#: PGD of the growth check: steps, step size as a multiple of ε / steps.
GROWTH_STEPS, GROWTH_STEP_FACTOR = 20, 2.5


def _logits(model: nn.Module, x: Tensor, output: OutputSelector) -> Tensor:
    with eval_mode(model), torch.no_grad():
        return select_logits(model(x.to(model_device(model))), output).cpu()


def check_logits(model: nn.Module, x: Tensor, output: OutputSelector = None) -> CheckOutcome:
    """Do the outputs look like probabilities instead of logits?

    Args:
        model: the classifier (run once in eval mode, without gradients).
        x: a batch of inputs ``(N, …)``, moved to the model's device.
        output: where the logits are in the model's output (see
            :func:`~lsakit._outputs.select_logits`); ``None`` for a tensor, a tuple's first element
            or a dict's ``"logits"``.

    Returns:
        The ``logits`` outcome: ``"warn"`` when every output lies in [0, 1] and every row sums
        to 1 (within 1e-4), else ``"pass"``.
    """
    z = _logits(model, x, output)
    rows = z.sum(dim=1)
    probabilities = bool(
        (z >= 0).all() and (z <= 1).all() and torch.allclose(rows, torch.ones_like(rows), atol=1e-4)
    )
    if probabilities:
        return CheckOutcome(
            name="logits",
            status="warn",
            evidence="every output row lies in [0, 1] and sums to 1: the model returns probabilities",
            advice="remove the final softmax (attacks need logits; softmax gradients vanish)",
        )
    return CheckOutcome(name="logits", status="pass", evidence="outputs are not probabilities")


def check_determinism(
    model: nn.Module, x: Tensor, output: OutputSelector = None, *, randomized_suite: bool = False
) -> CheckOutcome:
    """Do two forward passes on the same batch give the same logits (up to float noise)?

    Args:
        model: the classifier (run twice in eval mode, without gradients).
        x: a batch of inputs ``(N, …)``, moved to the model's device.
        output: where the logits are in the model's output (see
            :func:`~lsakit._outputs.select_logits`); ``None`` for a tensor, a tuple's first element
            or a dict's ``"logits"``.
        randomized_suite: whether the model is evaluated with the rand suite (EOT attacks); a
            randomized model then passes.

    Returns:
        The ``determinism`` outcome: ``"pass"`` when the passes agree within
        1e-5·(1 + the largest absolute logit) or ``randomized_suite`` is set, else ``"warn"``.
    """
    first, second = _logits(model, x, output), _logits(model, x, output)
    difference = float((first - second).abs().max())
    tolerance = 1e-5 * (1.0 + float(first.abs().max()))
    if difference <= tolerance:
        return CheckOutcome(
            name="determinism",
            status="pass",
            evidence=f"two forward passes agree (max |Δlogit| = {difference:.2g})",
        )
    if randomized_suite:
        return CheckOutcome(
            name="determinism",
            status="pass",
            evidence=f"the model is randomized (max |Δlogit| = {difference:.3g}); the rand suite "
            "averages its gradients over the randomness (EOT)",
        )
    return CheckOutcome(
        name="determinism",
        status="warn",
        evidence=f"two forward passes on the same inputs differ (max |Δlogit| = {difference:.3g}): "
        "the model is randomized",
        advice="evaluate it with --suite rand (EOT attacks); single-sample gradients mislead",
    )


def margin_gradients(
    model: nn.Module, x: Tensor, y: Tensor, output: OutputSelector = None
) -> Tensor:
    """∇ₓ (z_y − max_{j≠y} z_j) per sample, (N, …), in eval mode; parameters' .grad untouched.

    Args:
        model: the classifier.
        x: the inputs ``(N, …)``; a detached copy on the model's device is differentiated.
        y: the true labels ``(N,)``.
        output: where the logits are in the model's output (see
            :func:`~lsakit._outputs.select_logits`); ``None`` for a tensor, a tuple's first element
            or a dict's ``"logits"``.

    Returns:
        The gradient of each sample's margin, shaped like ``x``, on the CPU; zeros (on ``x``'s
        device) when the output does not depend differentiably on the input.
    """
    device = model_device(model)
    x_in = x.detach().to(device).requires_grad_(True)
    labels = y.to(device)
    with eval_mode(model), torch.enable_grad():
        z = select_logits(model(x_in), output)
        z_y = z.gather(1, labels[:, None]).squeeze(1)
        others = z.scatter(1, labels[:, None], -torch.inf)
        margin = z_y - others.max(dim=1).values
        if not margin.requires_grad:
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(margin.sum(), x_in, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.detach().cpu()


def check_gradients(
    model: nn.Module, x: Tensor, y: Tensor, output: OutputSelector = None
) -> CheckOutcome:
    """Are the input gradients of the margin finite and non-zero on every sample?

    Args:
        model: the classifier.
        x: correctly classified inputs ``(N, …)``.
        y: their labels ``(N,)``.
        output: where the logits are in the model's output (see
            :func:`~lsakit._outputs.select_logits`); ``None`` for a tensor, a tuple's first element
            or a dict's ``"logits"``.

    Returns:
        The ``gradients`` outcome: ``"warn"`` with the counts when some sample's gradient
        (:func:`margin_gradients`) is all zero or not finite, else ``"pass"`` with the median
        L1 norm.
    """
    grad = margin_gradients(model, x, y, output).flatten(1)
    n = grad.shape[0]
    non_finite = int((~torch.isfinite(grad)).any(dim=1).sum())
    zero = int((grad == 0).all(dim=1).sum())
    if non_finite or zero:
        parts = []
        if zero:
            parts.append(f"{zero} of {n} samples have an all-zero input gradient")
        if non_finite:
            parts.append(f"{non_finite} of {n} have NaN/inf input gradients")
        return CheckOutcome(
            name="gradients",
            status="warn",
            evidence="; ".join(parts) + " (margin loss)",
            advice="a non-differentiable input step (rounding, quantization, thresholding) or an "
            "unstable layer masks the gradients: gradient attacks cannot be trusted here — "
            "rely on the black-box Square result, or attack a differentiable approximation "
            "(BPDA, Athalye et al. 2018)",
        )
    norms = grad.abs().sum(dim=1)
    return CheckOutcome(
        name="gradients",
        status="pass",
        evidence=f"input gradients finite and non-zero on all {n} samples "
        f"(median ‖∇‖₁ = {float(norms.median()):.3g})",
    )


#: Doublings of ε tried when the input domain is unbounded (no ε reaches "every input").
UNBOUNDED_DOUBLINGS = 6


def growth_grid(eps: float, width: float = 1.0) -> list[float]:
    """ε, 2ε, 4ε, … below the domain's width, then the width (every input of the box reachable).

    For an unbounded domain (``width`` inf): ε, 2ε, …, 2⁶ε.

    Args:
        eps: ε ≥ 0, the first value.
        width: the width of the input domain (1 for [0, 1]); ``inf`` when it is unbounded.

    Returns:
        The increasing ε values. A finite width is always the last one (the only one when ε = 0
        or ε ≥ width); for an unbounded domain, :data:`UNBOUNDED_DOUBLINGS` + 1 values, or
        ``[0]`` when ε = 0.
    """
    if width == float("inf"):
        return [eps * 2**k for k in range(UNBOUNDED_DOUBLINGS + 1)] if eps > 0 else [eps]
    grid = []
    value = eps
    while 0 < value < width:
        grid.append(value)
        value *= 2
    return [*grid, width]


def check_eps_growth(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    output: OutputSelector = None,
    *,
    seed: int = 0,
    progress: bool = False,
) -> CheckOutcome:
    """Does PGD's robust accuracy fall to ~0 as ε grows to 1?

    ``x`` should hold correctly classified samples (the accuracy is over them). ``progress``
    shows a bar over the ε values (plain lines where stdout is not a terminal).

    Args:
        model: the classifier.
        x: correctly classified inputs ``(N, …)`` in the declared input domain.
        y: their labels ``(N,)``, on the CPU (they are compared with predictions there).
        eps: ε ≥ 0, the first radius of the grid (:func:`growth_grid` up to the domain's width).
        output: where the logits are in the model's output (see
            :func:`~lsakit._outputs.select_logits`); ``None`` for a tensor, a tuple's first element
            or a dict's ``"logits"``.
        seed: seed of PGD's random starts, the same at every ε.
        progress: show a progress bar over the ε values.

    Returns:
        The ``eps-growth`` outcome, with PGD-20's accuracy at each ε as evidence: ``"warn"``
        when the accuracy at the largest ε (the domain's width; 64ε when unbounded) exceeds
        :data:`EPS_GROWTH_TOLERANCE`, else ``"pass"``.
    """
    eps = check_nonnegative(eps, "eps")
    width = current_domain().width()
    grid = growth_grid(eps, width)
    accuracies = []
    with Progress(progress) as shown:
        task = shown.add_task("check eps-growth (PGD-20)", len(grid), "ε values")
        for value in grid:
            attack = PGD(
                model,
                eps=value,
                alpha=GROWTH_STEP_FACTOR * value / GROWTH_STEPS,
                steps=GROWTH_STEPS,
                seed=seed,
                output=output,
            )
            x_adv = attack(x, y)
            correct = _logits(model, x_adv, output).argmax(dim=1) == y
            accuracies.append(float(correct.float().mean()))
            shown.advance(task)
    evidence = "PGD-20 accuracy on correctly classified samples at ε = " + ", ".join(
        f"{e:g}: {100 * a:.1f}%" for e, a in zip(grid, accuracies, strict=True)
    )
    if accuracies[-1] > EPS_GROWTH_TOLERANCE:
        return CheckOutcome(
            name="eps-growth",
            status="warn",
            evidence=evidence
            + f" — still {100 * accuracies[-1]:.1f}% "
            + ("where every input is reachable" if width < float("inf") else "at 64ε"),
            advice="the attack does not follow the model's gradients (masking); do not trust "
            "gradient-based robust accuracy for this model",
        )
    return CheckOutcome(name="eps-growth", status="pass", evidence=evidence)


def check_black_box(result: SuiteResult) -> CheckOutcome:
    """Did a black-box attack fool samples that every white-box attack of the suite left robust?

    Args:
        result: the result of a suite run (:func:`~lsakit.suite.run_suite`).

    Returns:
        The ``black-box`` outcome: ``"skip"`` unless the suite ran both black-box and white-box
        attacks; ``"warn"`` when the black-box attacks fooled more than
        :data:`BLACK_BOX_TOLERANCE` of the suite's examples; else ``"pass"``.
    """
    ran = [a for a in result.attacks if a.skipped is None]
    black = [a for a in ran if a.label in BLACK_BOX]
    white = [a for a in ran if a.label not in BLACK_BOX]
    if not black or not white:
        return CheckOutcome(
            name="black-box",
            status="skip",
            evidence=f"the {result.suite} suite does not run both black-box and white-box attacks",
        )
    fooled = sum(a.fooled for a in black)
    share = fooled / result.n_examples
    white_accuracy = min(a.robust_accuracy for a in white)
    evidence = (
        f"{' + '.join(a.label for a in black)} fooled {fooled} of the points "
        f"{', '.join(a.label for a in white)} left robust ({100 * share:.2f}% of "
        f"{result.n_examples}; robust accuracy {100 * white_accuracy:.2f}% → "
        f"{100 * result.robust_accuracy:.2f}%)"
    )
    if share > BLACK_BOX_TOLERANCE:
        return CheckOutcome(
            name="black-box",
            status="warn",
            evidence=evidence,
            advice="a black-box attack beating the gradient attacks is a sign of gradient masking; "
            "run Square with more queries and consider an adaptive attack",
        )
    return CheckOutcome(name="black-box", status="pass", evidence=evidence)


def masking_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    suite_result: SuiteResult | None = None,
    n: int = 256,
    output: OutputSelector = None,
    seed: int = 0,
    progress: bool = False,
) -> list[CheckOutcome]:
    """All the checks on the first ``n`` correctly classified points of ``(x, y)``.

    ``suite_result`` adds the black-box check (and, for the rand suite, accepts randomness).
    ``progress`` shows the progress of the ε-growth check, the one that takes time.

    Args:
        model: the classifier.
        x: the test inputs ``(N, …)`` in the declared input domain.
        y: their labels ``(N,)``, on the CPU (they are compared with predictions there).
        eps: ε ≥ 0 of the evaluation, the first radius of the ε-growth check.
        suite_result: the suite's result on the same ``(x, y)``, or ``None``. When its
            ``fooled_by`` has one entry per sample of ``x``, it decides which are correctly
            classified (no forward pass); it adds the black-box check, and a rand-suite result
            accepts a randomized model.
        n: how many points (≥ 1): the logits and determinism checks use the first ``n`` of
            ``x``, the gradient and ε-growth checks the first ``n`` correctly classified ones.
        output: where the logits are in the model's output (see
            :func:`~lsakit._outputs.select_logits`); ``None`` for a tensor, a tuple's first element
            or a dict's ``"logits"``.
        seed: seed of the ε-growth check's PGD random starts.
        progress: show the progress of the ε-growth check.

    Returns:
        The outcomes in order: ``logits``, ``determinism``, then ``gradients`` and
        ``eps-growth`` (a single skipped ``gradients`` outcome when no point is correctly
        classified), then ``black-box`` when ``suite_result`` is given.
    """
    x = check_inputs(x, "x")
    y = check_labels(y, x.shape[0], "y")
    n = positive_int(n, "n")
    if suite_result is not None and len(suite_result.fooled_by) == x.shape[0]:
        correct = torch.tensor(suite_result.fooled_by) != 0
    else:
        correct = _logits(model, x, output).argmax(dim=1) == y
    keep = correct.nonzero().squeeze(1)[:n]
    outcomes = [
        check_logits(model, x[:n], output),
        check_determinism(
            model,
            x[:n],
            output,
            randomized_suite=suite_result is not None and suite_result.suite == "rand",
        ),
    ]
    if keep.numel() == 0:
        outcomes.append(
            CheckOutcome(
                name="gradients",
                status="skip",
                evidence="no correctly classified sample to check",
            )
        )
    else:
        xs, ys = x[keep], y[keep]
        outcomes.append(check_gradients(model, xs, ys, output))
        outcomes.append(check_eps_growth(model, xs, ys, eps, output, seed=seed, progress=progress))
    if suite_result is not None:
        outcomes.append(check_black_box(suite_result))
    return outcomes
