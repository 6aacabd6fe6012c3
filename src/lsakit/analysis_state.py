"""The state file of a resumable analysis: everything needed to continue after the last batch.

:func:`lsakit.analysis.analyze` with ``state_path`` rewrites this file atomically after every
completed batch and, when it exists at the start, continues from it. The continued analysis gives
exactly the result of an uninterrupted one:

* the streaming statistics are saved as the exact float64 values of their counts, means and M2
  sums (JSON writes a float as its shortest round-trip form), so the merges that follow are the
  very operations an uninterrupted run would do;
* the random state is saved with them: torch's global generators (CPU and every initialised CUDA
  device), Python's and NumPy's, and the dedicated generators of every perturbation (a seeded
  noise's or attack's :class:`~lsakit.perturb.base.SeededGenerators`, or any ``torch.Generator``
  attribute). The batches after the last completed one therefore draw what they would have drawn.
  Restoring the state, rather than re-seeding every batch, leaves every existing analysis's
  numbers as they were; an analysis that never stops computes exactly as before.
* the settings are recorded (perturbations and their parameters, measure, reduction, layer
  selection, batch limit, the number of ranks, and a fingerprint of the model's parameters and
  buffers); resuming with anything different is refused rather than silently mixed. The data
  are the caller's to keep the same (the ``lsakit analyze`` workflow records its options).

Under torchrun each rank keeps its own file, ``NAME.rank<k>`` beside ``NAME`` for ranks k > 0:
each rank resumes its own share of the batches and the ranks are merged at the end as before.
"""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lsakit import __version__, distributed
from lsakit._io import atomic_write_text
from lsakit._torch import model_fingerprint
from lsakit.errors import ConfigError

STATE_FORMAT = 1


def rank_path(path: str | os.PathLike[str]) -> Path:
    """The state file of this rank: ``path`` itself for rank 0, ``path.rank<k>`` for rank k."""
    base = Path(path)
    k = distributed.rank()
    return base if k == 0 else base.with_name(f"{base.name}.rank{k}")


def settings(
    model: nn.Module,
    perturbations: dict[str, tuple[bool, dict[str, Any]]],
    *,
    measure: str,
    reduction: str,
    selection: list[str] | None,
    max_batches: int | None,
) -> dict[str, Any]:
    """What an analysis must share with the one it resumes (JSON values, lists not tuples)."""
    recorded = {
        "perturbations": {
            name: {"adversarial": adversarial, "params": params}
            for name, (adversarial, params) in perturbations.items()
        },
        "measure": measure,
        "reduction": reduction,
        "selection": selection,
        "max_batches": max_batches,
        "ranks": distributed.world_size(),
        "model": model_fingerprint(model),
    }
    return json.loads(json.dumps(recorded, default=str))  # type: ignore[no-any-return]


def load(path: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """The state in ``path``, checked against the settings of the analysis resuming it."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot read the analysis state {path} ({e}); delete it to start afresh"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ConfigError(
            f"{path} is no analysis state of this lsakit (format {STATE_FORMAT}); delete it to "
            f"start afresh"
        )
    recorded = state.get("settings", {})
    for key, value in expected.items():
        if recorded.get(key) != value:
            what = "the model's weights" if key == "model" else key
            raise ConfigError(
                f"the analysis state {path} was written with other {what} "
                f"({_short(recorded.get(key))}, now {_short(value)}); resume with the same "
                f"settings, or delete the file to start afresh"
            )
    return state


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (a reader sees the previous state or this one)."""
    atomic_write_text(path, json.dumps({"format": STATE_FORMAT, "lsakit_version": __version__,
                                        **state}))  # fmt: skip


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "…"


# -- random state ---------------------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _generators(obj: object, prefix: str = "", depth: int = 0) -> dict[str, torch.Generator]:
    """The torch generators a perturbation holds, by a stable key: its ``torch.Generator``
    attributes and those of its :class:`SeededGenerators` (by device), and those of the
    perturbations it wraps (models excluded)."""
    from lsakit.perturb.base import SeededGenerators

    found: dict[str, torch.Generator] = {}
    if depth > 3 or isinstance(obj, nn.Module):
        return found
    for attr, value in sorted(getattr(obj, "__dict__", {}).items()):
        key = f"{prefix}{attr}"
        if isinstance(value, torch.Generator):
            found[key] = value
        elif isinstance(value, SeededGenerators):
            for device, generator in value._generators.items():
                found[f"{key}@{device}"] = generator
        elif hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)):
            found.update(_generators(value, f"{key}.", depth + 1))
    return found


def random_state(perturbations: dict[str, Any]) -> dict[str, Any]:
    """Every random state the next batches draw from (see the module docstring)."""
    cuda = (
        [_b64(s) for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
        else []
    )
    np_state: Any = np.random.get_state()
    version, keys, gauss = random.getstate()
    return {
        "torch": _b64(torch.get_rng_state()),
        "cuda": cuda,
        "python": [*keys, version, gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "perturbations": {
            name: {key: _b64(g.get_state()) for key, g in _generators(fn).items()}
            for name, fn in perturbations.items()
        },
    }


def restore_random_state(state: dict[str, Any], perturbations: dict[str, Any]) -> None:
    """Set every random state to ``state`` (from :func:`random_state`)."""
    torch.set_rng_state(_tensor(state["torch"]))
    if state["cuda"]:
        torch.cuda.set_rng_state_all([_tensor(s) for s in state["cuda"]])
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    for name, saved in state["perturbations"].items():
        fn = perturbations[name]
        for key, text in saved.items():
            _generator_for(fn, key).set_state(_tensor(text))


def _generator_for(fn: object, key: str) -> torch.Generator:
    """The generator ``key`` names on ``fn``, created as the run that saved it had it."""
    from lsakit.perturb.base import SeededGenerators

    path, _, device = key.partition("@")
    obj: Any = fn
    for attr in path.split("."):
        obj = getattr(obj, attr)
    if isinstance(obj, SeededGenerators):
        generator = obj.on(torch.device(device))
        assert generator is not None  # saved from a seeded one
        return generator
    return obj  # type: ignore[no-any-return]
