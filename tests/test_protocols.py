"""The paper protocol's building blocks (issue 12): unclamped image data, model B with its
normalization inside, impulse noise with a named value, and the protocol-sensitivity reading."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from helpers import run_cli
from lsakit import data as datasets
from lsakit import perturb
from lsakit.domain import input_domain
from lsakit.errors import ConfigError
from lsakit.experiments.results import (
    ExperimentResult,
    PublishedClaims,
    PublishedCurve,
    PublishedRow,
    RowResult,
    RunResult,
)
from lsakit.models import MNIST_MEAN, MNIST_STD, build
from lsakit.perturb import FGSM
from lsakit.probe import default_layers
from lsakit.report.sensitivity import claims, write_sensitivity_report


def test_image_data_declare_unit_or_unbounded_domain() -> None:
    assert datasets.domain("mnist").describe() == datasets.domain("mnist", domain="unit").describe()
    assert datasets.domain("mnist", domain="unbounded").unbounded
    assert datasets.domain("cifar10", domain="UNBOUNDED").unbounded
    with pytest.raises(ConfigError, match=r"must be 'unit' .* or 'unbounded'.*got '-1,1'"):
        datasets.domain("mnist", domain="-1,1")


def test_fgsm_on_pixels_in_an_unbounded_domain_moves_every_pixel_by_eps() -> None:
    torch.manual_seed(0)
    model = build("model_b").eval()
    x = torch.zeros(4, 1, 28, 28)  # black: clamping to [0, 1] could only move pixels up
    y = torch.arange(4)
    with input_domain(datasets.domain("mnist", domain="unbounded")):
        free = FGSM(model, eps=0.3)(x, y)
    with input_domain(datasets.domain("mnist")):
        clamped = FGSM(model, eps=0.3)(x, y)
    moved = free != 0
    torch.testing.assert_close(free[moved].abs(), torch.full_like(free[moved], 0.3))
    assert bool((free < 0).any())  # unclamped: below 0
    assert float(clamped.min()) == 0.0 and torch.isin(clamped, torch.tensor([0.0, 0.3])).all()


def test_model_b_normalize_puts_mnist_statistics_first_and_keeps_its_layers() -> None:
    plain, normalized = build("model_b"), build("model_b", normalize=True)
    assert next(iter(normalized.named_children()))[0] == "normalize"
    assert sum(p.numel() for p in normalized.parameters()) == 123_222  # buffers only
    x = torch.full((1, 1, 28, 28), MNIST_MEAN[0] + MNIST_STD[0])
    assert float(normalized.normalize(x).mean()) == pytest.approx(1.0)
    example = torch.zeros(1, 1, 28, 28)
    names = [layer.name for layer in default_layers(normalized, example)]
    assert names == [layer.name for layer in default_layers(plain, example)] == [
        "relu1", "relu2", "relu3", "relu4"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="one-channel statistics; in_channels is 3"):
        build("model_b", normalize=True, in_channels=3)


def test_pepper_and_salt_write_a_named_value_in_any_domain() -> None:
    x = torch.full((64, 1, 8, 8), 0.5)
    with input_domain(None):
        with pytest.raises(ConfigError, match="bounded input domain"):
            perturb.from_spec("pepper=0.3", None)(x)
        out = perturb.from_spec("pepper=0.3,value=0,seed=1", None)(x)
        salted = perturb.from_spec("salt=0.1,value=1,seed=1", None)(x)
    assert set(out.unique().tolist()) == {0.0, 0.5}
    assert float((out == 0).float().mean()) == pytest.approx(0.3, abs=0.03)
    assert set(salted.unique().tolist()) == {0.5, 1.0}
    # in [0, 1] the named value equals the bound: the same draws give the same result
    same = perturb.from_spec("pepper=0.3,seed=1", None)(x)
    torch.testing.assert_close(same, out)


def _result(
    rows: dict[str, tuple[list[float], list[float]]], normal_curve: list[float], mvl: list[str]
) -> ExperimentResult:
    """A two-base, two-proposal result with the given mean accuracies and relative errors."""
    built = []
    for name, (accuracies, errors) in rows.items():
        base = name.split("-LR-")[0] if "-LR-" in name else None
        layer = name.split("-LR-")[1] if base else None
        run = RunResult(seed=0, checkpoint="x", accuracies=accuracies, rg=sum(accuracies),
                        relative_errors=list(errors), seconds=1.0)  # fmt: skip
        built.append(RowResult(name=name, method="fgsm", base=base,
                               lr_layers=[layer] if layer else None,
                               resolved_layers=[layer] if layer else None, runs=[run],
                               published=PublishedRow(accuracies=accuracies, rg=sum(accuracies))))  # fmt: skip
    return ExperimentResult(
        experiment="moon", profile="quick", dataset="moons", model="model_a",
        eps=[0, 0.1, 0.2], eps_paper=[0, 0.1, 0.2], seeds=[0], layer_labels=["L0", "L1", "L2"],
        normal_lsa={"pgd": normal_curve}, mvl=mvl, eta=0.5, rows=built,
        settings={"lsa_attack": "pgd=0.3"}, seconds=1.0,
        published_claims=PublishedClaims(
            normal_curve=PublishedCurve(perturbation="pgd", values=[0.7, 0.8, 0.99]),
            mvl=["L2"], best_proposal="L2",
        ),
    )  # fmt: skip


def test_sensitivity_reads_each_claim_with_its_numbers(tmp_path: Path) -> None:
    e = [0.5, 0.5, 0.5]
    holds = _result(
        {
            "AT-A": ([90, 60, 40], e), "AT-B": ([90, 60, 40], e),
            "AT-A-LR-L1": ([90, 61, 41], [0.5, 0.2, 0.5]),
            "AT-A-LR-L2": ([90, 62, 45], [0.5, 0.5, 0.1]),
            "AT-B-LR-L1": ([90, 60, 40], [0.5, 0.3, 0.5]),
            "AT-B-LR-L2": ([90, 65, 41], [0.5, 0.5, 0.2]),
        },
        [0.3, 0.5, 0.9], ["L2"],
    )  # fmt: skip
    fails = _result(
        {
            "AT-A": ([90, 60, 40], e), "AT-B": ([90, 60, 40], e),
            "AT-A-LR-L1": ([90, 70, 50], [0.5, 0.6, 0.5]),
            "AT-A-LR-L2": ([90, 62, 39], [0.5, 0.5, 0.1]),
            "AT-B-LR-L1": ([90, 60, 40], [0.5, 0.3, 0.5]),
            "AT-B-LR-L2": ([90, 65, 41], [0.5, 0.5, 0.2]),
        },
        [0.3, 0.9, 0.5], ["L1"],
    )  # fmt: skip
    found = claims({"strict": holds, "paper": fails})
    assert [c.verdicts["strict"].holds for c in found] == [True, True, True, True, True]
    assert [c.verdicts["paper"].holds for c in found] == [False, False, False, False, False]
    large, best, mvl, curve, drop = found
    assert large.verdicts["strict"].evidence == "2 of 2 bases; AT-A +2.0 / +5.0; AT-B +5.0 / +1.0"
    assert large.verdicts["paper"].evidence.startswith("1 of 2 bases; AT-A +2.0 / -1.0")
    assert large.paper == "Δ at ε 0.1 and 0.2: AT-A +2.0 / +5.0; AT-B +5.0 / +1.0"
    assert best.verdicts["paper"].evidence == "1 of 2 bases (AT-A: L1; AT-B: L2)"
    assert mvl.verdicts["paper"].text() == "does not hold: L1"
    assert curve.name == "the normal model's relative error rises with depth under PGD"
    assert curve.verdicts["strict"].evidence == "0.30 / 0.50 / 0.90 (max |Δ| 0.40)"
    assert drop.verdicts["paper"].evidence.startswith("3 of 4 under pgd; AT-A-LR-L1 0.50→0.60")
    md, html = write_sensitivity_report({"strict": holds, "paper": fails}, tmp_path)
    text = md.read_text(encoding="utf-8")
    assert "strict: 5 of 5 hold; paper: 0 of 5 hold" in text
    assert "under paper" in html.read_text(encoding="utf-8")


def test_cli_protocol_all_runs_each_protocol_and_writes_the_sensitivity_report(
    moon_smoke: tuple[ExperimentResult, Path],
    moon_smoke_paper: tuple[ExperimentResult, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    # the session's two smoke runs, finished: the command reuses them (what is tested here is
    # --protocol all and its report; the runs themselves are tests/test_experiments.py's)
    for protocol, (_, shared) in (("strict", moon_smoke), ("paper", moon_smoke_paper)):
        shutil.copytree(shared / "runs", out / protocol / "runs")
    code, stdout, err = run_cli(
        ["--threads", "1", "reproduce", "moon", "--protocol", "all", "--profile", "smoke",
         "--out", str(out), "--no-report"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    strict = ExperimentResult.load(out / "strict" / "results.json")
    paper = ExperimentResult.load(out / "paper" / "results.json")
    assert (strict.protocol, paper.protocol) == ("strict", "paper")
    assert (strict.reused_runs, paper.reused_runs) == (17, 17)
    for reused, (shared, _) in ((strict, moon_smoke), (paper, moon_smoke_paper)):
        assert [r.runs[0].accuracies for r in reused.rows] == [
            r.runs[0].accuracies for r in shared.rows
        ]
    assert paper.published_claims is not None and paper.published_claims.best_proposal == "L2"
    text = (out / "sensitivity.md").read_text(encoding="utf-8")
    assert "| claim | paper | under strict | under paper |" in text
    # the table's MVL row states each protocol's own MVL list
    mvl_line = next(line for line in text.splitlines() if line.startswith("| MVL list"))
    assert ", ".join(strict.mvl) in mvl_line.split("|")[3]
    assert ", ".join(paper.mvl) in mvl_line.split("|")[4]
    assert "the paper's claims under each protocol" in stdout
    assert "Normal" in stdout and "±" not in stdout  # one seed: no "±0.0" where nothing varied
    assert f"wrote {out / 'sensitivity.md'}" in stdout.replace("\n", "")
