"""One JSON round-trip for every results file (``lsa.json``, ``evaluation.json``, ``results.json``).

A result is a frozen pydantic model; :class:`JsonResult` gives it ``to_json``/``from_json``/
``save``/``load`` with atomic writes and one-line :class:`~lsakit.errors.ResultsError` messages that
name the file and say how to rewrite it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

from pydantic import ValidationError
from typing_extensions import Self

from lsakit._frozen import FrozenModel
from lsakit._io import atomic_write_text
from lsakit.errors import ResultsError


class JsonResult(FrozenModel):
    """Base class of the results files. Subclasses set ``kind``, ``rewrite`` and ``result_format``."""

    #: what the file is, for messages ("an LSA result")
    kind: ClassVar[str] = "a result"
    #: how the user rewrites it ("re-run `lsakit analyze --out DIR`")
    rewrite: ClassVar[str] = "re-run the command that wrote it"
    #: the value of the ``format`` field this version reads
    result_format: ClassVar[int] = 1

    def to_json(self) -> str:
        """JSON text of the whole result."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str, *, source: str = "<string>") -> Self:
        """Parse JSON text; malformed, foreign or inconsistent text raises ResultsError."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ResultsError(
                f"{source} is not valid JSON ({e.msg} at line {e.lineno}); {cls.rewrite}"
            ) from None
        if isinstance(data, dict) and data.get("format") not in (None, cls.result_format):
            raise ResultsError(
                f"{source} has result format {data.get('format')!r}; this lsakit reads format "
                f"{cls.result_format} — {cls.rewrite}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "top level"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ResultsError(
                f"{source} is not {cls.kind} ({where}: {message}); {cls.rewrite}"
            ) from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result as JSON, atomically."""
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a result written by :meth:`save`."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ResultsError(f"results file {p} not found; {cls.rewrite}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ResultsError(f"cannot read results file {p}: {e}") from None
        return cls.from_json(text, source=str(p))
