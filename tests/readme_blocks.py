"""The fenced blocks of the README and the docs pages, each with the comment saying how it is checked.

Every fenced block of README.md and of each page in :data:`DOCUMENTS` is preceded by one marker
(blank lines between are allowed):

- ``<!-- tested -->``: a Python example that ``tests/test_readme.py`` runs as it stands;
- ``<!-- tested: cli -->``: the command lines of "Your own model and data" (``test_readme.py``);
- ``<!-- tested: api -->``: the Python API example; every ``print(…)  # OUTPUT`` line's comment is
  the line it prints (``test_readme.py``);
- ``<!-- tested: walk -->``: command lines that ``make docs-check`` runs in order, as written, on
  small fixtures (``tests/test_readme_walk.py``);
- ``<!-- tested: hub -->``: the "Pretrained models" commands and Python, run as written against a
  local Hugging Face hub serving the repositories they name (``tests/test_pretrained.py``);
- ``<!-- output: COMMAND -->``: what COMMAND prints, compared line by line (progress lines and
  durations aside): ``make demo`` in ``make test-slow``, the others in ``make docs-check``;
- ``<!-- not-run: REASON -->``: not run by any test, and why (a GPU, a cluster, minutes of CPU…);
- ``<!-- options:begin -->``: generated text (the options table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
#: The README and the docs pages written by hand, in the order the walk runs their commands (a
#: later block may use what an earlier one wrote: ``runs/pgd`` is trained before it is evaluated).
DOCUMENTS = [
    README,
    *(
        DOCS / name
        for name in (
            "index.md", "getting-started.md", "guide/cli.md", "guide/at-lr.md",
            "guide/evaluation.md", "guide/companions.md", "reproductions.md", "guide/cluster.md",
            "guide/lsa.md", "guide/own-models.md", "guide/pretrained.md", "benchmarks.md",
            "development.md", "changelog.md",
        )
    ),
]  # fmt: skip
#: Pages the docs build writes (from docstrings and results files), not checked here.
GENERATED = ("api", "reproductions", "_build")


def text() -> str:
    """Every document's text, in :data:`DOCUMENTS` order (one string, for prose checks)."""
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCUMENTS)


def section(title: str) -> str:
    """The text of the section headed ``title`` (any level), up to the next heading of its level
    or above (a ``#`` line inside a fenced block is no heading), in whichever document holds it."""
    for path in DOCUMENTS:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        fenced, level, start = False, 0, -1
        for i, line in enumerate(lines):
            fenced ^= line.startswith("```")
            heading = re.match(r"(#+) (.*)\n?$", line) if not fenced else None
            if heading and start < 0 and heading.group(2) == title:
                level, start = len(heading.group(1)), i
            elif heading and start >= 0 and len(heading.group(1)) <= level:
                return "".join(lines[start:i])
        if start >= 0:
            return "".join(lines[start:])
    raise KeyError(f"no section headed {title!r} in the README or the docs")


#: marker kinds a block may carry; "not-run" and "output" need their text after the colon
KINDS = (
    "tested", "tested: cli", "tested: api", "tested: walk", "tested: hub", "output", "not-run",
    "options",
)  # fmt: skip
_MARKER = re.compile(r"<!--\s*(.*?)\s*-->")
#: a line of progress (lsakit._progress: "LSA: 3/8 batches (38%), elapsed 0:12, ETA 0:20")
PROGRESS = re.compile(r"\belapsed \d+:\d\d(:\d\d)?\b")
#: a duration as lsakit prints them: "(9 s)", "(1 min 43 s)", "(0.4 s)"
DURATION = re.compile(r"\((\d+ h )?(\d+ min )?\d+(\.\d+)? s\)")


@dataclass(frozen=True)
class Block:
    """One fenced block: its marker (None: none), language, text, and the line it opens in its
    document."""

    marker: str | None
    language: str
    text: str
    line: int
    path: Path = README

    @property
    def where(self) -> str:
        """``FILE:LINE``, the file relative to the repository."""
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def kind(self) -> str | None:
        """The marker's kind (see the module docstring); None for no or an unknown marker."""
        if self.marker is None:
            return None
        if self.marker in KINDS[:5]:
            return self.marker
        head = self.marker.split(":", 1)[0]
        if head in ("output", "not-run") and self.argument:
            return head
        return "options" if self.marker.startswith("options:") else None

    @property
    def argument(self) -> str:
        """The text after the kind: the command of ``output``, the reason of ``not-run``."""
        return self.marker.split(":", 1)[1].strip() if self.marker and ":" in self.marker else ""


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the documents (or of ``text``), in :data:`DOCUMENTS` order."""
    if text is None:
        return [
            block for path in DOCUMENTS for block in _blocks(path.read_text(encoding="utf-8"), path)
        ]
    return _blocks(text, README)


def _blocks(text: str, path: Path) -> list[Block]:
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\{[\w-]+\}.*|\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        close = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```")
        if opening.group(1).startswith("{"):  # a MyST directive (toctree, include): no example
            i = close + 1
            continue
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.fullmatch(before.strip())
        found.append(
            Block(
                marker=marker.group(1) if marker else None,
                language=opening.group(1),
                text="\n".join(lines[i + 1 : close]) + "\n",
                line=i + 1,
                path=path,
            )
        )
        i = close + 1
    return found


def of_kind(kind: str) -> list[Block]:
    """The blocks whose marker is of ``kind``."""
    return [block for block in blocks() if block.kind == kind]


def commands(block: Block) -> list[str]:
    """The block's command lines: continuations (``\\``) joined, comments and blank lines out."""
    joined: list[str] = []
    pending = ""
    for raw in block.text.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        line = re.sub(r"(^|\s+)#.*$", "", line).strip()  # a trailing comment is no argument
        if line:
            joined.append(line)
    return joined


def printed(text: str) -> list[str]:
    """Output lines as compared with a README block: progress lines and blank lines (a finished
    progress bar may leave one) dropped, durations masked, trailing spaces stripped."""
    return [
        DURATION.sub("(… s)", line).rstrip()
        for line in text.splitlines()
        if line.strip() and not PROGRESS.search(line)
    ]


#: A number as printed: not part of a name ("L2", "elu3", "cifar10"), so names compare exactly.
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")
#: Runs of spaces and of table-rule characters: a rich table's columns widen with their cells.
_FILL = re.compile(r"([ ─━═┄])\1+")

#: How far a printed number may lie from the README's when the math libraries take another code
#: path, by kind of number. The README's figures come from the portable numerics mode, which pins
#: the paths (lsakit.numerics); these bound what is left where a library does not honour a pin.
#: The largest deviations measured from the README's figures (``benchmarks/exp_numerics_paths.py``
#: on an AMD EPYC, the default mode under MKL_CBWR, ONEDNN_MAX_CPU_ISA and ATEN_CPU_CAPABILITY
#: emulating other CPUs; issue 21's figures from an Intel Xeon): fraction 0.016 (the API
#: example's PGD accuracy, 0.968 against 0.952), percent 0.2 (one of the demo's 500 test points;
#: it moved on the Xeon only), score 0 (no R&G moved). Each tolerance is about twice that, and
#: allows every accuracy of a score its own 0.4 points.
TOLERANCES = {"fraction": 0.03, "percent": 0.5, "score": 2.5}


def kind(number: str) -> str | None:
    """The kind of a printed number: None for a whole number (a count, a seed, a shape: compared
    exactly); ``fraction`` up to 1.5 (accuracies as fractions, relative errors); ``percent``
    up to 100 (accuracy in %); ``score`` above (R&G, a sum of six accuracies)."""
    if "." not in number:
        return None
    value = float(number)
    return "fraction" if value <= 1.5 else "percent" if value <= 100 else "score"


def _split(line: str) -> tuple[str, list[str]]:
    """A line's text with its numbers as ``#`` (fill collapsed), and its numbers."""
    return _FILL.sub(r"\1", NUMBER.sub("#", line)), NUMBER.findall(line)


def deviations(got: list[str], want: list[str]) -> dict[str, float]:
    """The largest |got − want| of each kind of number; ``text`` 1.0 where the lines differ
    otherwise (their text or count)."""
    worst = {k: 0.0 for k in TOLERANCES}
    if len(got) != len(want):
        return {**worst, "text": 1.0}
    text = 0.0
    for g, w in zip(got, want, strict=True):
        (g_text, g_numbers), (w_text, w_numbers) = _split(g), _split(w)
        if g_text != w_text or len(g_numbers) != len(w_numbers):
            text = 1.0
            continue
        for a, b in zip(g_numbers, w_numbers, strict=True):
            k = kind(b)
            if k is None:
                text = max(text, float(a != b))
            else:
                worst[k] = max(worst[k], abs(float(a) - float(b)))
    return {**worst, "text": text}


def mismatches(got: list[str], want: list[str]) -> list[str]:
    """The lines of ``got`` that are not ``want``'s within :data:`TOLERANCES` (empty: all are);
    text and whole numbers compare exactly."""
    if len(got) != len(want):
        return [f"{len(got)} lines printed, {len(want)} expected:", *got]
    bad = []
    for g, w in zip(got, want, strict=True):
        report = deviations([g], [w])
        if report.pop("text") or any(report[k] > TOLERANCES[k] for k in report):
            bad.append(f"printed {g!r}, expected {w!r}")
    return bad


#: a line of the API example that prints, and the comment saying what it prints
API_PRINT = re.compile(r"^(print\(.*\))\s+# (.+)$")


def api_expected() -> list[str]:
    """What the README's Python API example prints: the comments of its ``print`` lines."""
    (block,) = of_kind("tested: api")
    return [m.group(2) for m in map(API_PRINT.match, block.text.splitlines()) if m]


def compared(lines: list[str]) -> tuple[list[str], list[str]]:
    """Printed lines as compared: a reproduction's completion lines ("  ROW seed S: …") come in
    whichever order its parallel jobs finish, so they are compared as a sorted list."""
    done = re.compile(r"^\s+\S+ seed \d+: ")
    return [x for x in lines if not done.match(x)], sorted(x for x in lines if done.match(x))
