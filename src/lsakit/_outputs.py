"""Selecting the logits from a model's output.

Models may return a tensor, a tuple/list (logits first, by convention) or a dict. Everything that
needs logits (attacks, analysis accuracy, training) goes through :func:`select_logits`, so a model
with a structured output works everywhere once its selector is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import torch

from lsakit.errors import InputError

#: How to find the logits: None (tensor, first element of a tuple, or the "logits" key of a dict),
#: an int (tuple index), a str (dict key), or a callable ``output -> tensor``.
OutputSelector: TypeAlias = int | str | Callable[[Any], torch.Tensor] | None


def select_logits(output: Any, selector: OutputSelector = None) -> torch.Tensor:
    """Return the logits tensor from a model output, following ``selector``."""
    if callable(selector):
        out = selector(output)
    elif isinstance(selector, str):
        if not isinstance(output, Mapping) or selector not in output:
            keys = list(output) if isinstance(output, Mapping) else type(output).__name__
            raise InputError(f"model output has no key {selector!r} (it has {keys}); fix output=")
        out = output[selector]
    elif isinstance(selector, int):
        if not isinstance(output, Sequence) or isinstance(output, torch.Tensor):
            raise InputError(
                f"output={selector} selects a tuple element but the model returned "
                f"{type(output).__name__}; drop output= or pass a key/callable"
            )
        out = output[selector]
    elif isinstance(output, torch.Tensor):
        out = output
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        out = output[0]
    elif isinstance(output, Mapping) and "logits" in output:
        out = output["logits"]
    else:
        raise InputError(
            f"cannot find logits in a model output of type {type(output).__name__}; pass "
            f"output=<index | key | callable> to say where they are"
        )
    if not isinstance(out, torch.Tensor):
        raise InputError(f"the output selector returned {type(out).__name__}, not a tensor")
    return out
