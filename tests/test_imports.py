"""The package's import structure: no import cycle, and a configuration layer that is a leaf.

The graph is read from the source (``ast``), not from what an import happens to load: every
``import`` and ``from … import`` anywhere in a module counts — at module level, inside functions
(lazy imports), in ``try``/``if`` blocks — except those under ``if TYPE_CHECKING:``, which never
run. An edge to ``a.b.c`` is also an edge to ``a`` and ``a.b`` (importing a module runs its
packages' ``__init__``), but not from a module to its own parent packages (they are already
importing, or imported, when it runs).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import lsakit

SRC = Path(lsakit.__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- the graph builder


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (a module of the package) at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path.name}:{self.line})"


def discover(root: Path, package: str) -> dict[str, Path]:
    """The modules of ``package`` (a directory under ``root``): dotted name → file.

    A package is its ``__init__.py``; where a module ``x.py`` and a package ``x/`` both exist,
    the package wins, as it does for Python's import system.
    """
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if any(not p.isidentifier() for p in parts):
            continue
        is_init = parts[-1] == "__init__"
        if is_init:
            parts.pop()
        name = ".".join(parts)
        if is_init or name not in modules:
            modules[name] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` (nested ones too), but not under
    ``if TYPE_CHECKING:`` (its ``else`` runs, and counts)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                if isinstance(stmt, ast.Import | ast.ImportFrom):
                    yield stmt
                yield from _import_nodes(stmt)
        elif isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        else:
            yield from _import_nodes(child)


def _existing(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name``, or its longest prefix that is a module (``pkg.mod.attr`` → ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> list[Edge]:
    """The edges from module ``name`` (its file ``path``) to the other modules of ``modules``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    edges: dict[str, Edge] = {}

    def add(target: str | None, line: int) -> None:
        if target is None:
            return
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            module = ".".join(parts[:i])
            if module in modules and module != name and module not in parents:
                edges.setdefault(module, Edge(name, module, path, line))

    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_existing(alias.name, modules), node.lineno)
            continue
        if node.level:  # relative: from . import x, from ..y import z
            base_parts = package.split(".")
            if node.level - 1 > len(base_parts) - 1:
                raise ImportError(f"{path}:{node.lineno}: relative import beyond the package")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        add(_existing(base, modules), node.lineno)
        for alias in node.names:  # from pkg import submodule imports the submodule
            if alias.name != "*" and f"{base}.{alias.name}" in modules:
                add(f"{base}.{alias.name}", node.lineno)
    return list(edges.values())


def import_graph(root: Path, package: str) -> dict[str, list[Edge]]:
    """Module → its edges, for every module of ``package`` under ``root``."""
    modules = discover(root, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: Mapping[str, list[Edge]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(sorted(e.target for e in graph[start]))))
        while work:
            v, successors = work[-1]
            advanced = False
            for w in successors:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(e.target for e in graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def a_cycle(graph: Mapping[str, list[Edge]], component: list[str]) -> list[Edge]:
    """A shortest cycle through the component's first module, as the edges that close it."""
    members = set(component)
    start = component[0]
    came: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for edge in sorted(graph[v], key=lambda e: e.target):
            if edge.target not in members:
                continue
            if edge.target == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came[path[0].source])
                return path
            if edge.target not in came:
                came[edge.target] = edge
                queue.append(edge.target)
    raise AssertionError(f"{component} is not a cycle")


def describe_cycles(graph: Mapping[str, list[Edge]]) -> str:
    """One paragraph per cycle: its modules, and one cycle through them, edge by edge."""
    lines = []
    for component in strongly_connected(graph):
        lines.append(f"import cycle among {', '.join(component)}:")
        lines.extend(f"    {edge}" for edge in a_cycle(graph, component))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the tests


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(SRC, "lsakit")
    assert "lsakit.config" in graph and "lsakit.train.trainer" in graph
    cycles = describe_cycles(graph)
    assert not cycles, "\n" + cycles


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_the_graph_builder_finds_each_kind_of_import_and_a_cycle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.low import VALUE\n",
            "pkg/low.py": "import os\nVALUE = 1\n",
            # a lazy (function-level) import closes the cycle a -> b -> a
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "def f():\n    from . import a\n    return a\n",
            # TYPE_CHECKING imports never run; their else branch does
            "pkg/c.py": """\
                from typing import TYPE_CHECKING
                import typing
                if TYPE_CHECKING:
                    from pkg import a
                else:
                    from pkg import low
                if typing.TYPE_CHECKING:
                    import pkg.b
                """,
            "pkg/sub/__init__.py": "",
            # relative imports, `import a.b.c` (its packages too), an attribute, try blocks
            "pkg/sub/d.py": """\
                from __future__ import annotations
                try:
                    from ..low import VALUE
                except ImportError:
                    pass
                import pkg.sub.e
                from pkg.c import NAME
                from .. import sub
                """,
            "pkg/sub/e.py": "class C:\n    def m(self):\n        import pkg.sub\n",
            "pkg/not-a-module.py": "import pkg.a\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    targets = {name: sorted(e.target for e in edges) for name, edges in graph.items()}
    assert targets == {
        "pkg": ["pkg.low"],
        "pkg.low": [],
        "pkg.a": ["pkg.b"],
        "pkg.b": ["pkg.a"],
        "pkg.c": ["pkg.low"],
        "pkg.sub": [],
        "pkg.sub.d": ["pkg.c", "pkg.low", "pkg.sub.e"],
        "pkg.sub.e": [],  # its own package
    }
    assert strongly_connected(graph) == [["pkg.a", "pkg.b"]]
    assert describe_cycles(graph) == (
        "import cycle among pkg.a, pkg.b:\n    pkg.a -> pkg.b (a.py:1)\n    pkg.b -> pkg.a (b.py:2)"
    )


def test_a_package_import_is_its_init_and_a_longer_cycle_is_found(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/x/__init__.py": "from pkg.x.inner import f\n",
            "pkg/x/inner.py": "def f():\n    import pkg.y.leaf\n",
            "pkg/y/__init__.py": "",
            "pkg/y/leaf.py": "from pkg.z import g\n",
            "pkg/z.py": "from pkg.x import inner\ndef g(): ...\n",
            "pkg/w.py": "import pkg.z\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    # pkg.x (its __init__) -> pkg.x.inner -> pkg.y.leaf (lazily) -> pkg.z -> pkg.x; pkg.y, the
    # package of pkg.y.leaf, is imported too but imports nothing back
    assert strongly_connected(graph) == [["pkg.x", "pkg.x.inner", "pkg.y.leaf", "pkg.z"]]
    cycle = a_cycle(graph, strongly_connected(graph)[0])
    assert [e.source for e in cycle] == ["pkg.x", "pkg.x.inner", "pkg.y.leaf", "pkg.z"]
    assert cycle[-1].target == "pkg.x"


# --------------------------------------------------------------------------- the config leaf

#: Top-level packages ``lsakit.config`` may load besides the standard library.
THIRD_PARTY = {"pydantic", "pydantic_core", "annotated_types", "typing_extensions",
               "typing_inspection", "yaml", "_yaml"}  # fmt: skip
#: Interpreter internals loaded on the way: the Cython runtime of PyYAML's C extension, and the
#: platform's sysconfig data.
INTERNALS = ("cython_runtime", "_cython_", "_sysconfigdata_")


def _new_modules(script: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _outside_the_leaf(names: list[str]) -> list[str]:
    def allowed(name: str) -> bool:
        top = name.partition(".")[0]
        if top == "lsakit":
            return name in ("lsakit.config", "lsakit.errors") or name.startswith("lsakit.config.")
        return top in sys.stdlib_module_names or top in THIRD_PARTY or top.startswith(INTERNALS)

    return sorted(n for n in names if not allowed(n))


def test_importing_the_config_after_lsakit_loads_nothing_heavy() -> None:
    script = (
        "import json, sys\nimport lsakit\nbefore = set(sys.modules)\nimport lsakit.config\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    assert _outside_the_leaf(_new_modules(script)) == []


def test_the_config_package_alone_imports_only_stdlib_pydantic_yaml_and_errors() -> None:
    """``lsakit/__init__`` imports torch (and, for DEFAULT_ETA, the config): here the parent
    package is an empty stand-in, so what ``lsakit.config`` itself needs is all that loads."""
    script = (
        "import importlib.util, json, sys, types\n"
        "spec = importlib.util.find_spec('lsakit')\n"
        "stand_in = types.ModuleType('lsakit')\n"
        "stand_in.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['lsakit'] = stand_in\n"
        "before = set(sys.modules)\n"
        "import lsakit.config\n"
        "assert lsakit.config.TrainConfig(model='m', dataset='moons').epochs == 10\n"
        "assert lsakit.config.train_config({}).model == 'model_a'\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    new = _new_modules(script)
    assert "lsakit.config.presets" in new and "lsakit.errors" in new
    assert _outside_the_leaf(new) == []


def test_the_command_line_loads_neither_matplotlib_nor_nas_nor_the_trainer() -> None:
    """``lsakit --help`` starts without the heavy parts: they load when a command runs."""
    script = (
        "import json, sys\nimport lsakit.cli\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('matplotlib', "
        "'lsakit.nas', 'lsakit.train', 'lsakit.experiments', 'lsakit.report')))))"
    )
    assert _new_modules(script) == []


def test_the_workflow_options_are_part_of_the_leaf() -> None:
    script = (
        "import json, sys\nimport lsakit\nbefore = set(sys.modules)\n"
        "import lsakit.config.workflows\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    assert _outside_the_leaf(_new_modules(script)) == []
