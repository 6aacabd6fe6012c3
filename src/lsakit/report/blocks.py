"""The documents' building blocks and their two renderings: Markdown and self-contained HTML.

A report (:mod:`lsakit.report.reproduction`, :mod:`lsakit.report.sensitivity`) is one list of
blocks — headings, paragraphs, bullets, tables, figures, folded code — rendered by
:func:`render_markdown` (GitHub-flavoured, figures linked by relative path) and
:func:`render_html` (one page: inline CSS, the PNGs embedded as base64 ``data:`` URIs, no script,
no external resource), so both documents always say the same thing; every text is escaped for
its format.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

#: A table cell: its text, or (text, CSS class) for cells the HTML colours (Δ signs).
Cell: TypeAlias = str | tuple[str, str]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Cell]]
    #: HTML only: a first header row of (text, column span) groups, and the header row under it
    #: (default ``header``) — the groups carry what Markdown has to repeat in every column name.
    groups: list[tuple[str, int]] = field(default_factory=list)
    html_header: list[str] | None = None
    css: str = ""


@dataclass(frozen=True)
class Image:
    path: Path  # relative to the report's directory
    caption: str


@dataclass(frozen=True)
class Code:
    summary: str
    text: str


Block: TypeAlias = Heading | Paragraph | Bullets | Table | Image | Code


def _md_text(text: str) -> str:
    # Results text is data, not markup: no raw HTML tag reaches the Markdown renderer. A bare
    # "&" is left alone so "R&G" stays readable in the raw file.
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(cell: Cell) -> str:
    text = cell if isinstance(cell, str) else cell[0]
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown (figures linked by relative path)."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {_md_text(block.text)}")
        elif isinstance(block, Paragraph):
            parts.append(_md_text(block.text))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {_md_text(item)}" for item in block.items))
        elif isinstance(block, Table):
            lines = [
                "| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                "|" + "|".join("---" for _ in block.header) + "|",
            ]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Image):
            parts.append(
                f"![{_md_cell(block.caption)}]({block.path.as_posix()})\n\n*{_md_text(block.caption)}*"
            )
        else:
            fence = "```"
            while fence in block.text:
                fence += "`"
            parts.append(
                f"<details><summary>{_md_text(block.summary)}</summary>\n\n{fence}json\n{block.text}\n{fence}\n\n</details>"
            )
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; display: block;
        max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.pos { color: #1a7f37; } td.neg { color: #c62828; }
table.results { font-size: 0.75em; font-variant-numeric: tabular-nums; }
table.results th, table.results td { padding: 0.15em 0.3em; overflow-wrap: normal; }
table.results td:first-child { white-space: nowrap; }
table.results tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 0.8em; font-size: 0.8em; white-space: pre-wrap;
      overflow-wrap: anywhere; }
"""


def _html_cell(tag: str, cell: Cell, span: int = 1) -> str:
    text, css = (cell, "") if isinstance(cell, str) else cell
    attrs = f' class="{html.escape(css)}"' if css else ""
    attrs += f' colspan="{span}"' if span > 1 else ""
    # "mean ± std" may wrap in a narrow column, but only before the ±, never after it.
    return f"<{tag}{attrs}>{html.escape(text).replace('± ', '±&nbsp;')}</{tag}>"


def render_html(blocks: Sequence[Block], root: Path, *, title: str) -> str:
    """The blocks as one self-contained HTML page; figures (relative to ``root``) embedded."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{html.escape(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            css = f' class="{html.escape(block.css)}"' if block.css else ""
            head = ""
            if block.groups:
                head += "<tr>" + "".join(_html_cell("th", t, n) for t, n in block.groups) + "</tr>"
            names = block.html_header or block.header
            head += "<tr>" + "".join(_html_cell("th", h) for h in names) + "</tr>"
            rows = "".join(
                "<tr>" + "".join(_html_cell("td", c) for c in row) + "</tr>" for row in block.rows
            )
            body.append(f"<table{css}><thead>{head}</thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            encoded = base64.b64encode((root / block.path).read_bytes()).decode("ascii")
            caption = html.escape(block.caption)
            body.append(
                f'<figure><img src="data:image/png;base64,{encoded}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        else:
            body.append(
                f"<details><summary>{html.escape(block.summary)}</summary>"
                f"<pre>{html.escape(block.text)}</pre></details>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
