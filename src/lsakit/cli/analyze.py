"""``lsakit analyze``: Algorithm 2 (:func:`lsakit.workflows.analyze`), its table and files."""

from __future__ import annotations

from lsakit.cli._app import app, main_rank, out, say
from lsakit.cli._derive import options_command
from lsakit.config.workflows import AnalyzeOptions


def run(options: AnalyzeOptions) -> None:
    from lsakit.cli.tables import print_lsa
    from lsakit.train import resolve_device
    from lsakit.workflows.analyze import FIGURE_FILE, RESULT_FILE, analyze, run_dir

    main_rank(resolve_device(options.device))
    result = analyze(log=say, **options.given())
    chosen = result.meta["mvl"]
    mvl = [layer for layer in result.layers if layer.label in set(chosen["layers"])]
    print_lsa(result, mvl)
    out.print(
        f"MVL ({chosen['perturbation']}, η = {chosen['eta']:g}): "
        + (", ".join(str(layer) for layer in mvl) if mvl else "none above the cut-off")
    )
    folder = options.resume or run_dir(options)
    out.print(f"wrote {folder / RESULT_FILE} and {folder / FIGURE_FILE}")


options_command(
    app,
    "analyze",
    AnalyzeOptions,
    run,
    "Layer Sustainability Analysis: per-layer measures under noise and attacks, and the MVL list.",
)
