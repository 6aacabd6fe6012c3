"""Sphinx configuration of lsakit's documentation site (`make docs`).

Sphinx, not mkdocs: lsakit's docstrings are reStructuredText (roles such as :class:`LayerProbe`,
Google-style ``Args:``/``Returns:`` sections), which autodoc + napoleon render and cross-link as
written, and ``sphinx-build -W`` turns every broken reference, malformed docstring and missing
parameter (``_ext/lsakit_docs.py``) into an error. Pages are Markdown (MyST); tutorials are Jupyter
notebooks executed at build time by myst-nb.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import lsakit  # noqa: E402

project = "lsakit"
author = "the lsakit developers"
copyright = "2026, the lsakit developers"
release = lsakit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "lsakit_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]

# autodoc: signatures with their type hints, members in source order, each public name once.
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_inherit_docstrings = True
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# Notebooks run at every build, in a fresh kernel each, and any error fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# Sphinx's smart quotes would turn the "--" of an option named in prose (--out, --jobs) into an
# en dash that no shell accepts; quotes and ellipses only.
smartquotes_action = "qe"

html_theme = "furo"
html_title = f"lsakit {release}"
html_static_path: list[str] = []
