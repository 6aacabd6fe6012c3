"""What the site generates at build time, and the docstring check that fails the build.

* **The API reference** (``api/``): one page per public module of :data:`PUBLIC_MODULES`, listing
  its ``__all__``, and one page per public function or class, rendered by autodoc from the
  docstrings. ``__all__`` is the one declaration of what is public: a name added there appears
  here, and is checked.
* **The docstring check**: every public function and method, and every class with a constructor
  of its own, documents each parameter (``Args:``) and, unless it returns None, what it returns
  (``Returns:``/``Yields:``). A missing one is a Sphinx warning, which ``-W`` makes an error.
* **The reproductions** (``reproductions.md``): the paper's tables beside ours, rendered by
  :mod:`lsakit.report` from the ``results.json`` files under ``docs/results/``.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import re
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: The modules whose ``__all__`` is lsakit's public API, in the reference's order.
PUBLIC_MODULES: tuple[tuple[str, str], ...] = (
    ("lsakit", "Layer Sustainability Analysis: probes, measures, results"),
    ("lsakit.workflows", "The commands as Python calls"),
    ("lsakit.perturb", "Attacks and noise"),
    ("lsakit.train", "Training, AT-LR and the layer-wise regularizer"),
    ("lsakit.evaluate", "The paper's evaluation protocol"),
    ("lsakit.suite", "Attack suites"),
    ("lsakit.masking", "Gradient-masking checks"),
    ("lsakit.data", "Data sets"),
    ("lsakit.models", "Models, model specs and pretrained weights"),
    ("lsakit.checkpoint", "Checkpoints"),
    ("lsakit.defenses", "RSR and PNI: noise injection and sparsity"),
    ("lsakit.nas", "RACL: Lipschitz-constrained architecture search"),
    ("lsakit.report", "Figures and reports"),
    ("lsakit.experiments", "Reproductions, studies and grids"),
    ("lsakit.config", "Options, presets and training configurations"),
)

API_DIR = "api"
#: The reproductions' results files (committed) and the pages generated from them.
RESULTS_DIR = "results"
REPRODUCTIONS_DIR = "reproductions"


def _is_documented_alone(obj: Any) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    first = doc.strip().split("\n\n", 1)[0].replace("\n", " ").strip()
    return first.replace("|", "\\|")


def _title(text: str, mark: str = "=") -> str:
    return f"{text}\n{mark * len(text)}\n"


def write_api_pages(app: Sphinx) -> None:
    """Write ``api/`` afresh from :data:`PUBLIC_MODULES` (one page per module and per name)."""
    root = Path(app.srcdir) / API_DIR
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    canonical: dict[int, str] = {}
    index = [_title("API reference"), ".. toctree::", "   :maxdepth: 1", ""]
    for module_name, caption in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names = list(getattr(module, "__all__", ()))
        if not names:
            raise RuntimeError(f"{module_name} has no __all__: the API reference lists it")
        index.append(f"   {module_name}")
        page = [_title(module_name), f"{caption}.", "", f".. automodule:: {module_name}",
                "   :no-members:", "", ".. list-table::", "   :widths: 30 70", ""]  # fmt: skip
        alone, data = [], []
        for name in names:
            obj = getattr(module, name)
            full = f"{module_name}.{name}"
            if not _is_documented_alone(obj):
                data.append(name)
                continue
            target = canonical.setdefault(id(obj), full)
            page += [f"   * - :py:obj:`{name} <{target}>`", f"     - {_summary(obj) or ' '}"]
            if target == full:
                alone.append(full)
                directive = "autoclass" if inspect.isclass(obj) else "autofunction"
                (root / f"{full}.rst").write_text(
                    _title(full) + f"\n.. {directive}:: {full}\n", encoding="utf-8"
                )
        if data:
            page += ["", _title("Constants and types", "-")]
            for name in data:
                page += [f".. autodata:: {module_name}.{name}", "   :no-value:", ""]
        page += ["", ".. toctree::", "   :hidden:", ""] + [f"   {full}" for full in alone]
        (root / f"{module_name}.rst").write_text("\n".join(page) + "\n", encoding="utf-8")
    (root / "index.rst").write_text("\n".join(index) + "\n", encoding="utf-8")


def write_reproduction_pages(app: Sphinx) -> None:
    """One page per ``results/NAME.json``: the report's text, rendered by :mod:`lsakit.report`."""
    from lsakit.experiments import ExperimentResult
    from lsakit.report import reproduction_markdown
    from lsakit.report.blocks import render_markdown
    from lsakit.report.sensitivity import sensitivity_blocks

    by_experiment: dict[str, dict[str, ExperimentResult]] = {}

    source = Path(app.srcdir) / RESULTS_DIR
    root = Path(app.srcdir) / REPRODUCTIONS_DIR
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for path in sorted(source.glob("*.json")):
        result = ExperimentResult.load(path)
        text = reproduction_markdown(result)
        note = (
            f"\n\n*Generated at build time from `docs/results/{path.name}`, the `results.json` "
            f"that `lsakit reproduce` wrote.*\n"
        )
        (root / f"{path.stem}.md").write_text(text.rstrip() + note, encoding="utf-8")
        by_experiment.setdefault(result.experiment, {})[result.protocol] = result
    for experiment, results in by_experiment.items():
        if len(results) > 1:  # the claims of the paper under each protocol, side by side
            text = f"# Reproduction: {experiment}, protocol sensitivity\n\n" + render_markdown(
                sensitivity_blocks(results)
            )
            (root / f"{experiment}-sensitivity.md").write_text(text, encoding="utf-8")


# -- the docstring check -------------------------------------------------------------------------

_PARAM = re.compile(r"^:(?:param|keyword)\s+(?:[^:]*\s)?\\?\*{0,2}\\?\*?(\w+)\s*:")
_RETURNS = re.compile(r"^:(returns?|Yields?|yields?):")
_NO_RETURN = {"None", "NoReturn", "Never", "typing.NoReturn"}


def _own_constructor(cls: type) -> Any:
    """The class's ``__init__`` when it is written in lsakit (not generated, not inherited)."""
    if dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum) or hasattr(cls, "_fields"):
        return None
    if hasattr(cls, "model_fields"):  # pydantic: the fields are the parameters, documented there
        return None
    init = cls.__dict__.get("__init__")
    if init is None or not getattr(init, "__module__", "").startswith("lsakit"):
        return None
    return init


def _parameters(function: Any) -> tuple[list[str], str | None]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return [], None
    names = [name for name in signature.parameters if name not in ("self", "cls")]
    annotation = signature.return_annotation
    if annotation is inspect.Signature.empty:
        returns = "?"
    else:
        returns = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        returns = "None" if annotation is None else returns
    return names, returns


def problems(what: str, name: str, obj: Any, lines: list[str]) -> list[str]:
    """What the docstring (``lines``, after napoleon) leaves undocumented; empty: nothing."""
    if not name.startswith("lsakit") or what not in ("function", "method", "class"):
        return []
    if what == "class":
        function = _own_constructor(obj)
        if function is None:
            return []
        names, _ = _parameters(function)
        returns: str | None = None  # a constructor returns its instance
    else:
        names, returns = _parameters(obj)
    documented = {m.group(1) for line in lines if (m := _PARAM.match(line.strip()))}
    missing = [n for n in names if n.lstrip("*") not in documented]
    found = []
    if missing:
        found.append("parameter " + ", ".join(missing) + " not documented (Args:)")
    if returns not in (None, *_NO_RETURN) and not any(_RETURNS.match(x.strip()) for x in lines):
        found.append("return value not documented (Returns:)")
    return found


def check_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Warn for each undocumented parameter or return value of a public callable (module doc)."""
    found = problems(what, name, obj, lines)
    if found:
        logger.warning(
            f"{name}: {'; '.join(found)}",
            type="lsakit",
            subtype="docstring",
            location=_location(obj),
        )


def clear_type_docstrings(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """A constant without a ``#:`` comment shows no docstring, not its type's (``dict``'s)."""
    if what in ("data", "attribute") and not inspect.isclass(obj):
        own = inspect.getdoc(type(obj)) or ""
        if own and "\n".join(lines).strip() == own.strip():
            lines.clear()


def public_callables() -> list[tuple[str, str, Any]]:
    """``(what, name, object)`` of every public function, method and class, as autodoc sees them."""
    found: list[tuple[str, str, Any]] = []
    seen: set[int] = set()
    for module_name, _ in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if id(obj) in seen or not _is_documented_alone(obj):
                continue
            seen.add(id(obj))
            full = f"{module_name}.{name}"
            if not inspect.isclass(obj):
                found.append(("function", full, obj))
                continue
            found.append(("class", full, obj))
            for member, value in vars(obj).items():
                if member.startswith("_") or isinstance(value, property):
                    continue
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if inspect.isfunction(value):
                    found.append(("method", f"{full}.{member}", value))
    return found


def undocumented() -> list[str]:
    """The docstring check without a build: one line per public callable that fails it."""
    found: list[str] = []
    for what, name, obj in public_callables():
        missing = problems(what, name, obj, napoleon_lines(what, name, obj))
        if missing:
            found.append(f"{_location(obj)}: {name}: {'; '.join(missing)}")
    return found


def napoleon_lines(what: str, name: str, obj: Any) -> list[str]:
    """The object's docstring as autodoc hands it on: napoleon's reST fields."""
    from sphinx.ext.napoleon import Config, GoogleDocstring

    config = Config(napoleon_use_param=True, napoleon_use_rtype=False, napoleon_use_keyword=True)
    doc = inspect.getdoc(obj) or ""
    return GoogleDocstring(doc, config, what=what, name=name, obj=obj).lines()


def _location(obj: Any) -> str | None:
    try:
        target = inspect.unwrap(obj)
        return f"{inspect.getsourcefile(target)}:{inspect.getsourcelines(target)[1]}"
    except (TypeError, OSError):
        return None


def setup(app: Sphinx) -> dict[str, Any]:
    """The extension: API pages, reproduction pages and the docstring check."""
    app.connect("builder-inited", write_api_pages)
    app.connect("builder-inited", write_reproduction_pages)
    app.connect("autodoc-process-docstring", check_docstring, priority=600)
    app.connect("autodoc-process-docstring", clear_type_docstrings, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    # `python docs/_ext/lsakit_docs.py`: the docstring check alone, in seconds
    found = undocumented()
    print("\n".join(found) or "every public callable documents its parameters and return value")
    raise SystemExit(1 if found else 0)
