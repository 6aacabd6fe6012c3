"""``lsakit study``: :func:`lsakit.workflows.grid.study` (LSP, RSR/PNI, RACL)."""

from __future__ import annotations

from lsakit.cli._app import app, out
from lsakit.cli._derive import options_command
from lsakit.config.commands import StudyOptions

DOC = """Run a companion-method study (LSP, RSR/PNI, RACL): every row trained with the one
trainer, evaluated alike, then results.json, report.md and accuracy.png. Finished runs are
reused."""


def run(options: StudyOptions) -> None:
    from lsakit.experiments.studies import load_study
    from lsakit.workflows.grid import study, study_dir

    given = options.given()
    study(log=out.print, **given)
    root = study_dir(options, load_study(options.name).study)
    out.print(f"wrote {root / 'results.json'}, {root / 'report.md'}, {root / 'accuracy.png'}")


options_command(app, "study", StudyOptions, run, DOC)
