"""A training run's directory: its files, the checks before a run takes it over, the resume state.

A run directory holds ``config.yaml``, ``model.safetensors`` (last epoch), ``best.safetensors``
(best robust validation accuracy), ``metrics.jsonl`` and ``state.pt`` (everything needed to
resume, the data directory included, in one atomically written file, loaded with
``weights_only=True``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsakit import distributed
from lsakit._io import atomic_write
from lsakit.checkpoint import save_checkpoint
from lsakit.config import CONFIG_NAME, TrainConfig, load_run_config
from lsakit.errors import ArgumentError, CheckpointError, ConfigError

CHECKPOINT_NAME = "model.safetensors"
BEST_NAME = "best.safetensors"
METRICS_NAME = "metrics.jsonl"
STATE_NAME = "state.pt"
STATE_FORMAT = 1

#: The files a training run writes into its directory; the resume state first, so an overwrite
#: that dies part-way leaves no resumable half of the old run.
RUN_FILES = (STATE_NAME, CONFIG_NAME, CHECKPOINT_NAME, BEST_NAME, METRICS_NAME)


def check_run_dir(out: str | Path, *, overwrite: bool) -> None:
    """Refuse ``out`` for a new run when it holds one and ``overwrite`` is not given (writes
    nothing: the CLI asks before it prints anything)."""
    out = Path(out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        raise ArgumentError(
            f"{out} already holds a training run ({', '.join(found)}); continue it with "
            f"{{resume}} {out}, start it over with {{overwrite}}, or choose another {{out}}"
        )


def claim_run_dir(out: Path, *, overwrite: bool) -> None:
    """Make ``out`` ready for a new run: refuse one that holds a run, or delete that run's files."""
    check_run_dir(out, overwrite=overwrite)
    if overwrite and distributed.is_main_process():
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRecord:
    """What a checkpoint records of the trained model: a model spec and its arguments, from
    which :func:`lsakit.checkpoint.load_checkpoint` rebuilds it, or (``own``) the class path of
    a module the caller built, whose weights load back into an instance of that class."""

    name: str
    kwargs: dict[str, Any]
    own: bool = False


def save_model(path: Path, net: nn.Module, model: ModelRecord, extra: dict[str, Any]) -> None:
    """Write ``net``'s weights and ``extra`` to the checkpoint ``path`` (atomically)."""
    # A module the caller built has no recipe to check the weights against: the file records
    # its class path (the "model" field) and holds its state dict, in the checkpoint format.
    save_checkpoint(
        path, net, model_name=model.name, model_kwargs=model.kwargs, extra=extra,
        check_recipe=not model.own,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The resume state
# --------------------------------------------------------------------------------------------
def save_state(out: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(out / STATE_NAME, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def load_state(out: Path, *, mmap: bool = False) -> dict[str, Any]:
    path = out / STATE_NAME
    if not path.exists():
        raise CheckpointError(
            f"cannot resume: {path} not found (no completed epoch in {out}); start the run anew"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # any unpickling/format error: the file is not a usable state
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"cannot resume from {path}: {first}; start the run anew") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not an lsakit training state; start the run anew")
    return state


def resume_state(out: Path, config: TrainConfig, *, own_model: bool = False) -> dict[str, Any]:
    """The resume state of the run in ``out``, once ``config`` is known to continue that run:
    the run's own config, ``epochs`` aside (a longer run extends it). ``own_model``: the run
    goes on with the caller's module, whose class ``config.model`` names."""
    state = load_state(out)
    recorded = load_run_config(out).model_dump()
    if own_model and recorded["model"] != config.model:
        raise ArgumentError(
            f"{{model}} is a {config.model}, but {out} holds a run of {recorded['model']}; "
            "pass a module of that class to resume it, or start a new run"
        )
    differ = [k for k, v in config.model_dump().items() if k != "epochs" and recorded.get(k) != v]
    if differ:
        raise ConfigError(
            f"the config differs from the one {out} was trained with ({', '.join(differ)}); "
            f"resume with the run's own config (load_run_config), or start a new run"
        )
    if config.epochs < int(state["epoch"]):
        raise ConfigError(
            f"{out} has already trained {state['epoch']} epochs; epochs {config.epochs} would "
            "shorten it"
        )
    return state


def check_fits(module: nn.Module, state: dict[str, Any], out: Path) -> None:
    """Refuse a caller's module whose weights do not fit the resume state's (same class, another
    architecture) with one line instead of load_state_dict's list."""
    from lsakit.checkpoint import describe_mismatch

    problem = describe_mismatch(
        expected={k: tuple(v.shape) for k, v in module.state_dict().items()},
        found={k: tuple(v.shape) for k, v in state["model"].items()},
    )
    if problem is not None:
        raise ArgumentError(
            f"{{model}} does not fit the run in {out} ({problem}); pass a module of the "
            "architecture it trained, or start a new run"
        )


@dataclass(frozen=True)
class ResumePoint:
    """Where a run directory stands: epochs done of its config's, and whether it is finished."""

    run_dir: Path
    epoch: int
    epochs: int
    #: early stopping ended the run before ``epochs``
    stopped_early: bool

    @property
    def complete(self) -> bool:
        return self.stopped_early or self.epoch >= self.epochs


def resume_point(run_dir: str | Path, epochs: int | None = None) -> ResumePoint:
    """How far the run in ``run_dir`` got (its resume state), against its own epochs or
    ``epochs`` (a resume that extends it); CheckpointError / ConfigError lines as for a resume."""
    out = Path(run_dir)
    state = load_state(out, mmap=True)
    config = load_run_config(out)
    stopped = config.early_stopping is not None and int(state["bad_epochs"]) >= (
        config.early_stopping
    )
    return ResumePoint(out, int(state["epoch"]), epochs or config.epochs, stopped)


def iter_metrics(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The records of ``metrics.jsonl`` in a run directory."""
    path = Path(run_dir) / METRICS_NAME
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)
