"""The workflows of the command line as Python calls: each takes an ``nn.Module`` or a model
spec, checks every argument before any work, leaves the global random generators as it found
them, and takes the same options, with the same defaults, as its command (one declaration each:
:mod:`lsakit.config.workflows`).

- :func:`analyze`: Algorithm 2, ``lsakit analyze``.
- :func:`evaluate`: the paper's protocol or an attack suite, ``lsakit evaluate``.
- :func:`reproduce`: a table of the paper over seeds, ``lsakit reproduce``.
- :func:`study`: a companion-method study, ``lsakit study``.
"""

from __future__ import annotations

from lsakit.workflows.analyze import analyze
from lsakit.workflows.evaluate import evaluate
from lsakit.workflows.grid import reproduce, study

__all__ = ["analyze", "evaluate", "reproduce", "study"]
