"""``lsakit reproduce``: :func:`lsakit.workflows.grid.reproduce`, its tables and files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsakit.cli._app import app, out
from lsakit.cli._derive import options_command
from lsakit.config.commands import ReproduceOptions

DOC = """Reproduce a table of the paper: every row over several seeds, results.json and a report.

Finished runs are kept in OUT/runs and reused, so an interrupted reproduction continues.
With --executor ray each (row, seed) is one task on a Ray cluster; results.json and the
report are written here, as in a local run.
"""


def run(options: ReproduceOptions) -> None:
    from lsakit.cli.tables import print_claims, print_reproduction
    from lsakit.workflows.grid import reproduce

    def show(result: Any, target: Path, report: tuple[Path, Path] | None) -> None:
        print_reproduction(result)
        out.print(f"wrote {target / 'results.json'} ({result.seconds:.0f} s)")
        if report is not None:
            out.print(f"wrote {report[0]} and {report[1]}")

    def claims(name: str, results: dict[str, Any], report: tuple[Path, Path]) -> None:
        print_claims(name, results)
        out.print(f"wrote {report[0]} and {report[1]}")

    given = options.given()
    reproduce(log=out.print, on_result=show, on_sensitivity=claims, **given)


options_command(app, "reproduce", ReproduceOptions, run, DOC)
