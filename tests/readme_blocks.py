"""The README's fenced blocks, each with the HTML comment that says how it is checked.

Every fenced block of README.md is preceded by one marker (blank lines between are allowed):

- ``<!-- tested -->``: a Python example that ``tests/test_readme.py`` runs as it stands;
- ``<!-- tested: cli -->``: the command lines of "Your own model and data" (``test_readme.py``);
- ``<!-- tested: api -->``: the Python API example; every ``print(…)  # OUTPUT`` line's comment is
  the line it prints (``test_readme.py``);
- ``<!-- tested: walk -->``: command lines that ``make docs-check`` runs in order, as written, on
  small fixtures (``tests/test_readme_walk.py``);
- ``<!-- output: COMMAND -->``: what COMMAND prints, compared line by line (progress lines and
  durations aside): ``make demo`` in ``make test``, the others in ``make docs-check``;
- ``<!-- not-run: REASON -->``: not run by any test, and why (a GPU, a cluster, minutes of CPU…);
- ``<!-- options:begin -->``: generated text (the options table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: marker kinds a block may carry; "not-run" and "output" need their text after the colon
KINDS = ("tested", "tested: cli", "tested: api", "tested: walk", "output", "not-run", "options")
_MARKER = re.compile(r"<!--\s*(.*?)\s*-->")
#: a line of progress (lsakit._progress: "LSA: 3/8 batches (38%), elapsed 0:12, ETA 0:20")
PROGRESS = re.compile(r"\belapsed \d+:\d\d(:\d\d)?\b")
#: a duration as lsakit prints them: "(9 s)", "(1 min 43 s)", "(0.4 s)"
DURATION = re.compile(r"\((\d+ h )?(\d+ min )?\d+(\.\d+)? s\)")


@dataclass(frozen=True)
class Block:
    """One fenced block: its marker (None: none), language, text and the README line it opens."""

    marker: str | None
    language: str
    text: str
    line: int

    @property
    def kind(self) -> str | None:
        """The marker's kind (see the module docstring); None for no or an unknown marker."""
        if self.marker is None:
            return None
        if self.marker in KINDS[:4]:
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
    """Every fenced block of the README (or of ``text``), in order."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        close = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```")
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.fullmatch(before.strip())
        found.append(
            Block(
                marker=marker.group(1) if marker else None,
                language=opening.group(1),
                text="\n".join(lines[i + 1 : close]) + "\n",
                line=i + 1,
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


def compared(lines: list[str]) -> tuple[list[str], list[str]]:
    """Printed lines as compared: a reproduction's completion lines ("  ROW seed S: …") come in
    whichever order its parallel jobs finish, so they are compared as a sorted list."""
    done = re.compile(r"^\s+\S+ seed \d+: ")
    return [x for x in lines if not done.match(x)], sorted(x for x in lines if done.match(x))
