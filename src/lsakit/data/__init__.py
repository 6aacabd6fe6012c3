"""Data sets by name: ``load("mnist", "test", batch_size=256)`` → a DataLoader of ``(x, y)``.

x is float32 in [0, 1] (NCHW for images), y int64. Files are looked for in the data directory
(``data_dir`` / ``$LSAKIT_DATA`` / ``~/.cache/lsakit/data``) and downloaded with checksum
verification when missing; see :mod:`lsakit.data.registry` for the options and
:mod:`lsakit.data.moons` for how the two moons are scaled into [0, 1].
"""

from __future__ import annotations

from lsakit.data.moons import MoonsSplit, make_moons_split, moons_scale
from lsakit.data.paths import resolve_data_dir
from lsakit.data.registry import (
    DatasetInfo,
    domain,
    info,
    is_user_dataset,
    load,
    load_tensors,
    names,
)

__all__ = [
    "DatasetInfo",
    "MoonsSplit",
    "domain",
    "info",
    "is_user_dataset",
    "load",
    "load_tensors",
    "make_moons_split",
    "moons_scale",
    "names",
    "resolve_data_dir",
]
