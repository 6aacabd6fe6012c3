"""Optional packages: the model ecosystems' packages, and importing one with an install hint.

Shared by :mod:`lsakit.models.sources` (torchvision, timm, transformers, robustbench) and
:mod:`lsakit.data.hub` (the ``datasets`` library); below both, so neither imports the other.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

from lsakit._io import one_line
from lsakit.errors import ConfigError

#: Prefixes of the ecosystems, with the package each needs and how to install it.
ECOSYSTEMS: Final[dict[str, tuple[str, str]]] = {
    "torchvision": ("torchvision", "pip install torchvision (the build matching your torch)"),
    "timm": ("timm", "pip install 'lsakit[timm]' (timm needs torchvision)"),
    "hf": ("transformers", "pip install 'lsakit[hf]'"),
    "robustbench": (
        "robustbench",
        "pip install 'lsakit[robustbench]' && pip install --no-deps robustbench==1.1.1",
    ),
}


def import_optional(package: str, why: str, install: str) -> ModuleType:
    """Import ``package`` or raise one ConfigError line saying what to install."""
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] == package:
            raise ConfigError(
                f"{why} needs the {package} package, which is not installed: {install}"
            ) from None
        raise ConfigError(
            f"{why} needs {package}, which is installed but cannot be imported: it needs "
            f"{err.name or err} ({one_line(err)}); install it: "
            f"{ECOSYSTEMS.get(err.name or '', (None, f'pip install {err.name}'))[1]}"
        ) from None
    except ImportError as err:
        raise ConfigError(
            f"{why} needs {package}, which cannot be imported ({one_line(err)}); "
            f"reinstall it: {install}"
        ) from None


__all__ = ["ECOSYSTEMS", "import_optional"]
