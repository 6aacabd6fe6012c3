"""lsakit in a Jupyter notebook: progress, results, figures and warnings in a real kernel.

The first part executes a small notebook (nbformat) in a real IPython kernel (nbclient, the kernel
started with this Python, ``sys.executable``) and reads its outputs as a saved notebook holds them.
The second part checks the results' one-line reprs and HTML tables with known numbers, and the
once-per-process rule of lsakit's warnings.
"""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from torch import nn

from lsakit._html import table
from lsakit.analysis import LSAResult
from lsakit.errors import LsakitWarning, warn
from lsakit.evaluate import EvaluationResult
from lsakit.experiments.results import ExperimentResult
from lsakit.suite import SuiteResult
from lsakit.train.trainer import TrainResult

# ------------------------------------------------------------------------------ the notebook

#: The cells, in order. A zero head makes FGSM meet zero input gradients, so lsakit warns
#: (ZeroGradientWarning) in both analyses; the figure between them runs matplotlib, whose
#: ``warnings.catch_warnings`` resets Python's own once-per-place memory of warnings.
CELLS = {
    "setup": """\
        import json, sys
        import torch
        from torch import nn
        import lsakit
        from lsakit.perturb import FGSM, GaussianNoise

        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)
        )
        nn.init.zeros_(model[4].weight)
        g = torch.Generator().manual_seed(0)
        data = [
            (torch.rand(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))
            for _ in range(3)
        ]
        mvl = {"perturbation": "noise", "eta": 0.5, "layers": ["L1"]}

        def perturbations():
            return {"noise": GaussianNoise(std=0.1, seed=0), "fgsm": FGSM(model, eps=0.03)}

        class Clock:
            now = 100.0

            def __call__(self):
                return self.now""",
    "analyze": """\
        result = lsakit.analyze(model, data, perturbations(), progress=True, meta={"mvl": mvl})
        result""",
    "figure": """\
        from lsakit.report import plot_layer_curves

        plot_layer_curves(result, mvl=result.most_vulnerable_layers(0.5, "noise"))""",
    "again": """\
        again = lsakit.analyze(model, data, perturbations(), progress=True)
        print(repr(again))""",
    "pace": """\
        from IPython.utils.capture import capture_output
        from lsakit._progress import Progress

        clock = Clock()
        with capture_output() as captured, Progress(clock=clock) as shown:
            task = shown.add_task("LSA", 40)
            for _ in range(40):  # 0.1 s a batch
                clock.now += 0.1
                shown.advance(task)
        print(json.dumps([[o.update, o.data["text/plain"], o.data["text/html"]]
                          for o in captured.outputs]))""",
    "tasks": """\
        clock = Clock()
        try:
            with Progress(clock=clock) as shown:
                for epoch in (1, 2, 3):
                    task = shown.add_task(f"epoch {epoch}/3", 4, "steps")
                    for step in range(4 if epoch < 3 else 1):  # epoch 3 is interrupted
                        clock.now += 1.0
                        shown.advance(task, note=f"loss 0.{epoch}{step}")
                    if epoch < 3:
                        shown.remove_task(task)
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass""",
    "pyplot": "print('matplotlib.pyplot' in sys.modules)",
}


def _kernel(folder: Path) -> KernelManager:
    """A kernel manager whose kernel runs this Python (the venv's), whatever other kernel
    specs the machine has."""
    spec = folder / "kernels" / "lsakit-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "lsakit tests", "language": "python"})
    )
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    return KernelManager(kernel_name="lsakit-test", kernel_spec_manager=specs)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each cell's outputs, as the executed (and saved) notebook holds them."""
    folder = tmp_path_factory.mktemp("notebook")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(source)) for source in CELLS.values()]
    km = _kernel(folder)
    client = NotebookClient(
        nb, km=km, timeout=300, resources={"metadata": {"path": str(folder)}},
        extra_arguments=["--HistoryManager.hist_file=:memory:"],
    )  # fmt: skip
    try:
        client.execute()
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    nbformat.validate(nb)
    return {name: cell.outputs for name, cell in zip(CELLS, nb.cells, strict=True)}


def _texts(output: dict[str, Any]) -> list[str]:
    return [output.get("text", ""), *(str(v) for v in output.get("data", {}).values())]


def _progress(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in outputs if o["output_type"] == "display_data" and "lsakit-progress" in
            o["data"].get("text/html", "")]  # fmt: skip


def test_the_notebook_shows_no_terminal_codes_no_ipywidgets_and_no_pyplot(
    notebook: dict[str, list[dict[str, Any]]],
) -> None:
    texts = [text for outputs in notebook.values() for o in outputs for text in _texts(o)]
    assert texts and not any("\x1b[" in text or "ipywidgets" in text for text in texts)
    errors = [o for outputs in notebook.values() for o in outputs if o["output_type"] == "error"]
    assert errors == []
    # the figure showed without matplotlib.pyplot (nor its state) being imported
    assert notebook["pyplot"][0]["text"] == "False\n"


def test_an_analysis_leaves_one_done_line_as_html_and_text(
    notebook: dict[str, list[dict[str, Any]]],
) -> None:
    for cell in ("analyze", "again"):
        (shown,) = _progress(notebook[cell])
        assert shown["data"]["text/plain"].startswith("LSA: 3/3 batches (100%), elapsed 0:0")
        assert shown["data"]["text/plain"].endswith(", done")
        assert "<progress" not in shown["data"]["text/html"]  # not a stale half bar


def test_the_output_is_updated_at_most_four_times_a_second(
    notebook: dict[str, list[dict[str, Any]]],
) -> None:
    published = json.loads(notebook["pace"][0]["text"])
    steps = [int(text.split("/")[0].split()[-1]) for _, text, _ in published]
    # shown at once, then every third batch (0.3 s ≥ 0.25 s), then the last line on exit
    assert steps == [0, *range(3, 40, 3), 40]
    assert [update for update, _, _ in published] == [False] + [True] * 14
    assert published[0][1] == "LSA: 0/40 batches (0%), elapsed 0:00"
    assert published[1][1] == "LSA: 3/40 batches (8%), elapsed 0:00, ETA 0:04"
    assert '<progress value="3" max="40"' in published[1][2]
    assert published[-1][1] == "LSA: 40/40 batches (100%), elapsed 0:04, done"


def test_finished_tasks_keep_their_lines_and_an_interrupted_one_says_stopped(
    notebook: dict[str, list[dict[str, Any]]],
) -> None:
    (shown,) = _progress(notebook["tasks"])  # one output for the whole Progress
    assert shown["data"]["text/plain"].splitlines() == [
        "epoch 1/3: 4/4 steps (100%), elapsed 0:04, loss 0.13, done",
        "epoch 2/3: 4/4 steps (100%), elapsed 0:04, loss 0.23, done",
        "epoch 3/3: 1/4 steps (25%), elapsed 0:01, loss 0.30, stopped",
    ]


def test_a_result_shows_as_its_table_and_a_figure_as_a_png(
    notebook: dict[str, list[dict[str, Any]]],
) -> None:
    (value,) = [o for o in notebook["analyze"] if o["output_type"] == "execute_result"]
    assert value["data"]["text/plain"] == (
        "LSAResult(measure='relative_error', 2 layers, 2 perturbations: noise, fgsm; "
        "24 samples, clean accuracy 0.292)"
    )
    (parsed,) = parse_tables(value["data"]["text/html"])
    assert [row[:2] for row in parsed.body] == [["L0", "1"], ["L1*", "3"]]  # the MVL marked
    assert parsed.header == ["layer", "module", "noise", "fgsm"]
    (figure,) = [o for o in notebook["figure"] if o["output_type"] == "execute_result"]
    assert figure["data"]["image/png"] and figure["data"]["text/plain"].startswith("<Figure")
    assert notebook["again"][-1]["text"].startswith("LSAResult(measure='relative_error', 2 layers")


def test_a_warning_is_shown_once_and_the_progress_gives_none(
    notebook: dict[str, list[dict[str, Any]]],
) -> None:
    stderr = [o["text"] for outputs in notebook.values() for o in outputs if o.get("name") ==
              "stderr"]  # fmt: skip
    joined = "".join(stderr)
    assert joined.count("ZeroGradientWarning: fgsm: the input gradient is exactly zero") == 1
    assert joined.count("Warning") == 1  # nothing else, from the progress or anything
    assert any("ZeroGradientWarning" in text for o in notebook["analyze"] for text in _texts(o))


# ------------------------------------------------------------------------ reading the HTML


class Table:
    """A parsed ``<table>``: caption, header cells, body and footer rows (cell texts), and the
    indices of the highlighted body rows."""

    def __init__(self) -> None:
        self.caption = ""
        self.header: list[str] = []
        self.body: list[list[str]] = []
        self.foot: list[list[str]] = []
        self.marked: list[int] = []


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[Table] = []
        self.section = ""
        self.cell: list[str] | None = None
        self.in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        current = self.tables[-1] if self.tables else None
        if tag == "table":
            self.tables.append(Table())
        elif tag in ("thead", "tbody", "tfoot"):
            self.section = tag
        elif tag == "caption":
            self.in_caption = True
        elif tag == "tr" and current is not None:
            row: list[str] = []
            if self.section == "tbody":
                if dict(attrs).get("style"):
                    current.marked.append(len(current.body))
                current.body.append(row)
            elif self.section == "tfoot":
                current.foot.append(row)
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        current = self.tables[-1]
        if tag in ("td", "th") and self.cell is not None:
            text = "".join(self.cell)
            if self.section == "thead":
                current.header.append(text)
            else:
                (current.body if self.section == "tbody" else current.foot)[-1].append(text)
            self.cell = None
        elif tag == "caption":
            self.in_caption = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        elif self.in_caption:
            self.tables[-1].caption += data


def parse_tables(text: str) -> list[Table]:
    """The tables of an HTML text, read with the standard library's parser."""
    parser = _Parser()
    parser.feed(text)
    parser.close()
    return parser.tables


# -------------------------------------------------------------------------- reprs and tables


def _lsa(
    names: tuple[str, str] = ("noise", "fgsm"), meta: dict[str, Any] | None = None
) -> LSAResult:
    def stats(means: list[float | None], std: float) -> list[dict[str, Any]]:
        return [
            {"label": f"L{k}", "module_name": f"net.{2 * k + 1}", "mean": m,
             "std": None if m is None else std, "count": 10, "undefined": 0 if m else 10}
            for k, m in enumerate(means)
        ]  # fmt: skip

    return LSAResult.model_validate(
        {"measure": "relative_error", "reduction": "sample", "n_samples": 10,
         "clean_accuracy": 0.9,
         "layers": [{"label": f"L{k}", "module_name": f"net.{2 * k + 1}"} for k in range(3)],
         "perturbations": [
             {"name": names[0], "adversarial": False, "params": {}, "accuracy": 0.8,
              "mu": 0.2, "sigma": 0.05, "layers": stats([0.15, 0.25, None], 0.04)},
             {"name": names[1], "adversarial": True, "params": {}, "accuracy": 0.125,
              "mu": 0.5, "sigma": None, "layers": stats([0.4, 0.6, 0.5], 0.125)},
         ],
         "meta": meta or {}}
    )  # fmt: skip


def test_an_lsa_result_reads_as_one_line_and_as_the_terminals_table() -> None:
    result = _lsa(meta={"mvl": {"perturbation": "fgsm", "eta": 0.5, "layers": ["L1"]}})
    assert repr(result) == (
        "LSAResult(measure='relative_error', 3 layers, 2 perturbations: noise, fgsm; "
        "10 samples, clean accuracy 0.900)"
    )
    (parsed,) = parse_tables(result._repr_html_())
    assert parsed.caption == (
        "relative_error per layer (mean ± std over samples); * MVL (η = 0.5, from fgsm)"
    )
    assert parsed.header == ["layer", "module", "noise", "fgsm"]
    assert parsed.body == [
        ["L0", "net.1", "0.150±0.04", "0.400±0.12"],
        ["L1*", "net.3", "0.250±0.04", "0.600±0.12"],
        ["L2", "net.5", "all-zero clean", "0.500±0.12"],
    ]
    assert parsed.marked == [1]
    assert parsed.foot == [
        ["μ", "", "0.200", "0.500"],
        ["σ", "", "0.050", "—"],
        ["acc", "clean 0.900", "0.800", "0.125"],
    ]
    plain = _lsa()  # no MVL recorded: nothing marked
    (unmarked,) = parse_tables(plain._repr_html_())
    assert unmarked.marked == [] and unmarked.body[1][0] == "L1"
    assert unmarked.caption == "relative_error per layer (mean ± std over samples)"


def test_every_text_of_a_table_is_escaped() -> None:
    result = _lsa(names=("<b>noise</b>", "a & b"))
    text = result._repr_html_()
    assert "<b>" not in text and "&lt;b&gt;noise&lt;/b&gt;" in text and "a &amp; b" in text
    assert parse_tables(text)[0].header[2:] == ["<b>noise</b>", "a & b"]
    assert table(['"x"'], [["<script>"]], caption="1 < 2") == (
        '<table class="lsakit"><caption>1 &lt; 2</caption><thead><tr>'
        '<th style="text-align: left">&quot;x&quot;</th></tr></thead><tbody><tr>'
        '<td style="text-align: left">&lt;script&gt;</td></tr></tbody></table>'
    )


def test_an_evaluation_reads_as_one_line_and_its_table_rows() -> None:
    result = EvaluationResult(
        n_samples=10, clean_accuracy=0.9,
        fgsm=[{"eps": 0.0, "accuracy": 0.9}, {"eps": 0.1, "accuracy": 0.5}], rg_score=140.0,
        attacks={"PGD-20": {"params": {"eps": 0.1, "steps": 20}, "accuracy": 0.25,
                            "only_correct": True}},
    )  # fmt: skip
    assert repr(result) == (
        "EvaluationResult(10 samples, clean accuracy 0.900; FGSM at 2 ε, R&G 140.00; "
        "attacks: PGD-20 0.250)"
    )
    (parsed,) = parse_tables(result._repr_html_())
    assert parsed.header == ["evaluation", "setting", "accuracy (%)"]
    assert parsed.body == [
        ["FGSM", "eps=0", "90.00"],
        ["FGSM", "eps=0.1", "50.00"],
        ["R&G", "sum of 2 FGSM accuracies", "140.00"],
        ["PGD-20", "eps=0.1, steps=20", "25.00"],
    ]


def test_a_suite_reads_as_one_line_and_its_tables_mark_a_warning() -> None:
    result = SuiteResult(
        suite="standard", eps=0.03, n_examples=4, batch_size=2, seed=0, clean_accuracy=0.75,
        attacks=[
            {"label": "APGD-CE", "params": {}, "attacked": 3, "fooled": 1,
             "robust_accuracy": 0.5, "seconds": 1.25},
            {"label": "APGD-T", "params": {}, "attacked": 0, "fooled": 0,
             "robust_accuracy": 0.5, "seconds": 0.0, "skipped": "too few classes"},
        ],
        robust_accuracy=0.5, fooled_by=[-1, 0, 1, -1],
        checks=[{"name": "eps-growth", "status": "pass", "evidence": "accuracy falls to 0"},
                {"name": "black-box", "status": "warn", "evidence": "Square fooled 1",
                 "advice": "look"}],
    )  # fmt: skip
    assert repr(result) == (
        "SuiteResult(suite='standard', ε=0.03, 4 examples: clean accuracy 0.750, robust "
        "accuracy 0.500 after 1 attack; checks: eps-growth pass, black-box warn)"
    )
    attacks, checks = parse_tables(result._repr_html_())
    assert attacks.body == [
        ["clean", "4", "75.00", ""],
        ["APGD-CE", "3", "50.00", "1.2"],
        ["APGD-T", "—", "skipped: too few classes", ""],
        ["standard suite (worst case)", "", "50.00", ""],
    ]
    assert checks.header == ["check", "status", "evidence", "advice"] and checks.marked == [1]


def test_an_experiment_reads_as_one_line_and_the_reproduction_tables() -> None:
    run = {"seed": 0, "checkpoint": "c.safetensors", "accuracies": [99.0, 60.0], "rg": 159.0,
           "relative_errors": [0.5, None], "seconds": 1.0}  # fmt: skip
    result = ExperimentResult.model_validate(
        {"experiment": "moon", "profile": "smoke", "dataset": "moons", "model": "model_a",
         "eps": [0.0, 0.1], "eps_paper": [0.0, 0.3], "seeds": [0, 1], "layer_labels": ["L0", "L1"],
         "normal_lsa": {"fgsm": [0.75, 0.5]}, "mvl": ["L0"], "eta": 0.5,
         "rows": [{"name": "Normal", "method": "standard", "base": None, "lr_layers": None,
                   "resolved_layers": None, "published": {"accuracies": [100.0, 50.0], "rg": 150.0},
                   "runs": [run, {**run, "seed": 1, "accuracies": [97.0, 62.0], "rg": 159.0}]}],
         "settings": {"lsa_attack": "pgd=0.3"}, "seconds": 2.0}
    )  # fmt: skip
    assert repr(result) == (
        "ExperimentResult(experiment='moon', profile='smoke', protocol='strict': 1 row × "
        "2 seeds, 2 layers, MVL L0)"
    )
    accuracy, lsa, errors = parse_tables(result._repr_html_())
    assert accuracy.header == ["training", "ε=0", "ε=0.3", "R&G"]
    assert accuracy.body == [["Normal", "98.0±1.4 (100.0)", "61.0±1.4 (50.0)", "159.0±0.0 (150.0)"]]
    assert lsa.body == [["L0*", "0.750"], ["L1", "0.500"]] and lsa.marked == [0]
    assert errors.caption.endswith("under pgd=0.3 after training (mean over seeds)")
    assert errors.body == [["Normal", "0.500", "—"]]


def test_a_training_result_reads_without_its_model() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    metrics = [
        {"epoch": 1, "train_loss": 0.69314, "test_accuracy": 0.5, "val_robust": None},
        {"epoch": 2, "train_loss": 0.25, "test_accuracy": 0.875, "val_robust": None},
    ]
    result = TrainResult(model, metrics, Path("runs/a/model.safetensors"),
                         regularized_layers=["L1"])  # fmt: skip
    assert repr(result) == (
        "TrainResult(Sequential, 2 epochs; train loss 0.2500; test accuracy 0.8750; "
        "regularized L1; checkpoint runs/a/model.safetensors)"
    )
    assert "Linear" not in repr(result)
    (parsed,) = parse_tables(result._repr_html_())
    assert parsed.header == ["epoch", "train_loss", "test_accuracy", "val_robust"]
    assert parsed.body == [["1", "0.6931", "0.5", "—"], ["2", "0.25", "0.875", "—"]]
    assert repr(TrainResult(model, [], None)) == "TrainResult(Sequential, 0 epochs; no checkpoint)"


# ------------------------------------------------------------------------------- warnings


class _Warning(LsakitWarning):
    pass


def test_lsakits_warnings_show_once_per_process_unless_the_filters_say_otherwise() -> None:
    def shown(text: str) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # Python's rule: once per place
            warn(_Warning(text))
            warnings.resetwarnings()  # what any catch_warnings does: the places are forgotten
            warnings.simplefilter("default")
            warn(_Warning(text))
        return [str(w.message) for w in caught]

    assert shown("first") == ["first"]  # shown once, though Python forgot it in between
    assert shown("first") == []  # and not again in this process
    assert shown("second") == ["second"]
    with pytest.warns(_Warning, match="first"):  # "always" (pytest.warns) is obeyed
        warn(_Warning("first"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", _Warning)
        with pytest.raises(_Warning):
            warn(_Warning("first"))
