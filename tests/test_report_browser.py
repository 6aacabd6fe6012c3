"""The HTML reproduction report in a real browser: it reads at 1280 px without scrolling sideways.

A real reproduction (Moon, smoke profile: 17 rows, one seed) is run and its report written; a
second report of the same rows with five seeds (the full profile's count: a ± in every cell, the
widest table) reuses its checkpoints. Each page is opened in headless Chromium in a 1280 px wide
window with a measuring script appended to a copy of it (the report itself has no script): the
page must not be wider than the window, and no element may scroll or stick out sideways.
Skipped, with the reason, only where no Chromium binary exists (.ci/run installs Debian's).
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers import BROWSER, NO_BROWSER, browser_dom
from lsakit.experiments import ExperimentResult
from lsakit.report import write_report

WIDTH = 1280

pytestmark = pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)

#: Appended to a copy of the page: once everything is laid out, what is wider than it may be.
MEASURE = """<script>
window.addEventListener("load", () => {
  const doc = document.documentElement;
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    const scrolls = el.scrollWidth > el.clientWidth + 1
      && getComputedStyle(el).overflowX !== "visible" && el.clientWidth > 0;
    if (scrolls || box.right > doc.clientWidth + 1) {
      wide.push(`${el.tagName} right ${Math.round(box.right)} scroll ${el.scrollWidth} ` +
                `client ${el.clientWidth}: ${(el.textContent || "").slice(0, 50)}`);
    }
  }
  const out = document.createElement("pre");
  out.id = "lsakit-measure";
  out.textContent = JSON.stringify({
    window: window.innerWidth, client: doc.clientWidth, scroll: doc.scrollWidth,
    tables: document.querySelectorAll("table").length, wide: wide,
  });
  document.body.appendChild(out);
});
</script>"""


def measure(page: Path, tmp_path: Path, width: int = WIDTH) -> dict[str, Any]:
    """Open ``page`` in headless Chromium at ``width`` px; the measurements the script wrote."""
    probe = tmp_path / f"measured-{page.parent.name}.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"))
    done = browser_dom(probe, tmp_path / "profile", width)
    found = re.search(r'<pre id="lsakit-measure">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"chromium wrote no measurement (exit {done.returncode}): {done.stderr[-2000:]}"
    values: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return values


@pytest.fixture(scope="module")
def smoke(
    moon_smoke: tuple[ExperimentResult, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[ExperimentResult, Path]:
    """The session's real Moon reproduction (smoke profile: 17 rows × 1 seed, 1 epoch each),
    copied here, with its report."""
    result, shared = moon_smoke
    out = tmp_path_factory.mktemp("smoke") / "moon"
    shutil.copytree(shared, out)
    write_report(result, out, landscape_steps=3)
    return result, out


def five_seeds(result: ExperimentResult) -> ExperimentResult:
    """The same rows with five seeds (shifted accuracies, the first seed's checkpoint)."""
    rows = []
    for row in result.rows:
        run = row.runs[0]
        runs = [
            run.model_copy(
                update={
                    "seed": s,
                    "accuracies": [a + 1.37 * s for a in run.accuracies],
                    "rg": run.rg + 1.37 * s * len(run.accuracies),
                }
            )
            for s in range(5)
        ]
        rows.append(row.model_copy(update={"runs": runs}))
    return result.model_copy(update={"rows": rows, "seeds": list(range(5))})


def test_the_smoke_report_reads_at_1280_px_without_scrolling_sideways(
    smoke: tuple[ExperimentResult, Path], tmp_path: Path
) -> None:
    result, out = smoke
    assert len(result.rows) == 17 and len(result.eps) == 6  # the whole Moon table
    seen = measure(out / "report.html", tmp_path)
    assert seen["window"] == WIDTH
    assert seen["tables"] >= 4  # the measurement ran on the whole page
    assert seen["scroll"] <= seen["client"], seen
    assert seen["wide"] == [], seen["wide"]


def test_five_seeds_with_a_spread_in_every_cell_still_fit_at_1280_px(
    smoke: tuple[ExperimentResult, Path], tmp_path: Path
) -> None:
    result, run_dir = smoke
    out = tmp_path / "five-seeds"
    _, page = write_report(five_seeds(result), out, base_dir=run_dir, landscape_steps=0)
    assert page.read_text(encoding="utf-8").count("±&nbsp;") == 17 * 7  # R&G and six ε per row
    seen = measure(page, tmp_path)
    assert seen["scroll"] <= seen["client"], seen
    assert seen["wide"] == [], seen["wide"]
    # The check can fail: the same page in a window too narrow for the table scrolls sideways.
    narrow = measure(page, tmp_path, width=700)
    assert any(line.startswith("TABLE") for line in narrow["wide"]), narrow
