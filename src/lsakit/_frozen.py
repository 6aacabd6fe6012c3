"""The one base of lsakit's immutable result records."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FrozenModel(BaseModel):
    """A pydantic model that cannot be changed after validation and refuses unknown fields.

    Every part of a results file (and :class:`~lsakit._results.JsonResult`, the file itself)
    derives from it, so a result read back is exactly what was written.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


__all__ = ["FrozenModel"]
