"""The reproduction report: loss landscapes, figures, and the Markdown/HTML report."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from torch import nn

from helpers import tiny_cnn, tiny_mlp
from lsakit import models
from lsakit.analysis import LayerInfo, LSAResult
from lsakit.checkpoint import save_checkpoint
from lsakit.errors import CheckpointError, ConfigError, InputError, ResultsError
from lsakit.experiments.results import ExperimentResult, PublishedRow, RowResult, RunResult
from lsakit.report import (
    filter_normalized_directions,
    loss_landscape,
    plot_decision_boundaries,
    plot_landscapes,
    plot_layer_curves,
    plot_relative_error_curves,
    plot_rg_bars,
    save_figure,
    write_report,
)
from lsakit.report.figures import lsa_attack_key, resolve_checkpoint
from lsakit.report.landscape import grid_coordinates

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------- loss landscape


def _images(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=generator), torch.arange(n) % 5


def test_landscape_leaves_weights_and_modes_exactly_as_they_were() -> None:
    model = tiny_cnn()
    model.train()
    model[1].eval()  # a mixed mode (frozen BN) must survive too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _images()
    loss_landscape(model, x, y, steps=3)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model[0].training and not model[1].training


def test_landscape_centre_is_the_models_own_loss_in_eval_mode() -> None:
    # The BN layer makes train-mode and eval-mode losses differ: the centre must be the eval one.
    model = tiny_cnn().train()
    x, y = _images()
    grid = loss_landscape(model, x, y, steps=5, span=0.5)
    with torch.no_grad():
        expected = float(F.cross_entropy(model.eval()(x), y))
        train_loss = float(F.cross_entropy(model.train()(x), y))
    assert grid.losses[2, 2] == expected
    assert grid.center_loss == expected
    assert train_loss != expected
    assert grid.losses.shape == grid.accuracies.shape == (5, 5)
    assert grid.n_samples == 6


def test_directions_are_filter_normalized_by_hand_on_a_linear_layer() -> None:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]))  # row norms 5 and 2
        layer.bias.copy_(torch.tensor([1.0, -1.0]))
    d1, d2 = filter_normalized_directions(layer, seed=3)
    for d in (d1, d2):
        assert torch.allclose(d["weight"].norm(dim=1), torch.tensor([5.0, 2.0]), rtol=1e-6)
        assert torch.equal(d["bias"], torch.zeros(2))
    assert not torch.allclose(d1["weight"], d2["weight"])  # two different directions


def test_conv_directions_match_each_output_channel_and_zero_bn() -> None:
    model = tiny_cnn()
    d1, _ = filter_normalized_directions(model, seed=0)
    for name, param in model.named_parameters():
        if param.dim() <= 1:  # biases and BN weight/bias: not moved ("ignore_biasbn")
            assert torch.equal(d1[name], torch.zeros_like(param)), name
        else:
            expected = param.detach().flatten(1).norm(dim=1)
            assert torch.allclose(d1[name].flatten(1).norm(dim=1), expected, rtol=1e-5), name
            assert d1[name].dtype == param.dtype


def test_grid_is_exactly_symmetric_with_zero_at_the_centre() -> None:
    for steps, span in [(3, 1.0), (21, 1.0), (11, 0.3), (51, 2.5)]:
        coords = grid_coordinates(steps, span)
        assert coords[0] == -span and coords[-1] == span
        assert np.array_equal(coords, -coords[::-1])
        assert coords[steps // 2] == 0.0
        assert np.all(np.diff(coords) > 0)


def test_each_grid_point_is_the_loss_at_theta_plus_alpha_d1_plus_beta_d2() -> None:
    # losses[i, j] ↔ (alphas[i], betas[j]): recompute two off-diagonal corners by hand.
    layer = nn.Linear(4, 3)
    x, y = torch.rand(10, 4), torch.arange(10) % 3
    grid = loss_landscape(layer, x, y, steps=5, span=0.8, seed=7)
    d1, d2 = filter_normalized_directions(layer, seed=7)
    for i, j in [(0, 4), (4, 1)]:
        a, b = grid.alphas[i], grid.betas[j]
        w = layer.weight.detach() + a * d1["weight"] + b * d2["weight"]
        expected = F.cross_entropy(x @ w.T + layer.bias.detach(), y)
        assert math.isclose(grid.losses[i, j], float(expected), rel_tol=1e-5)
    assert not math.isclose(grid.losses[0, 4], grid.losses[4, 0], rel_tol=1e-6)


def test_zero_weights_give_zero_directions_and_a_flat_landscape() -> None:
    layer = nn.Linear(2, 2)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    grid = loss_landscape(layer, torch.rand(4, 2), torch.tensor([0, 1, 0, 1]), steps=3)
    assert np.all(grid.losses == grid.losses[1, 1])
    assert math.isclose(grid.center_loss, math.log(2), rel_tol=1e-6)
    assert np.all(grid.accuracies == 0.5)  # argmax of equal logits is class 0


def test_landscape_is_seeded_and_leaves_the_global_rng_alone() -> None:
    model = tiny_mlp()
    x, y = torch.rand(8, 4), torch.arange(8) % 3
    state = torch.random.get_rng_state()
    a = loss_landscape(model, x, y, steps=3, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    b = loss_landscape(model, x, y, steps=3, seed=1)
    c = loss_landscape(model, x, y, steps=3, seed=2)
    assert np.array_equal(a.losses, b.losses)
    assert not np.array_equal(a.losses, c.losses)
    assert a.losses[1, 1] == c.losses[1, 1]  # the centre does not depend on the directions


@pytest.mark.parametrize("steps", [1, 2, 4, True, 3.0])
def test_landscape_refuses_grids_without_a_centre(steps: object) -> None:
    with pytest.raises(InputError, match="odd integer"):
        loss_landscape(tiny_mlp(), torch.rand(2, 4), torch.tensor([0, 1]), steps=steps)  # type: ignore[arg-type]


@pytest.mark.parametrize("span", [0.0, -1.0, float("inf"), float("nan")])
def test_landscape_refuses_a_bad_span(span: float) -> None:
    with pytest.raises(InputError, match="span"):
        loss_landscape(tiny_mlp(), torch.rand(2, 4), torch.tensor([0, 1]), span=span)


def test_landscape_checks_inputs() -> None:
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        loss_landscape(tiny_mlp(), torch.full((2, 4), 3.0), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- a fake reproduction

LABELS = ["L0", "L1", "L2"]
EPS_PAPER = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
EPS = [e / 2.5 for e in EPS_PAPER]
PUBLISHED = {
    "Normal": PublishedRow(accuracies=[97.07, 93.63, 82.5, 76.83, 63.79, 52.35], rg=466.17),
    "AT-FGSM": PublishedRow(accuracies=[95.86, 91.98, 87.88, 81.33, 70.54, 58.69], rg=486.28),
    "AT-FGSM-LR-L2": PublishedRow(accuracies=[93.98, 93.01, 89.12, 84.01, 75.15, 63.25], rg=498.52),
}
#: Per row: (method, base, lr_layers, first seed's accuracies, relative errors); the second seed
#: adds 2 points to every accuracy, so the mean is +1 and the sample std √2.
ROWS = {
    "Normal": ("standard", None, None, [96.0, 90.0, 80.0, 70.0, 60.0, 50.0], [0.5, 0.6, 0.9]),
    "AT-FGSM": ("fgsm", None, None, [95.0, 91.0, 86.0, 80.0, 70.0, 57.0], [0.4, 0.5, 0.7]),
    "AT-FGSM-LR-L2": (
        "fgsm",
        "AT-FGSM",
        ["L2"],
        [94.0, 92.0, 88.0, 83.0, 74.0, 61.0],
        [0.4, 0.5, 0.2],
    ),
    "AT-PGD": ("pgd", None, None, [86.0, 84.0, 81.0, 77.0, 72.0, 61.0], [0.3, 0.4, 0.6]),
}


def _save_model(path: Path, seed: int) -> str:
    torch.manual_seed(seed)
    save_checkpoint(path, models.build("model_a"), model_name="model_a", model_kwargs={})
    return str(path)


def _result(
    run_dir: Path,
    *,
    relative: bool = False,
    notes: str = "",
    seeds: tuple[int, ...] = (0, 1),
    run_seconds: float = 1.0,
    profile: dict[str, object] | None = None,
) -> ExperimentResult:
    rows = []
    for k, (name, (method, base, lr_layers, acc, errors)) in enumerate(ROWS.items()):
        runs = []
        for s in seeds:
            file = run_dir / name / f"seed{s}.safetensors"
            _save_model(file, seed=10 * k + s)
            runs.append(
                RunResult(
                    seed=s,
                    checkpoint=str(file.relative_to(run_dir)) if relative else str(file),
                    accuracies=[a + 2 * s for a in acc],
                    rg=sum(acc) + 12 * s,
                    relative_errors=list(errors),
                    seconds=run_seconds,
                )
            )
        rows.append(
            RowResult(
                name=name,
                method=method,
                base=base,
                lr_layers=lr_layers,
                resolved_layers=lr_layers,
                runs=runs,
                published=PUBLISHED.get(name),
            )
        )
    return ExperimentResult(
        experiment="moon",
        profile="quick",
        dataset="moons",
        model="model_a",
        eps=EPS,
        eps_paper=EPS_PAPER,
        seeds=list(seeds),
        layer_labels=LABELS,
        # Keyed by perturbation name, as the runner writes it; the spec is in the settings.
        normal_lsa={"gaussian": [0.05, 0.04, None], "pgd": [0.71, 0.8, 0.99]},
        mvl=["L2"],
        eta=0.5,
        rows=rows,
        settings={
            "lsa_attack": "pgd=0.3,steps=20",
            "train": {"epochs": 3, "optimizer": "adam", "lr": 0.01},
            "methods": {"pgd": {"steps": 10}},
            "profile": profile or {"notes": notes, "train": {"epochs": 2}, "test_limit": 200},
            "notes": notes,
        },
        seconds=12.0,
    )


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentResult, Path]:
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("run")
    notes = "Quick: 3 epochs instead of 100 <script>alert(1)</script> & fewer seeds."
    return _result(run_dir, notes=notes), run_dir


@pytest.fixture(scope="module")
def report(
    experiment: tuple[ExperimentResult, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path]:
    result, _ = experiment
    out = tmp_path_factory.mktemp("report")
    md, page = write_report(result, out, landscape_steps=5)
    return md, page, out


def _results_table(markdown: str) -> list[str]:
    section = markdown.split("## Results beside the paper", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_report_writes_both_documents_and_the_figures(report: tuple[Path, Path, Path]) -> None:
    md, page, out = report
    assert md == out / "report.md" and page == out / "report.html"
    assert md.is_file() and page.is_file()
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == [
        "decision_boundaries.png",
        "landscape_at-fgsm.png",  # only AT-FGSM has LR rows
        "normal_lsa.png",
        "relative_error_at-fgsm.png",
        "relative_error_at-pgd.png",
        "rg_scores.png",
    ]
    assert all((out / "figures" / n).read_bytes().startswith(PNG_MAGIC) for n in names)
    assert not list(out.rglob(".*tmp-*"))  # atomic writes leave no temporary file


def test_html_is_self_contained(report: tuple[Path, Path, Path]) -> None:
    _, page, out = report
    text = page.read_text(encoding="utf-8")
    for external in ('src="http', "href=", "<link", "<script", "url(", "@import"):
        assert external not in text
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(list((out / "figures").iterdir())) == 6

    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)


def test_results_are_escaped_in_html(report: tuple[Path, Path, Path]) -> None:
    md, page, _ = report
    text = page.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; fewer seeds" in text
    # In Markdown the note is escaped in the text; only the fenced JSON dump holds it verbatim.
    prose = re.sub(r"```json\n.*?\n```", "", md.read_text(encoding="utf-8"), flags=re.S)
    assert "<script>" not in prose
    assert "&lt;script&gt;" in prose


def test_tables_hold_our_means_the_papers_numbers_and_the_differences(
    report: tuple[Path, Path, Path],
) -> None:
    md, page, _ = report
    lines = _results_table(md.read_text(encoding="utf-8"))
    assert len(lines) - 2 == len(ROWS)  # header and separator, then one line per result row
    by_name = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert list(by_name) == list(ROWS)  # in the result's (the paper's) order
    # The headline R&G first: 479 and 491 → 485.00 ± 8.49; paper 486.28. Then ε = 0: seeds 95
    # and 97 → 96.00 ± 1.41; paper 95.86; Δ +0.14.
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert header[:5] == ["training", "R&G ours", "paper", "Δ", "ε=0 ours"]
    assert header[-3:] == ["ε=0.5 ours", "paper", "Δ"]
    fgsm = [c.strip() for c in by_name["AT-FGSM"].split("|")[1:-1]]
    assert fgsm[1:4] == ["485.00 ± 8.49", "486.28", "-1.28"]
    assert fgsm[4:7] == ["96.00 ± 1.41", "95.86", "+0.14"]
    pgd = [c.strip() for c in by_name["AT-PGD"].split("|")[1:-1]]
    assert pgd[2:4] == ["—", "—"] and pgd[5:7] == ["—", "—"]  # no published row
    html_text = page.read_text(encoding="utf-8")
    for row in PUBLISHED.values():
        for value in [*row.accuracies, row.rg]:
            assert f"{value:.2f}" in html_text
    assert '<td class="pos">+0.14</td>' in html_text
    assert "<td>96.00 ±&nbsp;1.41</td>" in html_text  # wraps before the ±, never after it
    assert re.search(
        r"<tr><th></th><th colspan=\"3\">R&amp;G</th><th colspan=\"3\">ε = 0 ", html_text
    )
    assert "ε = 0.1 (ours 0.04)" in html_text


def test_report_lists_settings_mvl_and_notes(report: tuple[Path, Path, Path]) -> None:
    md_text = report[0].read_text(encoding="utf-8")
    assert "ε grid in the units of the model's inputs: 0, 0.04, 0.08, 0.12, 0.16, 0.2" in md_text
    assert "as the paper prints it: 0, 0.1, 0.2, 0.3, 0.4, 0.5" in md_text
    assert "- Protocol: strict" in md_text  # results without a protocol ran under strict
    assert "| optimizer | adam |" in md_text
    assert "MVL list (Algorithm 1, η = 0.5" in md_text and "): L2." in md_text
    assert "| pgd | 0.710 | 0.800 | 0.990 |" in md_text
    assert "| gaussian | 0.050 | 0.040 | — |" in md_text
    assert md_text.count("Profile note: Quick: 3 epochs instead of 100") == 1
    # Training settings as this run used them: the profile's epochs, the experiment's beside it.
    assert "| epochs | 2 (quick profile; the experiment: 3) |" in md_text
    assert '| pgd | {"steps": 10} |' in md_text  # a method this run trained
    assert "| test samples | 200 |" in md_text
    # 8 runs of 1 s each; the invocation that wrote the results took 12 s.
    assert "Compute time: the 8 runs (row × seed) took 8 s (the sum" in md_text
    assert "the invocation that wrote these results took 12 s wall clock" in md_text
    assert "- Numerics: not recorded (results written before lsakit recorded them)" in md_text
    # The LR row against its base: L2's relative error 0.7 → 0.2 is a 71% drop.
    assert "L2: 0.700 → 0.200 (-71%)" in md_text
    assert "![" in md_text and "(figures/rg_scores.png)" in md_text


def test_one_seed_prints_no_spread(tmp_path: Path) -> None:
    result = _result(tmp_path / "run", seeds=(0,))
    md, page = write_report(result, tmp_path / "out", landscape_steps=0)
    md_text = md.read_text(encoding="utf-8")
    fgsm = next(line for line in _results_table(md_text) if line.startswith("| AT-FGSM |"))
    # One seed: R&G 479 and 95 at ε = 0, with nothing varied there is no "± 0.00".
    assert [c.strip() for c in fgsm.split("|")[1:-1]][1:5] == ["479.00", "486.28", "-7.28", "95.00"]
    assert "±" not in "".join(_results_table(md_text))
    assert "ours from one seed (no ±: nothing varied)" in md_text
    assert "R&G score per row (one seed)" in md_text
    assert "±&nbsp;" not in page.read_text(encoding="utf-8")


def test_settings_describe_the_profile_that_ran(tmp_path: Path) -> None:
    # A demo-like run: one base method, one proposal, one seed; reused runs of 50 s each, and a
    # re-run that took 2 s.
    result = _result(
        tmp_path / "run",
        seeds=(0,),
        run_seconds=50.0,
        profile={"seeds": [0], "base_methods": ["fgsm"], "proposals": ["L2"], "notes": "demo"},
    )
    recorded = {"mode": "portable", "mkl": "COMPATIBLE", "aten": "AVX2", "onednn": "off",
                "threads": 1, "cpu": "AMD EPYC", "torch": "2.14.1"}  # fmt: skip
    rows = [
        r.model_copy(update={"runs": [u.model_copy(update={"numerics": recorded}) for u in r.runs]})
        for r in result.rows
        if r.method in ("standard", "fgsm")
    ]
    result = result.model_copy(
        update={
            "profile": "demo",
            "rows": rows,
            "settings": {**result.settings, "description": "Table 2: every base and proposal."},
            "seconds": 2.0,
        }
    )
    md, _ = write_report(result, tmp_path / "out", landscape_steps=0)
    settings = md.read_text(encoding="utf-8").split("## Settings", 1)[1].split("\n## ", 1)[0]
    assert (
        "The demo profile runs part of the experiment: base methods fgsm; proposals L2. "
        "The whole experiment (other profiles): Table 2: every base and proposal." in settings
    )
    assert "- Rows run: 3 (Normal, AT-FGSM, AT-FGSM-LR-L2), each with 1 seed (0)" in settings
    assert "| pgd |" not in settings  # no PGD row ran: its settings are not this run's
    assert "Compute time: the 3 runs (row × seed) took 2 min 30 s" in settings
    assert "the invocation that wrote these results took 2 s wall clock" in settings
    assert (
        "- Numerics (lsakit.numerics): portable (MKL COMPATIBLE, ATen AVX2, oneDNN off), "
        "1 thread, AMD EPYC, torch 2.14.1\n" in settings
    )


def test_missing_checkpoint_fails_before_writing_and_names_the_file(tmp_path: Path) -> None:
    result = _result(tmp_path / "run")
    victim = Path(result.row("AT-FGSM-LR-L2").runs[0].checkpoint)
    victim.unlink()
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=re.escape(str(victim))):
        write_report(result, out, landscape_steps=3)
    assert not (out / "report.md").exists() and not (out / "report.html").exists()


def test_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    result = _result(tmp_path / "run")
    victim = Path(result.row("AT-FGSM").runs[0].checkpoint)
    victim.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=rf"AT-FGSM.*{re.escape(str(victim))}"):
        write_report(result, tmp_path / "out", landscape_steps=3)


def test_relative_checkpoints_resolve_against_base_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _result(run_dir, relative=True)
    run = result.row("Normal").runs[0]
    assert resolve_checkpoint(run, run_dir) == run_dir / run.checkpoint
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(run, tmp_path / "elsewhere")
    md, _ = write_report(result, run_dir, landscape_steps=0)  # base_dir defaults to out_dir
    assert md.is_file()
    assert not list((run_dir / "figures").glob("landscape_*"))  # 0 leaves landscapes out


def test_inconsistent_results_are_refused(tmp_path: Path) -> None:
    result = _result(tmp_path / "run")
    row = result.row("AT-PGD")
    broken_run = row.runs[0].model_copy(update={"accuracies": [1.0, 2.0]})
    broken_row = row.model_copy(update={"runs": [broken_run]})
    broken = result.model_copy(
        update={"rows": [r if r.name != "AT-PGD" else broken_row for r in result.rows]}
    )
    with pytest.raises(ResultsError, match=r"AT-PGD.*2 accuracies for 6"):
        write_report(broken, tmp_path / "out")
    with pytest.raises(InputError, match="landscape_steps"):
        write_report(result, tmp_path / "out", landscape_steps=4)
    assert not (tmp_path / "out").exists()
    no_runs = result.model_copy(update={"rows": [row.model_copy(update={"runs": []})]})
    with pytest.raises(ResultsError, match="no runs"):
        write_report(no_runs, tmp_path / "out")


# -------------------------------------------------------------------------------------- figures


def test_lsa_attack_key_follows_the_settings(experiment: tuple[ExperimentResult, Path]) -> None:
    result, _ = experiment
    assert lsa_attack_key(result) == "pgd"  # the spec "pgd=0.3,steps=20" names the attack
    assert lsa_attack_key(result, "gaussian") == "gaussian"
    with pytest.raises(ConfigError, match="not in the normal model's LSA"):
        lsa_attack_key(result, "fgsm")
    exact = result.model_copy(
        update={"normal_lsa": {"pgd": [0.1] * 3, "pgd=0.3,steps=20": [0.2] * 3}}
    )
    assert lsa_attack_key(exact) == "pgd=0.3,steps=20"  # an exact key wins
    unknown = result.model_copy(update={"settings": {"lsa_attack": "apgd=0.3"}})
    assert lsa_attack_key(unknown) is None  # no "before" curve rather than a wrong one
    only = unknown.model_copy(update={"normal_lsa": {"fgsm": [0.1] * 3}})
    assert lsa_attack_key(only) == "fgsm"


def test_figure_functions_return_figures_that_save_figure_writes_as_pngs(
    experiment: tuple[ExperimentResult, Path], tmp_path: Path
) -> None:
    result, _ = experiment
    curves = plot_relative_error_curves(result, group="AT-FGSM")
    bars = plot_rg_bars(result)
    assert isinstance(curves, Figure) and isinstance(bars, Figure)
    assert curves.axes[0].get_title().startswith("AT-FGSM: per-layer relative error")
    assert [t.get_text() for t in bars.axes[0].get_xticklabels()] == [r.name for r in result.rows]
    written = save_figure(bars, tmp_path / "sub" / "rg.png")  # parents made, written atomically
    assert written == tmp_path / "sub" / "rg.png"
    assert written.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in written.parent.iterdir()] == ["rg.png"]  # no temporary left
    with pytest.raises(ConfigError, match="base groups are: AT-FGSM, AT-PGD"):
        plot_relative_error_curves(result, group="AT-TRADE")
    with pytest.raises(InputError, match="at least one"):
        plot_landscapes({})


def test_the_landscapes_are_one_figure_with_a_panel_per_variant() -> None:
    x, y = _images()
    grids = {name: loss_landscape(tiny_cnn(seed), x, y, steps=3) for seed, name in enumerate("ab")}
    fig = plot_landscapes(grids, title="two models")
    panels = [ax for ax in fig.axes if ax.get_title()]  # the colour bar has no title
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["a", "b"]
    assert fig.get_suptitle() == "two models"


def test_the_layer_curves_draw_a_line_per_perturbation_and_shade_the_mvl() -> None:
    layers = [LayerInfo(label=f"L{k}", module_name=f"net.{k}") for k in range(3)]

    def perturbation(name: str, means: list[float | None], adversarial: bool) -> dict[str, Any]:
        stats = [
            {"label": la.label, "module_name": la.module_name, "mean": m, "std": 0.1,
             "count": 4, "undefined": 0}
            for la, m in zip(layers, means, strict=True)
        ]  # fmt: skip
        return {"name": name, "adversarial": adversarial, "params": {}, "accuracy": 0.5,
                "mu": 0.3, "sigma": 0.1, "layers": stats}  # fmt: skip

    result = LSAResult.model_validate(
        {"measure": "relative_error", "reduction": "sample", "n_samples": 4,
         "clean_accuracy": 1.0, "layers": [la.model_dump() for la in layers],
         "perturbations": [perturbation("noise", [0.1, 0.2, None], False),
                           perturbation("fgsm", [0.3, 0.6, 0.4], True)]}
    )  # fmt: skip
    fig = plot_layer_curves(result, mvl=layers[1:2], title="tiny")
    (ax,) = fig.axes
    noise, fgsm = ax.get_lines()
    assert (noise.get_label(), noise.get_linestyle(), list(noise.get_ydata())) == (
        "noise", "--", [0.1, 0.2]  # the undefined layer left out
    )  # fmt: skip
    assert (fgsm.get_label(), fgsm.get_linestyle(), list(fgsm.get_ydata())) == (
        "fgsm", "-", [0.3, 0.6, 0.4]
    )  # fmt: skip
    (shade,) = ax.patches  # the MVL layer L1, ±0.4 around its position
    assert shade.get_x() == pytest.approx(0.6) and shade.get_width() == pytest.approx(0.8)
    assert ax.get_title() == "tiny" and ax.get_xlabel().endswith("shaded: MVL")


def _boxes_overlap(a: Bbox, b: Bbox) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_decision_regions_have_axes_in_the_data_coordinates_and_a_class_legend(
    experiment: tuple[ExperimentResult, Path],
) -> None:
    result, _ = experiment
    x, y = torch.rand(40, 2), torch.arange(40) % 2
    fig = plot_decision_boundaries(result, data_x=x, data_y=y)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    panels = fig.axes
    assert [ax.get_title().split("\n")[0] for ax in panels] == list(ROWS)
    for ax in panels:
        assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)
        ticks = [float(t.get_text()) for t in ax.get_xticklabels() if t.get_text()]
        assert min(ticks) == 0.0 and max(ticks) == 1.0
        assert ax.get_xlabel() == "x₁ (unit coordinates)"  # one row of four: all at the bottom
    assert panels[0].get_ylabel() == "x₂ (unit coordinates)" and panels[1].get_ylabel() == ""
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "test points of class 0",
        "test points of class 1",
        "decision boundary: p(class 1) = 0.5",
    ]
    box = legend.get_window_extent(renderer)
    assert not any(_boxes_overlap(box, ax.get_tightbbox(renderer)) for ax in panels)
    # Standardized coordinates (the paper protocol): the points' box, named as such.
    standardized = result.model_copy(
        update={"settings": {**result.settings, "data_options": {"coordinates": "standardized"}}}
    )
    fig = plot_decision_boundaries(standardized, data_x=3 * x - 1.5, data_y=y)
    assert fig.axes[0].get_xlabel() == "x₁ (standardized coordinates)"
    assert fig.axes[0].get_xlim()[0] < -1.5 < 1.5 < fig.axes[0].get_xlim()[1]


def test_the_normal_lsa_figure_overlays_the_papers_curve() -> None:
    """The normal model's LSA figure draws one line per perturbation and, where the paper states
    a curve, that curve's values as the last line."""
    from lsakit.experiments.results import PublishedClaims, PublishedCurve
    from lsakit.report.figures import plot_normal_lsa

    result = ExperimentResult.model_validate(
        {
            "experiment": "mnist", "profile": "quick", "dataset": "mnist", "model": "model_b",
            "eps": [0.0], "eps_paper": [0.0], "seeds": [0], "layer_labels": ["L0", "L1", "L2"],
            "normal_lsa": {"fgsm": [0.9, 0.8, 0.7], "gaussian": [0.3, 0.2, None]},
            "mvl": ["L0"], "eta": 0.5, "rows": [], "settings": {}, "seconds": 1.0,
            "published_claims": PublishedClaims(
                normal_curve=PublishedCurve(perturbation="pgd", values=[0.94, 0.92, 0.81])
            ).model_dump(),
        }
    )  # fmt: skip
    lines = plot_normal_lsa(result).axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["fgsm", "gaussian", "paper: pgd"]
    assert list(lines[1].get_ydata()) == [0.3, 0.2]  # the undefined layer left out
    assert list(lines[2].get_ydata()) == [0.94, 0.92, 0.81]
