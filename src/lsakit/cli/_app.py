"""The ``lsakit`` application: its root options, its consoles and its entry point.

Every user error is an :class:`~lsakit.errors.LsakitError`: printed as one ``error: …`` line on
stderr with exit code 2, no traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from lsakit import __version__
from lsakit.errors import LsakitError

app = typer.Typer(
    name="lsakit",
    help="Layer-level adversarial robustness: Layer Sustainability Analysis (LSA) and friends.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are wide: when output is not a terminal (logs, CI), do not wrap them at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def say(text: str) -> None:
    """A workflow's line, printed as text (no markup, no highlighting)."""
    out.print(text, markup=False, highlight=False)


def main_rank(device: Any) -> bool:
    """Under torchrun: join the process group (:func:`lsakit.workflows._common.main_rank`);
    only rank 0 prints. True on rank 0."""
    from lsakit.workflows._common import main_rank as joined

    main = joined(device)
    out.quiet = not main
    return main


def _version(value: bool) -> None:
    if value:
        out.print(f"lsakit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch. Use 1 for small models on a busy machine: "
            "oversubscribed threads can make them many times slower.",
            show_default="torch's, one per core",
        ),
    ] = None,
    numerics_mode: Annotated[
        str | None,
        typer.Option(
            "--numerics",
            help="default (each math library's fastest path on this CPU) or portable (MKL, "
            "ATen and oneDNN pinned: the same seed gives the same numbers on x86-64 CPUs of "
            "another make, at the same --threads; recorded in results.json).",
            show_default="$LSAKIT_NUMERICS, else default",
        ),
    ] = None,
) -> None:
    """lsakit: which layers of a network break under adversarial attack, and how to fix them."""
    if numerics_mode is not None:  # first: the libraries read their paths at their first use
        from lsakit import numerics

        numerics.use(numerics_mode)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning user errors into one line and exit 2.

    Typer's standalone mode already handles usage errors (exit 2), --help and Ctrl-C; everything
    else that escapes a command lands here.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="lsakit")
    except LsakitError as e:
        if debug:
            raise
        # escape: a message's [brackets] (e.g. lsakit[mlflow]) are text, not rich markup
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:
        if debug:
            raise
        err.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {e} (run with --debug for the "
            f"traceback, and please report it)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
