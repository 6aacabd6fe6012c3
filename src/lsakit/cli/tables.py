"""The tables the commands print (rich), one function per result type."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from lsakit.cli._app import err, out


def print_lsa(result: Any, mvl: list[Any]) -> None:
    """The LSA table: each layer's measure per perturbation, the MVL marked, μ, σ, accuracy."""
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
    table.add_row("μ", "", *[fmt(p.mu) for p in result.perturbations])
    table.add_row("σ", "", *[fmt(p.sigma) for p in result.perturbations])
    table.add_row(
        "acc",
        f"clean {result.clean_accuracy:.3f}",
        *[fmt(p.accuracy) for p in result.perturbations],
    )
    out.print(table)


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def print_evaluation(result: Any, model_name: str, dataset: str) -> None:
    """The paper's protocol: FGSM accuracy per ε, R&G, then each attack."""
    table = Table(title=f"{model_name} on {dataset} ({result.n_samples} test samples)")
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


def print_suite(result: Any, suite: str, model_name: str, dataset: str, eps: float) -> None:
    """An attack suite's table, the leaderboard beside it, then the gradient-masking checks."""
    table = Table(title=f"{suite} suite: {model_name} on {dataset}, ε = {eps:g}")
    for column in ("attack", "attacked", "robust accuracy %", "seconds"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for row in result.table_rows():
        table.add_row(*row)
    out.print(table)
    published = result.meta.get("leaderboard")
    if published is not None:
        from lsakit.models.robustbench import LeaderboardEntry

        print_leaderboard(LeaderboardEntry(**published), result, eps)
    for outcome in result.checks:
        if outcome.status == "warn":
            err.print(
                f"[yellow]warning[/yellow] (gradient masking? {outcome.name}): "
                f"{outcome.evidence}. {outcome.advice}",
                highlight=False,
            )
        else:
            out.print(f"check {outcome.name}: {outcome.status} — {outcome.evidence}")


def print_leaderboard(published: Any, result: Any, eps: float) -> None:
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


def print_reproduction(result: Any) -> None:
    """A reproduction: the normal model's LSA, the table beside the paper's, the errors."""
    from lsakit.experiments.results import mean_std

    lsa = Table(title="LSA of the normally trained model: relative error per layer")
    lsa.add_column("layer")
    for name in result.normal_lsa:
        lsa.add_column(name, justify="right")
    for i, label in enumerate(result.layer_labels):
        marked = f"[bold red]{label}*[/]" if label in result.mvl else label
        lsa.add_row(marked, *[fmt(values[i]) for values in result.normal_lsa.values()])
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
            *[fmt(v) for v in row.relative_errors_mean],
        )
    out.print(errors)
    out.print(f"MVL of the normal model (η = {result.eta:g}): {', '.join(result.mvl) or 'none'}")


def print_claims(name: str, results: dict[str, Any]) -> None:
    """Which of the paper's claims hold under which protocol, one table per experiment."""
    from lsakit.report.sensitivity import claims

    table = Table(title=f"{name}: the paper's claims under each protocol")
    for column in ("claim", "paper", *results):
        table.add_column(column)
    for claim in claims(results):
        table.add_row(claim.name, claim.paper, *(claim.verdicts[p].text() for p in results))
    out.print(table)
