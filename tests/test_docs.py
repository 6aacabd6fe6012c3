"""The documentation site: its docstring check, its tutorials, and the site itself in a browser.

The fast tests run the docstring check without a build (docs/_ext/lsakit_docs.py, the same code
the build runs) and check the tutorials' sources. The slow test builds the site as ``make docs``
does (``sphinx-build -W``: every warning an error, every tutorial executed in a fresh kernel),
reads the executed notebooks back, and opens the built pages in headless Chromium.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers import BROWSER, NO_BROWSER, browser_dom

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.ipynb"))
RESULTS = sorted((DOCS / "results").glob("*.json"))  # one reproduction page each
ANSI = re.compile(r"\x1b\[")


def _extension() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lsakit_docs", DOCS / "_ext" / "lsakit_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_callable_documents_its_parameters_and_return_value() -> None:
    assert _extension().undocumented() == []


def test_the_check_names_what_a_docstring_leaves_out() -> None:
    docs = _extension()

    def scale(x: float, factor: float = 2.0) -> float:
        """Scale a number.

        Args:
            x: the number.
        """
        return x * factor

    def note(text: str) -> None:
        """Print ``text``.

        Args:
            text: what to print.
        """

    lines = docs.napoleon_lines("function", "lsakit.scale", scale)
    assert docs.problems("function", "lsakit.scale", scale, lines) == [
        "parameter factor not documented (Args:)",
        "return value not documented (Returns:)",
    ]
    assert (
        docs.problems("function", "lsakit.note", note, docs.napoleon_lines("function", "n", note))
        == []
    )
    assert docs.problems("function", "other.scale", scale, lines) == []  # not lsakit's


def test_every_public_module_lists_names_that_exist() -> None:
    docs = _extension()
    for module_name, _ in docs.PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, f"{module_name}.__all__ names {missing}"
    names = {name for _, name, _ in docs.public_callables()}
    for expected in ("lsakit.analyze", "lsakit.LayerProbe", "lsakit.LSAResult",
                     "lsakit.train.LayerwiseRegularizer", "lsakit.perturb.PGD",
                     "lsakit.workflows.analyze"):  # fmt: skip
        assert expected in names


def test_the_tutorials_are_committed_without_outputs_and_listed() -> None:
    assert len(TUTORIALS) >= 3
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for path in TUTORIALS:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name
        assert f"tutorials/{path.stem}\n" in index, f"{path.name} is not in the site's toctree"


def test_the_reproduction_pages_are_rendered_from_results_files_and_type_no_numbers() -> None:
    """Issue 25: the paper's tables beside ours, generated from the ``results.json`` files in
    docs/results (one per experiment and protocol), none of it typed by hand."""
    from lsakit.experiments import ExperimentResult
    from lsakit.experiments.config import load_experiment, load_table
    from lsakit.report import reproduction_markdown

    typed = [line for line in (DOCS / "reproductions.md").read_text(encoding="utf-8").splitlines()
             if line.lstrip().startswith("|")]  # fmt: skip
    assert typed == [], "docs/reproductions.md types a table; render it from docs/results instead"
    found: dict[str, set[str]] = {}
    for path in RESULTS:
        result = ExperimentResult.load(path)
        assert path.stem == f"{result.experiment}-{result.protocol}"
        _, published = load_table(load_experiment(result.experiment).table)
        lines = reproduction_markdown(result).splitlines()
        for row in result.rows:
            assert row.published == published[row.name], f"{path.name}: {row.name}"
            cells = next(line for line in lines if line.startswith(f"| {row.name} |")).split("|")
            ours = sum(run.rg for run in row.runs) / len(row.runs)
            assert float(cells[2].split("±")[0]) == pytest.approx(ours, abs=0.006), row.name
            assert float(cells[3]) == published[row.name].rg
        found.setdefault(result.experiment, set()).add(result.protocol)
    assert found == {"moon": {"strict", "paper"}, "mnist": {"strict", "paper"}}


# -- the built site --------------------------------------------------------------------------------


def _outputs(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for cell in notebook["cells"] if cell["cell_type"] == "code" for o in cell["outputs"]]


def _text(output: dict[str, Any]) -> str:
    if output["output_type"] == "stream":
        return "".join(output["text"])
    if output["output_type"] == "error":
        return "\n".join(output["traceback"])
    return "".join(
        "".join(v) if isinstance(v, list) else str(v) for k, v in output["data"].items()
        if not k.startswith("image/")
    )  # fmt: skip


def check_executed(notebook: dict[str, Any], name: str) -> None:
    """What an executed tutorial must hold (issue 25): no warning printed by lsakit or its progress
    display, no ANSI escape code, and nothing on stderr at all."""
    for output in _outputs(notebook):
        text = _text(output)
        assert not ANSI.search(text), f"{name}: an ANSI escape code in {text[:300]!r}"
        assert "ipywidgets" not in text, f"{name}: {text[:300]!r}"
        assert output.get("name") != "stderr", f"{name} printed on stderr: {text[:500]!r}"
        assert output["output_type"] != "error", f"{name}: {text[-1500:]}"


def _dom(page: Path, tmp_path: Path) -> str:
    done = browser_dom(page, tmp_path / "profile")
    assert "</html>" in done.stdout, f"chromium gave no DOM (exit {done.returncode})"
    return done.stdout


@pytest.mark.slow  # a few minutes: the whole site, every tutorial executed
@pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)
def test_the_site_builds_and_a_browser_finds_the_api_and_the_tutorials(tmp_path: Path) -> None:
    data = REPO.parent / "shared" / "data"
    if not (data / "mnist").is_dir():
        pytest.skip(f"the tutorials read MNIST from {data}, which is missing here")
    html = tmp_path / "html"
    env = {**os.environ, "LSAKIT_DATA": str(data), "LSAKIT_PROGRESS_INTERVAL": "5"}
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(html)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    # No option named in prose (--out, --jobs) turned into an en dash a shell would not accept
    dashed = {m for page in html.rglob("*.html")
              for m in re.findall(r"[\s(>]\u2013[a-z][a-z-]+", page.read_text(encoding="utf-8"))}  # fmt: skip
    assert not dashed, f"options rendered with an en dash: {sorted(dashed)[:10]}"

    # The executed notebooks myst-nb keeps beside the site
    executed = {p.stem: json.loads(p.read_text(encoding="utf-8"))
                for p in (tmp_path / "jupyter_execute" / "tutorials").glob("*.ipynb")}  # fmt: skip
    assert sorted(executed) == sorted(p.stem for p in TUTORIALS)
    for name, notebook in executed.items():
        check_executed(notebook, name)
    first = _outputs(executed["lsa-in-five-minutes"])
    shown = [o for o in first if o["output_type"] == "execute_result"]
    lsa = [o for o in shown if "".join(o["data"]["text/plain"]).startswith("LSAResult(")]
    assert lsa and "<table" in "".join(lsa[0]["data"]["text/html"])
    assert any("image/png" in o.get("data", {}) for o in first), "no inline figure"

    # In a browser: the navigation reaches the API pages and the tutorials, rendered with outputs
    index = _dom(html / "index.html", tmp_path)
    links = set(re.findall(r'href="([^"#]+)', index))
    pages = {
        "api/lsakit.analyze.html": "lsakit.analyze",
        "api/lsakit.LayerProbe.html": "lsakit.LayerProbe",
        "api/lsakit.LSAResult.html": "lsakit.LSAResult",
        "api/lsakit.train.LayerwiseRegularizer.html": "lsakit.train.LayerwiseRegularizer",
        "api/lsakit.perturb.PGD.html": "lsakit.perturb.PGD",
        "api/lsakit.perturb.APGD.html": "lsakit.perturb.APGD",
        "api/lsakit.workflows.analyze.html": "lsakit.workflows.analyze",
    }
    for page, anchor in pages.items():
        assert page in links, f"the site's navigation has no link to {page}"
        dom = _dom(html / page, tmp_path)
        assert f'id="{anchor}"' in dom, f"{page} does not document {anchor}"
    assert 'id="lsakit.train.LayerwiseRegularizer.from_mvl"' in _dom(
        html / "api/lsakit.train.LayerwiseRegularizer.html", tmp_path
    )
    for path in TUTORIALS:
        page = f"tutorials/{path.stem}.html"
        assert page in links, f"the site's navigation has no link to {page}"
        dom = _dom(html / page, tmp_path)
        assert "cell_output" in dom, f"{page} shows no outputs"
    tutorial = _dom(html / "tutorials/lsa-in-five-minutes.html", tmp_path)
    assert '<table class="lsakit"' in tutorial
    images = re.findall(r'<img[^>]+src="([^"]+)"', tutorial)
    assert any(src.endswith(".png") and (html / "tutorials" / src).exists() for src in images)

    # The reproduction pages, rendered from docs/results, reached from the reproductions page
    reproductions = set(re.findall(r'href="([^"#]+)', _dom(html / "reproductions.html", tmp_path)))
    for path in RESULTS:
        assert f"reproductions/{path.stem}.html" in reproductions, path.stem
    assert "AT-APGD-LR-L0" in _dom(html / "reproductions/mnist-strict.html", tmp_path)


def test_the_notebook_checks_catch_what_they_look_for() -> None:
    clean = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "stream", "name": "stdout", "text": ["ok\n"]}]}]}  # fmt: skip
    check_executed(clean, "clean")
    for bad in (
        {"output_type": "stream", "name": "stdout", "text": ["\x1b[31mred\x1b[0m"]},
        {"output_type": "stream", "name": "stderr", "text": ["UserWarning: …"]},
        {"output_type": "display_data", "data": {"text/plain": "install ipywidgets"}},
    ):
        with pytest.raises(AssertionError):
            check_executed({"cells": [{"cell_type": "code", "outputs": [bad]}]}, "bad")
