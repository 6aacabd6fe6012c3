"""Speed options for the hardware users have: mixed precision, channels-last, ``torch.compile``.

All are off by default, and nothing here changes a result when they are off.

* Mixed precision (``amp``): ``bf16`` or ``fp16`` autocast (Micikevicius et al. 2018) around the
  model's forwards — the trainer's training forwards and every attack's forward
  (:meth:`lsakit.perturb.Attack._logits`). Losses and logits leave the autocast region in float32.
  fp16 training needs loss scaling (:func:`grad_scaler`); bf16 has float32's exponent range and
  does not. CPU autocast exists for both, but it only pays on GPUs with tensor cores.
* Channels-last (NHWC) memory format for 4-D image batches and conv weights: faster convolutions
  on GPUs with tensor cores (and with oneDNN on some CPUs). A pure layout change: same numbers.
* ``torch.compile`` of the training model (needs a C compiler on CPU; the first steps compile).

Attacks outside training (``lsakit evaluate --amp``, ``lsakit analyze --amp``) read the precision
from :func:`attack_precision`, a context manager, so the clean forwards of an evaluation or an
analysis stay in full precision and only the attacks' forwards are autocast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, get_args

import torch
from torch import Tensor, nn

from lsakit.config.defaults import Amp as Amp
from lsakit.errors import ConfigError

AMP_CHOICES: tuple[str, ...] = get_args(Amp)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: The precision of attack forwards outside training (set by :func:`attack_precision`).
_ATTACK_AMP: ContextVar[str] = ContextVar("lsakit_attack_amp", default="off")


def check_amp(amp: str) -> Amp:
    """``amp`` if it is one of off, bf16, fp16; else a ConfigError naming the choices."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"unknown --amp {amp!r}; use one of {', '.join(AMP_CHOICES)}")
    return amp  # type: ignore[return-value]


def autocast(amp: str, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``amp``'s dtype on ``device``'s type; a no-op context for ``off``."""
    if check_amp(amp) == "off":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=_DTYPES[amp])


def grad_scaler(amp: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 training (gradients would underflow in fp16); None otherwise."""
    if check_amp(amp) != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)


@contextlib.contextmanager
def attack_precision(amp: str) -> Iterator[None]:
    """Run every attack's forwards inside this block under ``amp`` autocast (restored on exit)."""
    token = _ATTACK_AMP.set(check_amp(amp))
    try:
        yield
    finally:
        _ATTACK_AMP.reset(token)


def attack_autocast(device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of an attack forward: as set by :func:`attack_precision`."""
    return autocast(_ATTACK_AMP.get(), device)


def full_precision(logits: Tensor, like: Tensor) -> Tensor:
    """Autocast logits (bf16/fp16) back to the input's float dtype, so losses and their input
    gradients are computed in full precision; anything else unchanged."""
    if logits.dtype in (torch.bfloat16, torch.float16) and like.dtype not in (
        torch.bfloat16,
        torch.float16,
    ):
        return logits.to(like.dtype)
    return logits


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``; the parameters stay shared with ``model`` (compiled lazily, on
    the first forward of each mode), with Inductor's caches kept apart per CPU capability."""
    _inductor_cache_per_capability()
    result: nn.Module = torch.compile(model)  # type: ignore[assignment]
    return result


def _inductor_cache_per_capability() -> None:
    """Give Inductor a cache folder of its own for ATen's CPU capability.

    Works around a PyTorch bug (torch 2.14): Inductor generates its CPU kernels for the
    instruction set that ``ATEN_CPU_CAPABILITY`` names, but its caches are not keyed on it, so a
    kernel compiled under AVX-512 is loaded again under ``ATEN_CPU_CAPABILITY=avx2`` (the portable
    numerics mode, :mod:`lsakit.numerics`) and returns garbage (measured: logits off by 1e31) or
    corrupts the heap. One subfolder per capability (``…/aten-avx2``) inside the folder Inductor
    would use (``TORCHINDUCTOR_CACHE_DIR``, else its default) keeps them apart.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from lsakit.numerics import aten_capability

    folder = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir())
    own = f"aten-{aten_capability().lower()}"
    if folder.name != own:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / own)


def uncompiled(model: nn.Module) -> nn.Module:
    """The module inside a ``torch.compile`` wrapper (``model`` itself otherwise)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def channels_last_model(model: nn.Module) -> nn.Module:
    """``model`` with its 4-D (conv) weights in channels-last layout, in place; others unchanged."""
    result: nn.Module = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload, unused-ignore]
    return result


def to_channels_last(x: Tensor, enabled: bool) -> Tensor:
    """``x`` in channels-last layout when enabled and 4-D (N, C, H, W); otherwise unchanged."""
    if enabled and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
