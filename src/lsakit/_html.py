"""HTML for Jupyter's display of lsakit's results: small tables, every text escaped.

Each result class builds its cells (strings) and calls :func:`table`; its ``_repr_html_`` returns
the HTML. A leaf of the package: it imports no lsakit module, so any result module may use it.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence

#: The style of a marked row (e.g. an MVL layer): what the terminal's table prints in bold red.
MARKED_STYLE = "color: #b00000; font-weight: bold"


def number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``—`` for None (nothing measured).

    Args:
        value: the number, or None.
        digits: decimals shown.

    Returns:
        The text of a table cell.
    """
    return "—" if value is None else f"{value:.{digits}f}"


def mean_std(mean: float | None, std: float | None, missing: str = "—") -> str:
    """``mean±std`` (3 and 2 decimals, as the terminal's tables); ``missing`` when ``mean`` is None.

    Args:
        mean: the mean, or None where nothing was measured.
        std: its standard deviation (None: 0).
        missing: the text for no mean.

    Returns:
        The text of a table cell.
    """
    return missing if mean is None else f"{mean:.3f}±{std or 0.0:.2f}"


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, with an ``s`` unless ``n`` is 1 (``1 layer``, ``12 layers``).

    Args:
        n: how many.
        noun: the singular noun (one whose plural adds ``s``).

    Returns:
        The phrase.
    """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    caption: str = "",
    foot: Sequence[Sequence[str]] = (),
    marked: Collection[int] = (),
    text_columns: int = 1,
) -> str:
    """One HTML table: a caption, a header row, the body rows and a footer section.

    Every text is escaped (:func:`html.escape`), so names and labels show as they are.

    Args:
        header: the column titles.
        rows: the body, one sequence of cell texts per row (as many as ``header``).
        caption: a title above the table (none when empty).
        foot: rows of a final section (e.g. totals), drawn below a rule.
        marked: indices of body rows to highlight (:data:`MARKED_STYLE`).
        text_columns: how many leading columns hold text (left-aligned); the others hold numbers
            and are right-aligned.

    Returns:
        The ``<table>`` element.
    """

    def cells(values: Sequence[str], tag: str) -> str:
        return "".join(
            f'<{tag} style="text-align: {"left" if k < text_columns else "right"}">'
            f"{html.escape(str(value))}</{tag}>"
            for k, value in enumerate(values)
        )

    def body(section: Sequence[Sequence[str]], highlighted: Collection[int]) -> str:
        return "".join(
            (f'<tr style="{MARKED_STYLE}">' if i in highlighted else "<tr>")
            + cells(row, "td")
            + "</tr>"
            for i, row in enumerate(section)
        )

    parts = ['<table class="lsakit">']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append(f"<thead><tr>{cells(header, 'th')}</tr></thead>")
    parts.append(f"<tbody>{body(rows, marked)}</tbody>")
    if foot:
        parts.append(f'<tfoot style="border-top: 1px solid">{body(foot, ())}</tfoot>')
    parts.append("</table>")
    return "".join(parts)


def paragraph(text: str) -> str:
    """A ``<p>`` of escaped text (a note under a table).

    Args:
        text: the plain text.

    Returns:
        The element.
    """
    return f"<p>{html.escape(text)}</p>"


def block(*parts: str) -> str:
    """Tables and paragraphs, in order, in one ``<div>``: the whole ``_repr_html_`` of a result.

    Args:
        *parts: HTML of :func:`table` and :func:`paragraph`.

    Returns:
        The element.
    """
    return '<div class="lsakit-result">' + "".join(parts) + "</div>"
