"""The ``lsakit`` command line: one thin module per command, each parsing its options and
printing what a library call returns (the workflows live in :mod:`lsakit.workflows`).

Every user error is an :class:`~lsakit.errors.LsakitError`: printed as one ``error: …`` line on
stderr with exit code 2, no traceback unless ``--debug`` is given.
"""

from __future__ import annotations

from lsakit.cli import analyze, evaluate, listing, prune, reproduce, search, study, train
from lsakit.cli._app import app, main

__all__ = [
    "analyze",
    "app",
    "evaluate",
    "listing",
    "main",
    "prune",
    "reproduce",
    "search",
    "study",
    "train",
]
