"""The genotype format: :class:`Genotype`, the published RACL cell, and reading genotypes.

A :class:`Genotype` is DARTS's format (Liu et al., ICLR 2019, ``genotypes.py``): per cell type a
list of (op, input) pairs, two per intermediate node (node j's inputs are 0 = c_{k−2},
1 = c_{k−1}, 2 + i = node i < j), and the nodes concatenated as the cell output; it checks its
content and converts to and from JSON.

:data:`RACL_PUBLISHED` is the cell the paper published (it also circulates in other
repositories' ``genotypes.py``); it uses ``sep_conv_5x5`` and ``dil_conv_3x3``, outside the small
search space, which :class:`~lsakit.nas.genotype.GenotypeNetwork` builds all the same.
:func:`load_genotype` reads a genotype from a name in :data:`NAMED_GENOTYPES`, JSON
text or a JSON file; :func:`portable_genotype_kwargs` makes a checkpoint's arguments hold the
genotype itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsakit.errors import ConfigError
from lsakit.nas.ops import OP_NAMES

#: One edge of a genotype: (op name, input index).
GenotypeEdge = tuple[str, int]


def _edges(value: object, field: str) -> tuple[GenotypeEdge, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"genotype {field} must be a list of [op, input] pairs, got {value!r}")
    edges: list[GenotypeEdge] = []
    for k, item in enumerate(value):
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise ConfigError(f"genotype {field}[{k}] must be an [op, input] pair, got {item!r}")
        op, source = item[0], item[1]
        if not isinstance(op, str) or op not in OP_NAMES:
            raise ConfigError(
                f"genotype {field}[{k}] has unknown op {op!r}; known: {', '.join(OP_NAMES)}"
            )
        node = k // 2
        if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source < node + 2:
            raise ConfigError(
                f"genotype {field}[{k}] (node {node}) reads input {source!r}; node {node} can "
                f"read inputs 0..{node + 1} (0, 1: the cell inputs, 2 + i: node i)"
            )
        edges.append((op, source))
    if len(edges) % 2:
        raise ConfigError(f"genotype {field} has {len(edges)} edges; DARTS cells take 2 per node")
    return tuple(edges)


def _concat(value: object, field: str, nodes: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"genotype {field} must be a list of node indices, got {value!r}")
    items = tuple(value)
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int) or not 2 <= i < nodes + 2:
            raise ConfigError(
                f"genotype {field} must list intermediate nodes in [2, {nodes + 2}), got {items!r}"
            )
    if len(set(items)) != len(items):
        raise ConfigError(f"genotype {field} lists a node twice: {items!r}")
    return items


@dataclass(frozen=True)
class Genotype:
    """A DARTS genotype: normal and reduction cells as (op, input) pairs, two per node.

    ``reduce`` may be empty (a search without reduction cells); lists are stored as tuples.
    """

    normal: tuple[GenotypeEdge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[GenotypeEdge, ...] = ()
    reduce_concat: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        normal = _edges(self.normal, "normal")
        if not normal:
            raise ConfigError("genotype normal is empty; a cell needs at least one node")
        reduce = _edges(self.reduce, "reduce")
        object.__setattr__(self, "normal", normal)
        object.__setattr__(self, "reduce", reduce)
        object.__setattr__(
            self, "normal_concat", _concat(self.normal_concat, "normal_concat", len(normal) // 2)
        )
        object.__setattr__(
            self, "reduce_concat", _concat(self.reduce_concat, "reduce_concat", len(reduce) // 2)
        )
        if not self.normal_concat or bool(reduce) != bool(self.reduce_concat):
            raise ConfigError(
                "genotype concat lists must name the output nodes of every cell type it defines"
            )

    def cell(self, kind: str) -> tuple[tuple[GenotypeEdge, ...], tuple[int, ...]]:
        """(edges, concat) of ``"normal"`` or ``"reduce"``.

        Args:
            kind: ``"normal"`` or ``"reduce"`` (anything else raises ConfigError).

        Returns:
            ``(edges, concat)``: the cell's (op, input) pairs, two per node, and the indices of
            the nodes concatenated as its output (both empty for an absent reduce cell).
        """
        if kind == "normal":
            return self.normal, self.normal_concat
        if kind == "reduce":
            return self.reduce, self.reduce_concat
        raise ConfigError(f"cell kind must be normal or reduce, got {kind!r}")

    def nodes(self, kind: str = "normal") -> int:
        """Intermediate nodes of a cell type (two edges each).

        Args:
            kind: ``"normal"`` or ``"reduce"``.

        Returns:
            The number of intermediate nodes (0 for an absent reduce cell).
        """
        return len(self.cell(kind)[0]) // 2

    def with_reduce_from_normal(self) -> Genotype:
        """This genotype with the normal cell also used as the reduction cell.

        A search without reduction cells (the small MNIST variant) yields no reduce cell; a
        retrained network that downsamples can reuse the normal cell, its edges from the cell
        inputs then having stride 2 (an explicit choice, never made silently).

        Returns:
            A new genotype whose ``reduce`` and ``reduce_concat`` are ``normal`` and
            ``normal_concat`` (an existing reduce cell is replaced).
        """
        return Genotype(
            normal=self.normal,
            normal_concat=self.normal_concat,
            reduce=self.normal,
            reduce_concat=self.normal_concat,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: lists of [op, input] pairs and of node indices.

        Returns:
            A dict of lists: ``normal`` (``[op, input]`` pairs), ``normal_concat`` (node
            indices), ``reduce`` and ``reduce_concat`` (both empty without a reduce cell).
        """
        return {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """Inverse of :meth:`to_dict` (``reduce`` keys optional); ConfigError on bad content.

        Args:
            data: a mapping with ``normal`` and ``normal_concat`` and optionally ``reduce`` and
                ``reduce_concat``; other keys are refused.

        Returns:
            The checked genotype.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a genotype must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {"normal", "normal_concat", "reduce", "reduce_concat"})
        if unknown or "normal" not in data or "normal_concat" not in data:
            raise ConfigError(
                f"a genotype needs normal and normal_concat (and optionally reduce, "
                f"reduce_concat); unknown keys: {unknown or 'none'}"
            )
        return cls(
            normal=data["normal"],
            normal_concat=data["normal_concat"],
            reduce=data.get("reduce", ()),
            reduce_concat=data.get("reduce_concat", ()),
        )

    def to_json(self) -> str:
        """The genotype as a JSON string (:meth:`to_dict`).

        Returns:
            One line of JSON text.
        """
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        """Parse :meth:`to_json` output.

        Args:
            text: JSON text of a genotype's dict (ConfigError when it is not valid JSON or not a
                valid genotype).

        Returns:
            The checked genotype.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"genotype JSON is not valid: {err}") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        """DARTS's ``Genotype(normal=[('sep_conv_3x3', 0), …], normal_concat=[2, …], …)``."""
        return (
            f"Genotype(normal={list(self.normal)}, normal_concat={list(self.normal_concat)}, "
            f"reduce={list(self.reduce)}, reduce_concat={list(self.reduce_concat)})"
        )


#: The cell published with RACL (Dong et al., arXiv:2009.00902).
RACL_PUBLISHED = Genotype(
    normal=(
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 3),
        ("sep_conv_3x3", 3),
        ("skip_connect", 4),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 1),
        ("avg_pool_3x3", 0),
        ("dil_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 2),
        ("dil_conv_3x3", 3),
    ),
    reduce_concat=(2, 3, 4, 5),
)


#: Genotypes known by name to :func:`~lsakit.nas.genotype.genotype_network`.
NAMED_GENOTYPES: dict[str, Genotype] = {"racl_published": RACL_PUBLISHED}


def load_genotype(spec: str | Genotype) -> Genotype:
    """A genotype from a name in :data:`NAMED_GENOTYPES`, a JSON text or a JSON file.

    A JSON file may hold the genotype itself or a search result (its ``"genotype"`` key), so
    ``result.json`` written from :meth:`~lsakit.nas.search.SearchResult.to_dict` works as is.

    Args:
        spec: a :class:`Genotype` (returned as is), a name in :data:`NAMED_GENOTYPES`, JSON text
            (starting with ``{``) or the path of a JSON file.

    Returns:
        The checked genotype; ConfigError when ``spec`` is none of these or not valid.
    """
    if isinstance(spec, Genotype):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"genotype must be a name, JSON text or a JSON file, got {spec!r}")
    if spec in NAMED_GENOTYPES:
        return NAMED_GENOTYPES[spec]
    text = spec
    if not spec.lstrip().startswith("{"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(
                f"genotype {spec!r} is neither a known name ({', '.join(NAMED_GENOTYPES)}), "
                f"JSON text, nor an existing file"
            )
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"genotype JSON is not valid: {err}") from None
    if isinstance(data, Mapping) and "genotype" in data:
        data = data["genotype"]
    return Genotype.from_dict(data)


def portable_genotype_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with a genotype file replaced by its JSON text: a checkpoint must not depend on a
    file that may move (a known name stays a name; JSON text is normalised)."""
    spec = kwargs.get("genotype")
    if isinstance(spec, str) and spec not in NAMED_GENOTYPES:
        return {**kwargs, "genotype": json.dumps(load_genotype(spec).to_dict())}
    return kwargs
